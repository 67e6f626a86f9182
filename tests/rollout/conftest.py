"""A closed-form FlowBackbone for rollout tests: Gaussian data, so the exact velocity is known.

The "image" is an 8x8 RGB picture packed into (N=16, C=12) latents. Data given a condition is
x_0 ~ N(m, s^2 I) with m = source latents + a shift read from the instruction (masked mean of word
vectors, so padding never changes it). For x_t = (1 - t) x_0 + t noise the exact velocity is

    v(x, t) = (t - (1 - t) s^2) / ((1 - t)^2 s^2 + t^2) * (x - (1 - t) m) - m,

non-linear in t, so Euler and DPM-Solver differ, and the flow maps noise z to exactly m + s z.
"""

from __future__ import annotations

import hashlib

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from PIL import Image

from refine.backbones.base import Condition
from refine.images import to_tensor


def _word_vector(word: str) -> torch.Tensor:
    digest = hashlib.sha256(word.encode()).digest()
    return torch.tensor([b / 255.0 - 0.5 for b in digest[:4]])


class GaussianToyBackbone:
    name = "toy"

    def __init__(self, data_std: float = 0.5, shift: float = 3.0, default_guidance: float | None = None) -> None:
        self.transformer = torch.nn.Module()
        self.transformer.log_std = torch.nn.Parameter(torch.tensor(float(data_std)).log())
        self.shift = shift
        self.default_guidance = default_guidance
        self.calls: list[int] = []  # batch size of every velocity pass (to check memory budgets)

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    def prepare_images(self, images):
        return [image.convert("RGB").resize((8, 8), Image.BICUBIC) for image in images]

    def encode_images(self, images) -> torch.Tensor:
        pixels = images if isinstance(images, torch.Tensor) else torch.stack([to_tensor(i) for i in self.prepare_images(images)])
        x = pixels * 2 - 1  # (B, 3, 8, 8)
        b = x.shape[0]
        return x.view(b, 3, 4, 2, 4, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, 16, 12)

    def decode(self, latents: torch.Tensor, cond: Condition) -> torch.Tensor:
        b = latents.shape[0]
        x = latents.view(b, 4, 4, 3, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, 3, 8, 8)
        return ((x + 1) / 2).clamp(0, 1)

    def encode_condition(self, images, instructions, *, guidance=None) -> Condition:
        if any(not text.strip() for text in instructions):
            raise ValueError("empty instruction")
        texts = [torch.stack([_word_vector(w) for w in text.split()]) for text in instructions]
        length = max(t.shape[0] for t in texts)
        text = torch.zeros(len(texts), length, 4)
        mask = torch.zeros(len(texts), length)
        for i, t in enumerate(texts):
            text[i, : len(t)], mask[i, : len(t)] = t, 1
        source = self.encode_images(images)
        guidance = self.default_guidance if guidance is None else guidance
        negative = None
        if guidance is not None and guidance > 1:
            negative = Condition(torch.zeros(len(texts), 1, 4), torch.ones(len(texts), 1), source, (16, 12), (8, 8))
        return Condition(text, mask, source, (16, 12), (8, 8), negative=negative)

    def prepare_noise(self, cond, generator) -> torch.Tensor:
        generators = generator if isinstance(generator, (list, tuple)) else [generator] * cond.batch_size
        return torch.stack([torch.randn(cond.latent_shape, generator=g) for g in generators])

    def sigmas(self, steps: int, cond) -> torch.Tensor:
        scheduler = FlowMatchEulerDiscreteScheduler(shift=self.shift)
        scheduler.set_timesteps(sigmas=torch.linspace(1.0, 1.0 / steps, steps).tolist())
        return scheduler.sigmas.float()

    def data_mean(self, cond: Condition) -> torch.Tensor:
        pooled = (cond.text * cond.text_mask[..., None]).sum(1) / cond.text_mask.sum(1, keepdim=True)  # (B, 4)
        return cond.image_latents + pooled.sum(-1)[:, None, None]  # (B, N, C)

    def velocity(self, x_t, t, cond) -> torch.Tensor:
        self.calls.append(x_t.shape[0])
        s2 = self.transformer.log_std.exp() ** 2
        t = t.float().view(-1, 1, 1)
        m = self.data_mean(cond)
        return (t - (1 - t) * s2) / ((1 - t) ** 2 * s2 + t**2) * (x_t - (1 - t) * m) - m

    def predict_velocity(self, x_t, t, cond, guidance=None) -> torch.Tensor:
        guidance = self.default_guidance if guidance is None else guidance
        if cond.negative is None or guidance is None or guidance <= 1:
            return self.velocity(x_t, t, cond)
        both = self.velocity(torch.cat([x_t, x_t]), torch.cat([t, t]), _stack_with_negative(cond))
        v_cond, v_neg = both.chunk(2)
        return v_neg + guidance * (v_cond - v_neg)


def _stack_with_negative(cond: Condition) -> Condition:
    from refine.backbones.base import concat_conditions

    positive = Condition(cond.text, cond.text_mask, cond.image_latents, cond.latent_shape, cond.image_size)
    return concat_conditions([positive, cond.negative])


@pytest.fixture(autouse=True, scope="package")
def one_thread():
    """Tiny models run fastest on one thread (threads only add synchronisation on a busy CPU)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def make_toy():
    """make_toy(data_std=0.5, shift=3.0, default_guidance=None) -> GaussianToyBackbone."""
    return GaussianToyBackbone


@pytest.fixture
def toy():
    return GaussianToyBackbone()


@pytest.fixture
def toy_cfg():
    return GaussianToyBackbone(default_guidance=3.0)


def _random_image(seed: int, size: int = 8) -> Image.Image:
    g = torch.Generator().manual_seed(seed)
    return Image.fromarray((torch.rand(size, size, 3, generator=g) * 255).byte().numpy(), "RGB")


@pytest.fixture
def random_image():
    """random_image(seed, size=8) -> a reproducible RGB noise picture."""
    return _random_image
