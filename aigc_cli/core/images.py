"""Image tensors to PNG/GIF bytes: quantising, grids, text chunks."""

from __future__ import annotations

import io
import math
from typing import Sequence

import numpy as np
import torch


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) floats in [0, 1] -> uint8, rounded as PNG writers do."""
    return images.detach().float().mul(255).add(0.5).clamp_(0, 255).to(torch.uint8).cpu()


def make_grid(images: torch.Tensor, nrow: int | None = None, padding: int = 2) -> torch.Tensor:
    """(B, C, H, W) uint8 -> (C, H', W') uint8, ``nrow`` images per row, black padding."""
    b, c, h, w = images.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(b)))
    ncol = math.ceil(b / nrow)
    grid = torch.zeros(c, ncol * (h + padding) + padding, nrow * (w + padding) + padding, dtype=torch.uint8)
    for i in range(b):
        r, k = divmod(i, nrow)
        y, x = padding + r * (h + padding), padding + k * (w + padding)
        grid[:, y : y + h, x : x + w] = images[i]
    return grid


def _pil(image: torch.Tensor):
    """(C, H, W) uint8 -> PIL image (L or RGB)."""
    from PIL import Image

    array = image.permute(1, 2, 0).numpy()
    if array.shape[2] == 1:
        return Image.fromarray(array[:, :, 0], mode="L")
    return Image.fromarray(np.ascontiguousarray(array), mode="RGB")


def png_bytes(image: torch.Tensor, text: dict[str, str] | None = None) -> bytes:
    """(C, H, W) uint8 -> PNG bytes with tEXt chunks (run, seed, index...)."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, str(value))
    buf = io.BytesIO()
    _pil(image).save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def gif_bytes(frames: Sequence[torch.Tensor], fps: float = 10.0, loop: int = 0) -> bytes:
    """Frames of (C, H, W) uint8 -> an animated GIF, one frame each."""
    pil = [_pil(f).convert("RGB") for f in frames]
    buf = io.BytesIO()
    pil[0].save(
        buf, format="GIF", save_all=True, append_images=pil[1:], duration=int(round(1000 / fps)), loop=loop,
        optimize=False, disposal=1,
    )
    return buf.getvalue()
