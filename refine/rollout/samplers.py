"""Samplers: integrate the flow from t = 1 (noise) to t = 0 (image), one step at a time.

Example:
    >>> import torch
    >>> from refine.rollout.samplers import SamplerConfig, make_sampler
    >>> sigmas = torch.tensor([1.0, 0.5, 0.0])              # (steps + 1,) from backbone.sigmas()
    >>> sampler = make_sampler(SamplerConfig(name="euler", steps=2), sigmas)
    >>> x = torch.ones(1, 4, 2)                             # (B, N, C) packed latents at t = 1
    >>> for i in range(sampler.steps):
    ...     x = sampler.step(i, x, velocity=torch.ones_like(x)).sample   # x + (t_next - t) * v
    >>> x[0, 0].tolist()
    [0.0, 0.0]

Convention (stated once for the project, see `refine.backbones.base`): ``x_t = (1 - t) x_0 + t noise``,
velocity ``v = noise - x_0``; ``x0_hat = x - t v`` and ``noise_hat = x + (1 - t) v`` are the
model's estimates of both ends.

Samplers (`SamplerConfig.name`):
* ``euler``: the ODE step ``x + (t_next - t) v``, what diffusers' `FlowMatchEulerDiscreteScheduler` does.
* ``dpm``: DPM-Solver++(2M) through diffusers' `DPMSolverMultistepScheduler` (flow prediction).
* ``sde``: the Flow-GRPO Euler–Maruyama step with a Gaussian transition whose log-probability is
  returned (float32), optionally coefficient-preserving, optionally only inside a window of steps
  (the others are ODE steps).

Each sampler object drives ONE trajectory (the DPM solver keeps a history of model outputs);
make a new one per trajectory with `make_sampler`. Noise for stochastic steps is passed in by the
caller, so the caller decides how it is seeded (`refine.rollout.group` draws it per sample).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import Field, model_validator

from refine.config import RefineConfig

SamplerName = Literal["euler", "dpm", "sde"]


class SamplerConfig(RefineConfig):
    """How to integrate the flow: which sampler, how many steps, how much noise, which guidance.

    Example:
        >>> SamplerConfig(name="sde", steps=10, noise_level=0.7, sde_window=(0, 4)).stochastic_steps()
        [True, True, True, True, False, False, False, False, False, False]
        >>> from refine.config import load_config
        >>> load_config(SamplerConfig, overrides=["name=euler", "sde_window=[0, 2]"])
        Traceback (most recent call last):
        ...
        refine.errors.ConfigError: sde_window=(0, 2) only applies to the 'sde' sampler; set name='sde' or drop sde_window
    """

    name: SamplerName = Field("euler", description="euler (ODE), dpm (DPM-Solver++ 2M, ODE) or sde (Flow-GRPO SDE with log-probs).")
    steps: int = Field(28, ge=1, le=1000, description="Number of integration steps from t=1 to t=0.")
    noise_level: float = Field(
        0.7,
        ge=0.0,
        description="SDE noise scale a: sigma_t = a*sqrt(t/(1-t)) (Flow-GRPO), or the angle fraction a*pi/2 "
        "(coefficient-preserving). 0 makes the SDE sampler the Euler ODE sampler. Ignored by euler/dpm.",
    )
    sde_window: tuple[int, int] | None = Field(
        None,
        description="[start, end) step indices that are stochastic; the others are Euler ODE steps. "
        "None: every step is stochastic. Only for name='sde'.",
    )
    coefficient_preserving: bool = Field(
        False,
        description="SDE variant that keeps the signal/noise coefficients of x_t exact (noise injected by "
        "rotating the predicted noise); Flow-GRPO's Euler-Maruyama step when False.",
    )
    log_prob_reduce: Literal["mean", "sum"] = Field(
        "mean",
        description="How per-element Gaussian log-densities become one number per sample: 'mean' "
        "(Flow-GRPO's convention, keeps ratios O(1)) or 'sum' (the true log-density of the latent).",
    )
    guidance: float | None = Field(
        None, description="Guidance scale handed to the backbone; None uses the backbone's default."
    )

    @model_validator(mode="after")
    def _check(self) -> "SamplerConfig":
        if self.sde_window is not None:
            start, end = self.sde_window
            if self.name != "sde":
                raise ValueError(
                    f"sde_window={self.sde_window} only applies to the 'sde' sampler; set name='sde' or drop sde_window"
                )
            if not 0 <= start < end <= self.steps:
                raise ValueError(
                    f"sde_window={self.sde_window} must satisfy 0 <= start < end <= steps={self.steps}; "
                    f"e.g. sde_window=[0, {min(2, self.steps)}]"
                )
        return self

    def stochastic_steps(self) -> list[bool]:
        """Which of the `steps` steps inject noise (and carry a log-probability)."""
        if self.name != "sde" or self.noise_level == 0:
            return [False] * self.steps
        start, end = self.sde_window if self.sde_window is not None else (0, self.steps)
        return [start <= i < end for i in range(self.steps)]


@dataclass
class SamplerStep:
    """The outcome of one step: the next sample and, for stochastic steps, its transition density.

    Attributes:
        sample: (B, N, C) float32 latents at t_next.
        log_prob: (B,) float32 log p(sample | x) under N(mean, std^2), None for deterministic steps.
        mean: (B, N, C) float32 transition mean (stochastic steps only).
        std: scalar float32 tensor, the transition standard deviation (stochastic steps only).
    """

    sample: torch.Tensor
    log_prob: torch.Tensor | None = None
    mean: torch.Tensor | None = None
    std: torch.Tensor | None = None


# --- the maths of one step (pure functions: RL re-evaluates log-probs with them) --------------


def euler_step(x: torch.Tensor, velocity: torch.Tensor, t: float | torch.Tensor, t_next: float | torch.Tensor) -> torch.Tensor:
    """ODE step ``x + (t_next - t) v`` in float32 (as diffusers' Euler scheduler upcasts).

    Example:
        >>> euler_step(torch.ones(1, 2, 1), torch.ones(1, 2, 1), 1.0, 0.25).flatten().tolist()
        [0.25, 0.25]
    """
    return x.float() + (_as_float(t_next) - _as_float(t)) * velocity.float()


def sde_mean_std(
    x: torch.Tensor,
    velocity: torch.Tensor,
    t: float | torch.Tensor,
    t_next: float | torch.Tensor,
    noise_level: float,
    coefficient_preserving: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (B, N, C) and std (scalar) of the Gaussian transition x_t -> x_t_next, in float32.

    Flow-GRPO (Euler–Maruyama of the reverse SDE with diffusion ``sigma_t = a sqrt(t / (1 - t))``,
    which keeps the marginals of the ODE)::

        mean = x + dt * (v + sigma_t^2 / (2 t) * (x + (1 - t) v)),   std = sigma_t * sqrt(-dt),   dt = t_next - t

    At t = 1, ``1 - t`` is replaced by ``1 - t_next`` (the step's own gap) to keep sigma_t finite.

    Coefficient-preserving: with ``x0_hat = x - t v`` and ``noise_hat = x + (1 - t) v``::

        mean = (1 - t_next) x0_hat + t_next cos(a pi / 2) noise_hat,   std = t_next sin(a pi / 2)

    so the sample's noise coefficient stays exactly t_next. With a = 0 both are the Euler step.

    Example:
        >>> x, v = torch.zeros(1, 2, 1), torch.ones(1, 2, 1)
        >>> mean, std = sde_mean_std(x, v, 0.5, 0.25, noise_level=0.0)
        >>> mean.flatten().tolist(), float(std)
        ([-0.25, -0.25], 0.0)
    """
    x, velocity = x.float(), velocity.float()
    t, t_next = _as_float(t), _as_float(t_next)
    if coefficient_preserving:
        angle = noise_level * math.pi / 2
        x0_hat = x - t * velocity
        noise_hat = x + (1.0 - t) * velocity
        mean = (1.0 - t_next) * x0_hat + t_next * math.cos(angle) * noise_hat
        std = t_next * math.sin(angle)
    else:
        dt = t_next - t
        one_minus_t = 1.0 - t if t < 1.0 else 1.0 - t_next
        sigma_t = noise_level * math.sqrt(t / one_minus_t)
        mean = x + dt * (velocity + sigma_t**2 / (2.0 * t) * (x + (1.0 - t) * velocity))
        std = sigma_t * math.sqrt(-dt)
    return mean, torch.tensor(std, dtype=torch.float32, device=x.device)


def gaussian_log_prob(sample: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, reduce: str = "mean") -> torch.Tensor:
    """log N(sample; mean, std^2) per sample (B,), reduced over every non-batch dim, in float32.

    Example:
        >>> lp = gaussian_log_prob(torch.zeros(2, 3), torch.zeros(2, 3), torch.tensor(1.0))
        >>> round(float(lp[0]), 4)                       # -log(sqrt(2 pi))
        -0.9189
    """
    sample, mean, std = sample.float(), mean.float(), torch.as_tensor(std, dtype=torch.float32, device=sample.device)
    per_element = -((sample - mean) ** 2) / (2 * std**2) - torch.log(std) - 0.5 * math.log(2 * math.pi)
    dims = tuple(range(1, per_element.dim()))
    return per_element.mean(dim=dims) if reduce == "mean" else per_element.sum(dim=dims)


def sde_step(
    x: torch.Tensor,
    velocity: torch.Tensor,
    t: float | torch.Tensor,
    t_next: float | torch.Tensor,
    noise: torch.Tensor,
    noise_level: float,
    coefficient_preserving: bool = False,
    reduce: str = "mean",
) -> SamplerStep:
    """One stochastic step ``mean + std * noise`` with its log-probability (see `sde_mean_std`).

    A step whose std is 0 (noise level 0, or the last coefficient-preserving step into t = 0) is
    deterministic: it returns no log-probability.

    Example:
        >>> out = sde_step(torch.zeros(1, 2, 1), torch.ones(1, 2, 1), 0.5, 0.25, torch.zeros(1, 2, 1), noise_level=0.7)
        >>> out.log_prob.shape
        torch.Size([1])
    """
    mean, std = sde_mean_std(x, velocity, t, t_next, noise_level, coefficient_preserving)
    if float(std) == 0.0:
        return SamplerStep(sample=mean)
    sample = mean + std * noise.float()
    return SamplerStep(sample=sample, log_prob=gaussian_log_prob(sample, mean, std, reduce), mean=mean, std=std)


def sde_step_log_prob(
    x: torch.Tensor,
    velocity: torch.Tensor,
    t: float | torch.Tensor,
    t_next: float | torch.Tensor,
    x_next: torch.Tensor,
    noise_level: float,
    coefficient_preserving: bool = False,
    reduce: str = "mean",
) -> torch.Tensor:
    """log p(x_next | x) (B,) of a recorded step under the policy whose velocity is `velocity`.

    This is what policy-gradient RL differentiates: recompute `velocity` with the current model
    (gradients flow through it) and compare with the log-prob stored at rollout time.

    Example:
        >>> x, v = torch.zeros(1, 2, 1), torch.ones(1, 2, 1)
        >>> out = sde_step(x, v, 0.5, 0.25, torch.randn(1, 2, 1), noise_level=0.7)
        >>> torch.allclose(sde_step_log_prob(x, v, 0.5, 0.25, out.sample, noise_level=0.7), out.log_prob)
        True
    """
    mean, std = sde_mean_std(x, velocity, t, t_next, noise_level, coefficient_preserving)
    return gaussian_log_prob(x_next, mean, std, reduce)


def _as_float(value: float | torch.Tensor) -> float:
    return float(value.item()) if isinstance(value, torch.Tensor) else float(value)


# --- samplers: one object per trajectory --------------------------------------------------------


class FlowSampler:
    """Base sampler over a fixed schedule `sigmas` (steps + 1,) decreasing from ~1 to 0.

    Subclasses implement `step(index, x, velocity, noise=None) -> SamplerStep`; `is_stochastic(index)`
    tells the caller whether to pass `noise` (B, N, C) for that step.
    """

    def __init__(self, config: SamplerConfig, sigmas: torch.Tensor) -> None:
        sigmas = torch.as_tensor(sigmas, dtype=torch.float32).flatten().cpu()
        if sigmas.numel() < 2 or not bool((sigmas[1:] < sigmas[:-1]).all()):
            raise ValueError(f"sigmas must decrease strictly from ~1 to 0, got {sigmas.tolist()}")
        self.config = config
        self.sigmas = sigmas
        self.steps = sigmas.numel() - 1
        self._stochastic = [False] * self.steps

    def is_stochastic(self, index: int) -> bool:
        return self._stochastic[index]

    def step(self, index: int, x: torch.Tensor, velocity: torch.Tensor, noise: torch.Tensor | None = None) -> SamplerStep:
        raise NotImplementedError

    def t(self, index: int) -> tuple[float, float]:
        """(t, t_next) of step `index`."""
        return float(self.sigmas[index]), float(self.sigmas[index + 1])


class EulerSampler(FlowSampler):
    """Euler ODE. Hand-written (one line, `euler_step`) rather than driving diffusers'
    `FlowMatchEulerDiscreteScheduler`: that scheduler is stateful (step index lookup by timestep) and
    would need the same schedule we already hold; the update it performs is exactly this line, and
    the SDE sampler shares it for its ODE steps. The schedule itself comes from diffusers' scheduler
    (see each backbone's `sigmas`)."""

    def step(self, index: int, x: torch.Tensor, velocity: torch.Tensor, noise: torch.Tensor | None = None) -> SamplerStep:
        t, t_next = self.t(index)
        return SamplerStep(sample=euler_step(x, velocity, t, t_next))


class DPMSolverSampler(FlowSampler):
    """DPM-Solver++(2M) with flow prediction, stepped by diffusers' `DPMSolverMultistepScheduler`.

    What is ours: the schedule. diffusers' flow-sigma schedule (linspace + static/`mu` shift, first
    sigma 0.999) differs from the backbones' Euler schedule, and `set_timesteps` takes no custom
    sigmas, so we install the backbone's `sigmas` (and timesteps = 1000 * sigmas) on the scheduler
    after `set_timesteps`; the update rule stays diffusers'. With a schedule starting at exactly
    t = 1 (lambda = -inf) the second step's second-order correction vanishes (it is first order);
    the last step is first order (final sigma 0), as in diffusers.
    """

    def __init__(self, config: SamplerConfig, sigmas: torch.Tensor) -> None:
        from diffusers import DPMSolverMultistepScheduler

        super().__init__(config, sigmas)
        scheduler = DPMSolverMultistepScheduler(
            num_train_timesteps=1000,
            solver_order=2,
            algorithm_type="dpmsolver++",
            prediction_type="flow_prediction",
            use_flow_sigmas=True,
            flow_shift=1.0,
            final_sigmas_type="zero",
            lower_order_final=True,
        )
        scheduler.set_timesteps(self.steps)  # resets the solver history
        scheduler.sigmas = self.sigmas.clone()
        scheduler.timesteps = self.sigmas[:-1] * 1000.0
        scheduler.set_begin_index(0)
        self.scheduler = scheduler

    def step(self, index: int, x: torch.Tensor, velocity: torch.Tensor, noise: torch.Tensor | None = None) -> SamplerStep:
        if self.scheduler.step_index not in (None, index):
            raise RuntimeError(f"DPM-Solver steps must run in order: expected step {self.scheduler.step_index}, got {index}")
        timestep = self.scheduler.timesteps[index]
        sample = self.scheduler.step(velocity.float(), timestep, x.float(), return_dict=False)[0]
        return SamplerStep(sample=sample.float())


class SDESampler(FlowSampler):
    """Flow-GRPO SDE inside `config.sde_window` (all steps by default), Euler ODE elsewhere."""

    def __init__(self, config: SamplerConfig, sigmas: torch.Tensor) -> None:
        super().__init__(config, sigmas)
        start, end = config.sde_window if config.sde_window is not None else (0, self.steps)
        if end > self.steps:
            raise ValueError(f"sde_window={config.sde_window} does not fit a schedule of {self.steps} steps")
        self._stochastic = [config.noise_level > 0 and start <= i < end for i in range(self.steps)]

    def step(self, index: int, x: torch.Tensor, velocity: torch.Tensor, noise: torch.Tensor | None = None) -> SamplerStep:
        t, t_next = self.t(index)
        if not self._stochastic[index]:
            return SamplerStep(sample=euler_step(x, velocity, t, t_next))
        if noise is None:
            raise ValueError(f"step {index} is stochastic: pass noise of shape {tuple(x.shape)}")
        return sde_step(
            x, velocity, t, t_next, noise, self.config.noise_level, self.config.coefficient_preserving, self.config.log_prob_reduce
        )


_SAMPLERS: dict[str, type[FlowSampler]] = {"euler": EulerSampler, "dpm": DPMSolverSampler, "sde": SDESampler}


def make_sampler(config: SamplerConfig | str, sigmas: torch.Tensor) -> FlowSampler:
    """A fresh sampler for one trajectory over `sigmas` (steps + 1,).

    Example:
        >>> make_sampler("dpm", torch.linspace(1, 0, 5)).steps
        4
    """
    if isinstance(config, str):
        config = SamplerConfig(name=config)
    return _SAMPLERS[config.name](config, sigmas)
