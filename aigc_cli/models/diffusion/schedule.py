"""Noise schedules and the conversions between what a denoiser predicts and (x0, eps).

x_t = sqrt(ab_t) * x0 + sqrt(1 - ab_t) * eps, ab_t = alpha_bar[t] for t = 0..T-1 (ab decreasing).
v = sqrt(ab) * eps - sqrt(1 - ab) * x0 (Salimans & Ho 2022).
"""

from __future__ import annotations

import math

import torch

TIMESTEPS = 1000  # aigc's own runs; a run's config.json says its own ('timesteps')
SCHEDULES = ("cosine", "linear", "scaled_linear")  # what a run's 'schedule' field may name
BETA_START, BETA_END = 1e-4, 0.02  # Ho et al.'s linear betas: aigc's 'linear', diffusers' defaults


def alpha_bar(schedule: str, timesteps: int = TIMESTEPS, beta_start: float = BETA_START,
              beta_end: float = BETA_END) -> torch.Tensor:
    """(T,) float64 cumulative signal shares, from near 1 (t=0) down to near 0 (t=T-1).

    ``linear``: betas evenly spaced from beta_start to beta_end (Ho et al. 2020); ``scaled_linear``:
    their square roots evenly spaced (Stable Diffusion's, diffusers' name); ``cosine``: Nichol &
    Dhariwal 2021 with betas clipped at 0.999 (diffusers' ``squaredcos_cap_v2``), which ignores the
    beta bounds. Computed in float64 and rounded once (diffusers multiplies in float32: the tables
    differ by under 1e-5 relative, tests/test_import_diffusers.py)."""
    if schedule == "linear":
        betas = torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float64)
    elif schedule == "scaled_linear":
        betas = torch.linspace(beta_start**0.5, beta_end**0.5, timesteps, dtype=torch.float64) ** 2
    elif schedule == "cosine":
        s = 0.008
        f = lambda u: math.cos((u + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
        betas = torch.tensor([min(1 - f((i + 1) / timesteps) / f(i / timesteps), 0.999) for i in range(timesteps)],
                             dtype=torch.float64)
    else:
        raise ValueError(f"unknown schedule {schedule!r}")
    return torch.cumprod(1 - betas, 0)


def run_alpha_bar(model: dict) -> torch.Tensor:
    """(T,) float32: the alpha-bar table of a run, from its config.json 'model' section."""
    return alpha_bar(model["schedule"], model["timesteps"], model["beta_start"], model["beta_end"]).float()


def _bc(a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(B,) -> (B, 1, 1, 1) to broadcast over x's (B, C, H, W)."""
    return a.reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype)


def target(prediction: str, x0: torch.Tensor, eps: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
    """What the network is trained to output for (x0, eps) at signal shares ab (B,)."""
    if prediction == "eps":
        return eps
    if prediction == "x0":
        return x0
    return _bc(ab.sqrt(), x0) * eps - _bc((1 - ab).sqrt(), x0) * x0  # v


def to_x0_eps(prediction: str, out: torch.Tensor, x: torch.Tensor, ab: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(x0, eps) from the network's output at x_t with signal shares ab (B,)."""
    a, s = _bc(ab.sqrt(), x), _bc((1 - ab).sqrt(), x)
    if prediction == "eps":
        return (x - s * out) / a, out
    if prediction == "x0":
        return out, (x - a * out) / s
    return a * x - s * out, s * x + a * out  # v


def loss_weight(weighting: str, prediction: str, ab: torch.Tensor, gamma: float = 5.0) -> torch.Tensor:
    """Per-sample weights (B,) that turn each prediction's MSE into Min-SNR-gamma's x0 weighting
    min(snr, gamma) (Hang et al. 2023); ones for ``none``."""
    if weighting == "none":
        return torch.ones_like(ab)
    snr = ab / (1 - ab)
    clipped = snr.clamp(max=gamma)
    if prediction == "eps":
        return clipped / snr
    if prediction == "v":
        return clipped / (snr + 1)
    return clipped
