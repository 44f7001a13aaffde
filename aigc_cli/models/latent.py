"""Paths through latent space, the core behind ``aigc interpolate`` (pure tensor maths; the
images in and out are core.images'):

- ``lerp``/``slerp`` and ``latent_path``: N frames along a path through two or more latents;
- ``traversal``: vary one latent dimension at a time around a base latent (beta-VAE pictures);
- ``parse_dims``: "all", "3", "0,2,5" or "0-7" -> dimension indices.
"""

from __future__ import annotations

from typing import Sequence

import torch

from aigc_cli.core.errors import ConfigError, OptionError

MODES = ("slerp", "lerp")


def lerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """(D,), (D,), (N,) -> (N, D): straight-line interpolation."""
    t = t.to(a.dtype)[:, None]
    return a[None] * (1 - t) + b[None] * t


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """(D,), (D,), (N,) -> (N, D): spherical interpolation (Shoemake, 1985; White, 2016).

    Gaussian latents concentrate near a sphere of radius sqrt(D); the straight line between two
    of them passes close to the origin, where the prior has few samples, while slerp follows the
    great circle (with the norm changing smoothly between the two). Falls back to lerp for
    (nearly) parallel or zero vectors.
    """
    a64, b64, t64 = a.double(), b.double(), t.double()[:, None]
    na, nb = a64.norm(), b64.norm()
    if na < 1e-12 or nb < 1e-12:
        return lerp(a, b, t)
    cos = torch.clamp((a64 / na) @ (b64 / nb), -1.0, 1.0)
    omega = torch.arccos(cos)
    so = torch.sin(omega)
    if so < 1e-6:
        return lerp(a, b, t)
    out = (torch.sin((1 - t64) * omega) / so) * a64[None] + (torch.sin(t64 * omega) / so) * b64[None]
    return out.to(a.dtype)


def check_frames(frames: int) -> None:
    if frames < 2:
        raise OptionError("frames", f"must be at least 2 (the two endpoints), got {frames}")


def latent_path(points: torch.Tensor, frames: int, mode: str = "slerp") -> torch.Tensor:
    """(K >= 2, D) latents -> (frames, D) frames through all of them, evenly spaced per segment.

    The first and last frames are exactly the first and last points; a frame that falls on an
    inner point is exactly that point.
    """
    check_frames(frames)
    if mode not in MODES:
        raise OptionError("mode", f"{mode!r} is not one of: {', '.join(MODES)}")
    if points.ndim != 2 or len(points) < 2:
        raise ConfigError(f"an interpolation needs at least 2 latents, got {len(points) if points.ndim == 2 else 0}")
    fn = slerp if mode == "slerp" else lerp
    k = len(points)
    s = torch.linspace(0, k - 1, frames, dtype=torch.float64)
    seg = torch.clamp(s.floor().long(), max=k - 2)
    t = s - seg
    out = torch.empty(frames, points.shape[1], dtype=points.dtype)
    for i in range(k - 1):
        sel = seg == i
        if sel.any():
            out[sel] = fn(points[i], points[i + 1], t[sel])
    for j in range(frames):  # frames on a point are that point, bit for bit
        if float(s[j]) == round(float(s[j])):
            out[j] = points[int(round(float(s[j])))]
    return out


def parse_dims(spec: str, latent_dim: int) -> list[int]:
    """"all", "3", "0,2,5", "0-7" (inclusive) -> sorted unique dimension indices."""
    text = spec.strip().lower()
    if text == "all":
        return list(range(latent_dim))
    dims: set[int] = set()
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part[1:]:
                lo, hi = part.split("-", 1)
                dims.update(range(int(lo), int(hi) + 1))
            else:
                dims.add(int(part))
    except ValueError:
        raise OptionError("traverse", f"takes 'all', a dimension (3), a list (0,2,5) or a range (0-7); got {spec!r}") from None
    bad = sorted(d for d in dims if not 0 <= d < latent_dim)
    if bad or not dims:
        raise OptionError("traverse", f"dimensions must lie in 0..{latent_dim - 1}; got {spec!r}")
    return sorted(dims)


def traversal(base: torch.Tensor, dims: Sequence[int], frames: int, span: float) -> torch.Tensor:
    """(D,) base latent -> (len(dims), frames, D): row r sets dimension dims[r] to each of
    ``frames`` values evenly spaced in [-span, span]; the other dimensions keep the base values."""
    check_frames(frames)
    if not span > 0:
        raise OptionError("range", f"must be positive, got {span}")
    values = torch.linspace(-span, span, frames, dtype=base.dtype)
    out = base[None, None].repeat(len(dims), frames, 1)
    for r, d in enumerate(dims):
        out[r, :, d] = values
    return out
