"""Diffusion on keypoint heatmaps: noise schedule, forward noising and the DDIM sampler.

Notation (Ho et al., NeurIPS 2020; Song et al., ICLR 2021 "DDIM"):
    α_t = 1 − β_t,   ᾱ_t = ∏_{s≤t} α_s   (the *cumulative* product; noising uses √ᾱ_t, not √α_t)
    q(x_t | x_0) = N(√ᾱ_t x_0, (1 − ᾱ_t) I)

Signal range. A Gaussian-peak heatmap h ∈ [0, 1] is mapped to ``x0 = (2h − 1) · signal_scale``
before noising, as DiffusionDet (Chen et al., ICCV 2023) does for boxes: background sits at
−signal_scale and peaks at +signal_scale, so the signal is centred and the noise at ᾱ_t ≈ 0 swamps
it. We use ``signal_scale = 1.0`` by default (the data's natural range; a larger scale makes the
noisy heatmap easier to read at a given t, a smaller one harder). The network predicts x0 directly
(as DiffPose does), the sampler derives ε from it. The training loss is in
``posecli/train/loss.py``.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

DEFAULT_SIGNAL_SCALE = 1.0


def heatmap_to_signal(heatmap: torch.Tensor, signal_scale: float = DEFAULT_SIGNAL_SCALE) -> torch.Tensor:
    """[0, 1] heatmaps → diffusion signal ``(2h − 1) · signal_scale`` (any shape)."""
    return (heatmap * 2.0 - 1.0) * signal_scale


def signal_to_heatmap(signal: torch.Tensor, signal_scale: float = DEFAULT_SIGNAL_SCALE) -> torch.Tensor:
    """Inverse of :func:`heatmap_to_signal` (no clamping; callers decide)."""
    return (signal / signal_scale + 1.0) * 0.5


class NoiseSchedule:
    """Variance schedule and the closed-form forward process.

    Args:
        timesteps: number of diffusion steps T; valid t are 0 … T−1.
        kind: ``"cosine"`` (Nichol & Dhariwal, ICML 2021, s = 0.008, β clipped at 0.999) or
            ``"linear"`` (Ho et al.: β from 1e-4 to 0.02).

    Attributes:
        betas, alphas_cumprod: float64 [T] tensors (ᾱ_t is strictly decreasing, ᾱ_{T−1} ≈ 0).
    """

    def __init__(self, timesteps: int = 1000, kind: str = "cosine") -> None:
        if timesteps < 1:
            raise ValueError("timesteps must be positive")
        self.timesteps = timesteps
        self.kind = kind
        if kind == "cosine":
            s = 0.008
            steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
            f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
            betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
        elif kind == "linear":
            betas = torch.linspace(1e-4, 0.02, timesteps, dtype=torch.float64)
        else:
            raise ValueError(f"unknown schedule kind {kind!r} (use 'cosine' or 'linear')")
        self.betas = betas
        self.alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)

    def alpha_bar(self, t: torch.Tensor) -> torch.Tensor:
        """ᾱ_t for integer steps ``t`` (any shape); t = −1 means "no noise" (ᾱ = 1)."""
        t = torch.as_tensor(t, dtype=torch.long)
        table = torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod])
        return table[(t + 1).cpu()].to(t.device)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Forward noising x_t = √ᾱ_t · x0 + √(1 − ᾱ_t) · ε  (Ho et al., eq. 4).

        Args:
            x0: [B, ...] clean signal.
            t: [B] long timesteps.
            noise: ε, same shape as ``x0``.

        Returns:
            x_t, same shape and dtype as ``x0``.
        """
        # Coefficients in float64 first: 1 − ᾱ_t for small t cancels badly in float32.
        ab = self.alpha_bar(t.to(x0.device)).view(-1, *([1] * (x0.dim() - 1)))
        return ab.sqrt().to(x0.dtype) * x0 + (1.0 - ab).sqrt().to(x0.dtype) * noise


class DDIMSampler:
    """Deterministic DDIM sampling (Song et al., ICLR 2021, η = 0) for an x0-predicting network.

    Args:
        schedule: the training :class:`NoiseSchedule`.
        steps: number of network evaluations (1–4 is typical here).
        seed: seeds the sampler's own ``torch.Generator``, which draws the initial noise.
        signal_scale: the signal range (intermediate x0 predictions are clipped to it).

    Reproducibility: every :meth:`sample` call re-seeds the generator, and the initial noise is
    drawn for a single item and broadcast over the batch, so a sample's result depends only on the
    seed and its own inputs, not on the batch it was in or on earlier calls.
    """

    def __init__(self, schedule: NoiseSchedule, steps: int = 1, seed: int = 0,
                 signal_scale: float = DEFAULT_SIGNAL_SCALE) -> None:
        self.schedule = schedule
        self.seed = seed
        self.signal_scale = signal_scale
        self.generator = torch.Generator(device="cpu")
        self.set_steps(steps)

    def set_steps(self, n: int) -> None:
        """Use ``n`` denoising steps: times T−1 = τ_1 > … > τ_n, each followed by the next (−1 last)."""
        if not 1 <= n <= self.schedule.timesteps:
            raise ValueError(f"steps must be in 1..{self.schedule.timesteps}, got {n}")
        self.steps = n
        # Evenly spaced in [−1, T−1] as DiffusionDet does; −1 stands for the clean signal.
        times = torch.linspace(-1, self.schedule.timesteps - 1, n + 1).round().long().flip(0)
        self.timesteps = times.tolist()

    def _noise(self, shape: tuple[int, ...], device: torch.device | str, dtype: torch.dtype) -> torch.Tensor:
        one = torch.randn((1, *shape[1:]), generator=self.generator, dtype=torch.float32)
        return one.to(device=device, dtype=dtype).expand(shape)

    def next_timestep(self, t: int) -> int:
        """The step after ``t`` in the current schedule (−1 after the last)."""
        i = self.timesteps.index(t)
        return self.timesteps[i + 1]

    def step(self, x0_pred: torch.Tensor, t: int, x_t: torch.Tensor, t_prev: int | None = None) -> torch.Tensor:
        """One DDIM update x_t → x_{t_prev} (Song et al., eq. 12 with σ = 0, i.e. η = 0 in eq. 16).

            ε̂       = (x_t − √ᾱ_t · x̂0) / √(1 − ᾱ_t)
            x_prev  = √ᾱ_prev · x̂0 + √(1 − ᾱ_prev) · ε̂

        x̂0 is clipped to the signal range first.

        Args:
            x0_pred: the network's x̂0, [B, ...].
            t: current timestep (int).
            x_t: current noisy sample, same shape.
            t_prev: target timestep; defaults to the next one in the schedule set by
                :meth:`set_steps`. −1 means the end: x̂0 itself is returned.
        """
        if not isinstance(x_t, torch.Tensor):
            raise TypeError("step(x0_pred, t, x_t, t_prev=None): x_t must be a tensor")
        if t_prev is None:
            t_prev = self.next_timestep(t)
        if t_prev < 0:
            return x0_pred
        x0 = x0_pred.clamp(-self.signal_scale, self.signal_scale)
        ab_t = float(self.schedule.alpha_bar(torch.tensor(t)))
        ab_prev = float(self.schedule.alpha_bar(torch.tensor(t_prev)))
        eps = (x_t - math.sqrt(ab_t) * x0) / math.sqrt(1.0 - ab_t)
        return math.sqrt(ab_prev) * x0 + math.sqrt(1.0 - ab_prev) * eps

    @torch.no_grad()
    def sample(self, denoise_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
               shape: tuple[int, ...], device: torch.device | str = "cpu",
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Draw x0 by DDIM from x_{T−1} ~ N(0, I).

        Args:
            denoise_fn: ``(x_t [B, ...], t [B] long) -> x̂0 [B, ...]``.
            shape: the sample shape, e.g. ``(B, K, H, W)``.
            device, dtype: where and in which precision the samples live.

        Returns:
            x0 [shape]: the last x̂0 (in the signal range, not clipped).
        """
        self.generator.manual_seed(self.seed)
        x = self._noise(tuple(shape), device, dtype)
        x0 = x
        for t, t_prev in zip(self.timesteps[:-1], self.timesteps[1:]):
            tt = torch.full((shape[0],), t, dtype=torch.long, device=device)
            x0 = denoise_fn(x, tt)
            x = self.step(x0, t, x, t_prev)
        return x0

