"""The denoiser: a small U-Net (Ho et al. 2020's layout) sized by a width and a multiplier per level.

Residual blocks with GroupNorm and SiLU take a timestep embedding (sinusoidal, then an MLP; a
class embedding is added to it for conditional runs, with one extra "no label" index for
classifier-free guidance); self-attention runs at the lowest resolution only, where it is cheap.
Inputs are padded to a multiple of 2**(levels - 1) and the output cropped back, so 28x28 works.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _groups(channels: int) -> int:
    return math.gcd(channels, 8)


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """(B,) timesteps -> (B, dim) sinusoids (Vaswani et al.'s frequencies)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([args.sin(), args.cos()], dim=1)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, emb_dim: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(cin), cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, cout)
        self.norm2 = nn.GroupNorm(_groups(cout), cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # (B, cout, H, W)
        h = h + self.emb(emb)[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class Attention(nn.Module):
    """One-head self-attention over the H*W positions."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.GroupNorm(_groups(channels), channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        # (B, 1, HW, C) each: the head axis kept, as ONNX's attention export wants 4-D inputs
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, 1, c, h * w).transpose(3, 4).unbind(1)
        a = F.scaled_dot_product_attention(q, k, v)  # (B, 1, HW, C)
        return x + self.out(a.squeeze(1).transpose(1, 2).reshape(b, c, h, w))


LAYOUTS = ("compact", "ddpm")


class UNet(nn.Module):
    """``layout`` "compact" (the default): ``blocks`` residual blocks per level on the way down,
    one skip connection per level (its last block's output), ``blocks`` on the way up, the first
    taking the skip. "ddpm" (Ho et al. 2020; diffusers' ``UNet2DModel``): a skip from the input
    convolution, every block and every downsampler, so ``blocks + 1`` blocks per level on the way
    up; more weights and work for the same channels (docs/diffusion.md measures both)."""

    def __init__(self, channels: int, width: int, mult: tuple[int, ...], num_classes: int | None,
                 layout: str = "compact", blocks: int = 1):
        super().__init__()
        if layout not in LAYOUTS or blocks < 1:
            raise ValueError(f"layout must be one of {LAYOUTS} and blocks at least 1")
        self.levels, self.layout, self.blocks = len(mult), layout, blocks
        emb_dim = 4 * width
        self.width = width
        self.time_mlp = nn.Sequential(nn.Linear(width, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.label_emb = nn.Embedding(num_classes + 1, emb_dim) if num_classes else None  # last: no label
        self.null_label = num_classes
        self.conv_in = nn.Conv2d(channels, width, 3, padding=1)
        # Flat lists, level by level (with blocks=1 the compact layout's weights keep their names).
        self.down, self.downsample = nn.ModuleList(), nn.ModuleList()
        ch = width
        skips = [ch] if layout == "ddpm" else []  # channels of each skip, in the order pushed
        for i, m in enumerate(mult):
            for _ in range(blocks):
                self.down.append(ResBlock(ch, width * m, emb_dim))
                ch = width * m
                if layout == "ddpm":
                    skips.append(ch)
            if layout == "compact":
                skips.append(ch)
            if i < self.levels - 1:
                self.downsample.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                if layout == "ddpm":
                    skips.append(ch)
        self.mid1, self.attn, self.mid2 = ResBlock(ch, ch, emb_dim), Attention(ch), ResBlock(ch, ch, emb_dim)
        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        self.up_skips: list[bool] = []  # per up block: does it take a skip connection
        for i in reversed(range(self.levels)):
            for b in range(blocks + (layout == "ddpm")):
                takes = layout == "ddpm" or b == 0
                self.up.append(ResBlock(ch + (skips.pop() if takes else 0), width * mult[i], emb_dim))
                self.up_skips.append(takes)
                ch = width * mult[i]
            if i > 0:
                self.upsample.append(nn.Conv2d(ch, ch, 3, padding=1))
        self.norm_out = nn.GroupNorm(_groups(ch), ch)
        self.conv_out = nn.Conv2d(ch, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, C, H, W), t (B,) timesteps, labels (B,) with ``null_label`` for "none" -> (B, C, H, W)."""
        height, width = x.shape[-2:]
        # Channels-last activations let oneDNN (and cuDNN) pick their faster convolution kernels:
        # 1.14x per training step on the CPU here (docs/benchmarks/diffusion.md); the same function.
        x = x.contiguous(memory_format=torch.channels_last)
        k = 2 ** (self.levels - 1)
        pad_h, pad_w = -height % k, -width % k
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        emb = self.time_mlp(timestep_embedding(t, self.width))  # (B, 4 * width)
        if self.label_emb is not None:
            if labels is None:
                labels = torch.full((x.shape[0],), self.null_label, device=x.device, dtype=torch.long)
            emb = emb + self.label_emb(labels)
        h = self.conv_in(x)
        ddpm = self.layout == "ddpm"
        skips = [h] if ddpm else []
        blocks = iter(self.down)
        for i in range(self.levels):
            for _ in range(self.blocks):
                h = next(blocks)(h, emb)
                if ddpm:
                    skips.append(h)
            if not ddpm:
                skips.append(h)
            if i < self.levels - 1:
                h = self.downsample[i](h)
                if ddpm:
                    skips.append(h)
        h = self.mid2(self.attn(self.mid1(h, emb)), emb)
        blocks, takes = iter(self.up), iter(self.up_skips)
        per_level = self.blocks + ddpm
        for j in range(self.levels):
            for _ in range(per_level):
                block = next(blocks)
                h = block(torch.cat([h, skips.pop()], dim=1) if next(takes) else h, emb)
            if j < self.levels - 1:
                h = self.upsample[j](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        out = self.conv_out(F.silu(self.norm_out(h)))
        return out[..., :height, :width].contiguous()  # (B, C, H, W), the usual layout
