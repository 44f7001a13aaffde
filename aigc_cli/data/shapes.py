"""The built-in dataset: 2D shapes with known factors, drawn procedurally, no network or files.

In the spirit of dSprites (Matthey et al., 2017), but in colour: each 32x32 RGB image holds one
shape (square, circle, triangle) with a random scale, position, rotation and hue on black. The
labels are the shape; ``factors`` keeps every factor, for latent traversals.
"""

from __future__ import annotations

import math

import torch

from aigc_cli.core.errors import DatasetError
from aigc_cli.data.base import ImageDataset, register_dataset

SHAPES = ("square", "circle", "triangle")
SIZE = 32
COUNTS = {"train": 16384, "test": 4096}
SEEDS = {"train": 0, "test": 1}


def render_shapes(n: int, seed: int, size: int = SIZE) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """Return (images (n, 3, size, size) uint8, labels (n,), factors), all decided by ``seed``."""
    g = torch.Generator().manual_seed(seed)
    shape = torch.randint(0, len(SHAPES), (n,), generator=g)
    scale = 0.18 + 0.17 * torch.rand(n, generator=g)  # half-size, in units of the image width
    cx = 0.25 + 0.5 * torch.rand(n, generator=g)
    cy = 0.25 + 0.5 * torch.rand(n, generator=g)
    angle = 2 * math.pi * torch.rand(n, generator=g)
    hue = torch.rand(n, generator=g)

    images = rasterise(shape, scale, cx, cy, angle, hue, size)
    factors = {"shape": shape, "scale": scale, "x": cx, "y": cy, "rotation": angle, "hue": hue}
    return images, shape.to(torch.int64), factors


def rasterise(shape: torch.Tensor, scale: torch.Tensor, cx: torch.Tensor, cy: torch.Tensor, angle: torch.Tensor,
              hue: torch.Tensor, size: int = SIZE) -> torch.Tensor:
    """(n, 3, size, size) uint8: shape index ``shape`` (into SHAPES) of half-size ``scale`` and centre
    (``cx``, ``cy``), in units of the image width, turned by ``angle`` and coloured ``hue``, on black.
    Shared by ``shapes`` and ``shapes-captions`` (data/shapes_captions.py)."""
    n = len(shape)
    # Pixel centres in [0, 1], moved into each shape's own frame: (n, size, size).
    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    dx = xx[None] - cx[:, None, None]
    dy = yy[None] - cy[:, None, None]
    cos, sin = torch.cos(angle)[:, None, None], torch.sin(angle)[:, None, None]
    u = (cos * dx + sin * dy) / scale[:, None, None]
    v = (-sin * dx + cos * dy) / scale[:, None, None]

    # The square's half-side is 0.8 scale (circumradius 1.13 scale); circle and triangle: radius scale.
    square = (u.abs() <= 0.8) & (v.abs() <= 0.8)
    circle = u * u + v * v <= 1.0
    # Equilateral triangle with circumradius 1, pointing up in its own frame.
    triangle = (v >= -0.5) & (v <= 1.0 - math.sqrt(3) * u.abs() * 1.0) & (v <= 1.0)
    masks = torch.stack([square, circle, triangle], dim=1)  # (n, 3 shapes, size, size)
    mask = masks[torch.arange(n), shape].float()  # (n, size, size)

    rgb = _hue_to_rgb(hue)  # (n, 3)
    return (mask[:, None] * rgb[:, :, None, None] * 255).round().to(torch.uint8)


def _hue_to_rgb(hue: torch.Tensor) -> torch.Tensor:
    # Full saturation and value: bright, distinct colours.
    k = (torch.tensor([5.0, 3.0, 1.0])[None] + hue[:, None] * 6) % 6
    return 1 - torch.clamp(torch.minimum(k, 4 - k), 0, 1)


@register_dataset("shapes", "built-in 32x32 RGB shapes with known factors; no download")
def load_shapes(split: str) -> ImageDataset:
    if split not in COUNTS:
        raise DatasetError(f"unknown split {split!r} for shapes; use train or test")
    images, labels, factors = render_shapes(COUNTS[split], SEEDS[split])
    return ImageDataset(
        images=images,
        labels=labels,
        name=f"shapes ({split})",
        spec={"spec": "shapes", "split": split},
        classes=list(SHAPES),
        factors=factors,
    )
