"""The critic's trainable pieces: probe heads (eq. 2), projection-head pairs (eq. 4) and the critic token.

Example:
    >>> import torch
    >>> from refine.inline_critic.adapters.base import CriticDims
    >>> from refine.inline_critic.modules import InlineCriticModules
    >>> dims = CriticDims(text_dim=16, hidden_dim=16, time_dim=16, velocity_dim=16, num_layers=4)
    >>> modules = InlineCriticModules(dims, probe_layers=[1, 2])
    >>> hidden, temb = torch.randn(2, 9, 16), torch.randn(2, 16)          # (B, N, D), (B, D_t)
    >>> modules.probes["1"](hidden, temb).shape                           # per-position velocity
    torch.Size([2, 9, 16])
    >>> modules.projections["1"](torch.randn(2, 16), hidden).shape        # per-position error estimate
    torch.Size([2, 9])
    >>> sorted(modules.inference_state_dict())                            # all that inference keeps
    ['critic_token']

Only `critic_token` survives into inference weights; probes and projections are training-only
(paper Sec. 3.2: "dropped at inference").
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from refine._compat import ensure_torchvision_importable
from refine.inline_critic.adapters.base import CriticDims

# diffusers imports transformers/peft, which import torchvision; on CPU machines with a CUDA
# torchvision wheel that import fails unless its C++ op registrations are skipped first.
ensure_torchvision_importable()

from diffusers.models.normalization import AdaLayerNormContinuous  # noqa: E402


def mlp3(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """The paper's "3-layer feed-forward head": Linear-GELU-Linear-GELU-Linear."""
    return nn.Sequential(
        nn.Linear(in_dim, hidden_dim),
        nn.GELU(approximate="tanh"),
        nn.Linear(hidden_dim, hidden_dim),
        nn.GELU(approximate="tanh"),
        nn.Linear(hidden_dim, out_dim),
    )


class ProbeHead(nn.Module):
    """Eq. 2: v_hat_l = F_l(adaLN(sg(h_l), temb)) — a mid-layer velocity read-out.

    The adaLN is diffusers' `AdaLayerNormContinuous` (the module type the MM-DiT itself uses for its
    final read-out), conditioned on the backbone's time embedding. Inputs are detached here, so no
    probe gradient ever reaches the backbone or the critic token.
    """

    def __init__(self, hidden_dim: int, time_dim: int, velocity_dim: int, mlp_dim: int) -> None:
        super().__init__()
        self.norm = AdaLayerNormContinuous(hidden_dim, time_dim, elementwise_affine=False, eps=1e-6)
        self.head = mlp3(hidden_dim, mlp_dim, velocity_dim)

    def forward(self, hidden: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        # hidden (B, N, D) noise tokens of one block, temb (B, D_t) -> (B, N, C) velocity
        return self.head(self.norm(hidden.detach(), temb.detach()))


class ProjectionPair(nn.Module):
    """Eq. 4: e_hat_{l,i} = <f_l(c_l), g_l(h_{l,i})> — the critic's per-position error estimate.

    `f` reads the critic token's hidden state (gradients flow into the token through it);
    `g` reads the noise tokens, detached so the critic loss teaches the critic to *read* the
    generation state rather than to move it (moving it is the generation loss's job in stage 3).
    """

    def __init__(self, hidden_dim: int, proj_dim: int, mlp_dim: int) -> None:
        super().__init__()
        self.f = mlp3(hidden_dim, mlp_dim, proj_dim)
        self.g = mlp3(hidden_dim, mlp_dim, proj_dim)
        self.scale = proj_dim**-0.5  # keeps the inner product O(1) at init whatever proj_dim is

    def forward(self, critic_hidden: torch.Tensor, noise_hidden: torch.Tensor) -> torch.Tensor:
        # critic_hidden (B, D), noise_hidden (B, N, D) -> (B, N)
        query = self.f(critic_hidden)  # (B, P)
        keys = self.g(noise_hidden.detach())  # (B, N, P)
        return torch.einsum("bp,bnp->bn", query, keys) * self.scale


def uniform_probe_layers(num_layers: int, num_probes: int) -> list[int]:
    """`num_probes` block indices spread uniformly over the network, never the last block.

    Example: uniform_probe_layers(60, 4) == [11, 23, 35, 47]; uniform_probe_layers(2, 1) == [0].
    The last block is excluded: its output *is* the final prediction and a critic read there has
    no later layer to steer.
    """
    if not 1 <= num_probes < max(num_layers, 2):
        num_probes = max(1, min(num_probes, num_layers - 1))
    return sorted({round(num_layers * (k + 1) / (num_probes + 1)) - 1 for k in range(num_probes)})


class InlineCriticModules(nn.Module):
    """All trainable critic parts for one backbone: token, probes and projections per probed layer.

    Parameters live in three groups so each stage can pick its trainable set:
    `critic_token` (stage 2, 3), `projections` (stage 2, 3), `probes` (stage 1, 3).
    """

    def __init__(
        self,
        dims: CriticDims,
        probe_layers: Sequence[int],
        *,
        probe_mlp_dim: int | None = None,
        proj_dim: int = 64,
        proj_mlp_dim: int | None = None,
        token_init_std: float = 0.02,
    ) -> None:
        super().__init__()
        self.dims = dims
        self.probe_layers = [int(layer) for layer in probe_layers]
        probe_mlp_dim = probe_mlp_dim or dims.hidden_dim
        proj_mlp_dim = proj_mlp_dim or dims.hidden_dim
        self.critic_token = nn.Parameter(torch.randn(dims.text_dim) * token_init_std)
        self.probes = nn.ModuleDict(
            {str(layer): ProbeHead(dims.hidden_dim, dims.time_dim, dims.velocity_dim, probe_mlp_dim) for layer in self.probe_layers}
        )
        self.projections = nn.ModuleDict(
            {str(layer): ProjectionPair(dims.hidden_dim, proj_dim, proj_mlp_dim) for layer in self.probe_layers}
        )

    def group(self, name: str) -> list[nn.Parameter]:
        """Parameters of one group: 'token', 'probes' or 'projections'."""
        if name == "token":
            return [self.critic_token]
        return list(getattr(self, name).parameters())

    def inference_state_dict(self) -> dict[str, torch.Tensor]:
        """What an inference editor needs: the critic token only."""
        return {"critic_token": self.critic_token.detach().clone().contiguous()}
