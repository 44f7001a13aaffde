"""The denoiser: a U-Net (Ho et al. 2020's layout) sized by a width and a multiplier per level.

Residual blocks with GroupNorm and SiLU take a timestep embedding (sinusoidal, then an MLP; a
class embedding is added to it for conditional runs, with one extra "no label" index for
classifier-free guidance); self-attention runs in the middle, at the lowest resolution, and at
the levels ``down_attention``/``up_attention`` name (after each block there, as diffusers'
``AttnDownBlock2D``/``AttnUpBlock2D`` do). Inputs are padded to a multiple of 2**(levels - 1)
and the output cropped back, so 28x28 works.

The keyword options make the network diffusers' ``UNet2DModel`` when an imported run asks for it
(hub/diffusers_unet.py); their defaults are what aigc's own runs have always been.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def default_groups(channels: int) -> int:
    """GroupNorm groups of aigc's own runs (``norm_groups`` None): at most 8, dividing the channels."""
    return math.gcd(channels, 8)


def timestep_embedding(t: torch.Tensor, dim: int, flip_sin_to_cos: bool = False, freq_shift: float = 0) -> torch.Tensor:
    """(B,) timesteps -> (B, 2 * (dim // 2)) sinusoids (Vaswani et al.'s frequencies). ``freq_shift``
    1 spaces the frequencies over half - 1 steps (DDPM's original code); ``flip_sin_to_cos`` puts the
    cosines first (both as diffusers' ``get_timestep_embedding``). An odd dim is not padded: such a
    width is refused before training (models/sizing.py), as it always was."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000) * torch.arange(half, device=t.device, dtype=torch.float32) / (half - freq_shift))
    args = t.float()[:, None] * freqs[None]
    return torch.cat([args.cos(), args.sin()] if flip_sin_to_cos else [args.sin(), args.cos()], dim=1)


class ResBlock(nn.Module):
    """GroupNorm, SiLU, 3x3 conv, + the embedding's projection, GroupNorm, SiLU, 3x3 conv; plus
    the input (a 1x1 conv when the channels change), divided by ``scale`` (diffusers'
    ``output_scale_factor``: the mid block's ``mid_block_scale_factor``)."""

    def __init__(self, cin: int, cout: int, emb_dim: int, groups=default_groups, eps: float = 1e-5,
                 scale: float = 1.0):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups(cin), cin, eps=eps)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, cout)
        self.norm2 = nn.GroupNorm(groups(cout), cout, eps=eps)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()
        self.scale = scale

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # (B, cout, H, W)
        h = h + self.emb(emb)[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        out = self.skip(x) + h
        return out if self.scale == 1.0 else out / self.scale


class Attention(nn.Module):
    """Self-attention over the H*W positions with ``heads`` heads: q, k and v from one fused 1x1
    convolution ``qkv`` (its 3C output channels: q, then k, then v, each head-major), ``out`` a 1x1
    convolution; residual, divided by ``scale`` as ResBlock is."""

    def __init__(self, channels: int, heads: int = 1, groups=default_groups, eps: float = 1e-5, scale: float = 1.0):
        super().__init__()
        if channels % heads:
            raise ValueError(f"{channels} channels do not split into {heads} heads")
        self.heads, self.scale = heads, scale
        self.norm = nn.GroupNorm(groups(channels), channels, eps=eps)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        # (B, heads, HW, C / heads) each: the head axis kept, as ONNX's attention export wants 4-D inputs
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w).transpose(3, 4).unbind(1)
        a = F.scaled_dot_product_attention(q, k, v)  # (B, heads, HW, C / heads), softmax scale 1/sqrt(C / heads)
        out = x + self.out(a.transpose(2, 3).reshape(b, c, h, w))
        return out if self.scale == 1.0 else out / self.scale


class CrossAttention(nn.Module):
    """Attention from the H*W positions to a caption's L token states (Rombach et al. 2022's
    cross-attention): q from the image (a 1x1 convolution after GroupNorm), k and v from the
    states (linear maps from the encoder's width D), padding tokens masked out; residual."""

    def __init__(self, channels: int, context_dim: int, heads: int = 1, groups=default_groups, eps: float = 1e-5):
        super().__init__()
        if channels % heads:
            raise ValueError(f"{channels} channels do not split into {heads} heads")
        self.heads = heads
        self.norm = nn.GroupNorm(groups(channels), channels, eps=eps)
        self.q = nn.Conv2d(channels, channels, 1)
        self.kv = nn.Linear(context_dim, 2 * channels)
        self.out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor, text: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        states, mask = text  # (B, L, D), (B, L) bool
        b, c, h, w = x.shape
        heads, d = self.heads, c // self.heads
        q = self.q(self.norm(x)).reshape(b, heads, d, h * w).transpose(2, 3)  # (B, heads, HW, d)
        k, v = self.kv(states).reshape(b, -1, 2, heads, d).permute(2, 0, 3, 1, 4)  # each (B, heads, L, d)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])  # (B, heads, HW, d)
        return x + self.out(a.transpose(2, 3).reshape(b, c, h, w))


class NoCross(nn.Module):
    """A level without cross-attention: the features pass unchanged."""

    def forward(self, x: torch.Tensor, text) -> torch.Tensor:
        return x


def pooled_text(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, L, D), (B, L) -> (B, D): the mean of a caption's token states (every encoder keeps a
    start token, so no row is empty)."""
    m = mask.to(states.dtype)[..., None]
    return (states * m).sum(1) / m.sum(1)


LAYOUTS = ("compact", "ddpm")


class UNet(nn.Module):
    """``layout`` "compact" (the default): ``blocks`` residual blocks per level on the way down,
    one skip connection per level (its last block's output), ``blocks`` on the way up, the first
    taking the skip. "ddpm" (Ho et al. 2020; diffusers' ``UNet2DModel``): a skip from the input
    convolution, every block and every downsampler, so ``blocks + 1`` blocks per level on the way
    up; more weights and work for the same channels (docs/diffusion.md measures both).

    Keyword options (defaults: aigc's own runs; docs/diffusion.md lists them as config fields):
    ``norm_groups`` (None: ``default_groups``) and ``norm_eps`` of every GroupNorm; the sinusoid's
    ``flip_sin_to_cos`` and ``freq_shift``; ``time_act``: SiLU on the embedding before each
    block's projection; ``down_attention``/``up_attention``: per level, attention after each
    block; ``mid_attention``; ``head_dim`` (None: one head); ``mid_scale``: the middle blocks'
    output divisor; ``down_padding`` 1 (symmetric) or 0 (one zero row and column at the bottom
    and right, then no padding); ``center_input``: inputs in [0, 1] are mapped to [-1, 1].
    ``context_dim``: a captioned run's text width D: cross-attention to the caption's states at
    the levels ``cross_attention`` names (after each block there) and in the middle, and the
    states' masked mean, projected, added to the time embedding."""

    def __init__(self, channels: int, width: int, mult: tuple[int, ...], num_classes: int | None,
                 layout: str = "compact", blocks: int = 1, *, norm_groups: int | None = None,
                 norm_eps: float = 1e-5, flip_sin_to_cos: bool = False, freq_shift: int = 0,
                 time_act: bool = False, down_attention=None, up_attention=None, mid_attention: bool = True,
                 head_dim: int | None = None, mid_scale: float = 1.0, down_padding: int = 1,
                 center_input: bool = False, context_dim: int | None = None, cross_attention=None):
        super().__init__()
        if layout not in LAYOUTS or blocks < 1 or down_padding not in (0, 1):
            raise ValueError(f"layout must be one of {LAYOUTS}, blocks at least 1 and down_padding 0 or 1")
        self.levels, self.layout, self.blocks = len(mult), layout, blocks
        self.flip_sin_to_cos, self.freq_shift, self.time_act = flip_sin_to_cos, freq_shift, time_act
        self.down_padding, self.center_input = down_padding, center_input
        down_attention = tuple(down_attention or (False,) * self.levels)
        up_attention = tuple(up_attention or (False,) * self.levels)
        if len(down_attention) != self.levels or len(up_attention) != self.levels:
            raise ValueError("down_attention and up_attention need one entry per level")
        groups = default_groups if norm_groups is None else (lambda c: norm_groups)
        cross_attention = tuple(cross_attention or (False,) * self.levels)
        if len(cross_attention) != self.levels:
            raise ValueError("cross_attention needs one entry per level")
        self.context_dim = context_dim

        def cross(ch: int, here: bool) -> nn.Module:
            if context_dim is None or not here:
                return NoCross()
            return CrossAttention(ch, context_dim, 1 if head_dim is None else ch // head_dim, groups, norm_eps)

        def attention(ch: int, scale: float = 1.0) -> Attention:
            return Attention(ch, 1 if head_dim is None else ch // head_dim, groups, norm_eps, scale)

        emb_dim = 4 * width
        self.width = width
        self.time_mlp = nn.Sequential(nn.Linear(width, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.label_emb = nn.Embedding(num_classes + 1, emb_dim) if num_classes else None  # last: no label
        self.null_label = num_classes
        self.text_emb = nn.Linear(context_dim, emb_dim) if context_dim else None  # the pooled caption
        self.conv_in = nn.Conv2d(channels, width, 3, padding=1)
        # Flat lists, level by level (with blocks=1 the compact layout's weights keep their names);
        # *_attn holds one entry per block, Identity (no weights) where a level has no attention.
        self.down, self.down_attn, self.downsample = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        self.down_cross, self.up_cross = nn.ModuleList(), nn.ModuleList()  # empty without a caption
        captioned = context_dim is not None
        ch = width
        skips = [ch] if layout == "ddpm" else []  # channels of each skip, in the order pushed
        for i, m in enumerate(mult):
            for _ in range(blocks):
                self.down.append(ResBlock(ch, width * m, emb_dim, groups, norm_eps))
                ch = width * m
                self.down_attn.append(attention(ch) if down_attention[i] else nn.Identity())
                if captioned:
                    self.down_cross.append(cross(ch, cross_attention[i]))
                if layout == "ddpm":
                    skips.append(ch)
            if layout == "compact":
                skips.append(ch)
            if i < self.levels - 1:
                self.downsample.append(nn.Conv2d(ch, ch, 3, stride=2, padding=down_padding))
                if layout == "ddpm":
                    skips.append(ch)
        self.mid1 = ResBlock(ch, ch, emb_dim, groups, norm_eps, mid_scale)
        self.attn = attention(ch, mid_scale) if mid_attention else nn.Identity()
        self.mid_cross = cross(ch, True) if captioned else None
        self.mid2 = ResBlock(ch, ch, emb_dim, groups, norm_eps, mid_scale)
        self.up, self.up_attn, self.upsample = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        self.up_skips: list[bool] = []  # per up block: does it take a skip connection
        for i in reversed(range(self.levels)):
            for b in range(blocks + (layout == "ddpm")):
                takes = layout == "ddpm" or b == 0
                self.up.append(ResBlock(ch + (skips.pop() if takes else 0), width * mult[i], emb_dim, groups, norm_eps))
                self.up_skips.append(takes)
                ch = width * mult[i]
                self.up_attn.append(attention(ch) if up_attention[i] else nn.Identity())
                if captioned:
                    self.up_cross.append(cross(ch, cross_attention[i]))
            if i > 0:
                self.upsample.append(nn.Conv2d(ch, ch, 3, padding=1))
        self.norm_out = nn.GroupNorm(groups(ch), ch, eps=norm_eps)
        self.conv_out = nn.Conv2d(ch, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None,
                text: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """x (B, C, H, W), t (B,) timesteps, labels (B,) with ``null_label`` for "none", text: a
        captioned run's (states (B, L, D), mask (B, L) bool) -> (B, C, H, W)."""
        height, width = x.shape[-2:]
        if self.center_input:
            x = 2 * x - 1.0
        # Channels-last activations let oneDNN (and cuDNN) pick their faster convolution kernels:
        # 1.14x per training step on the CPU here (docs/benchmarks/diffusion.md); the same function.
        x = x.contiguous(memory_format=torch.channels_last)
        k = 2 ** (self.levels - 1)
        pad_h, pad_w = -height % k, -width % k
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        emb = self.time_mlp(timestep_embedding(t, self.width, self.flip_sin_to_cos, self.freq_shift))  # (B, 4 * width)
        if self.label_emb is not None:
            if labels is None:
                labels = torch.full((x.shape[0],), self.null_label, device=x.device, dtype=torch.long)
            emb = emb + self.label_emb(labels)
        if self.text_emb is not None:
            emb = emb + self.text_emb(pooled_text(*text))
        if self.time_act:  # diffusers' ResnetBlock2D applies SiLU before its time_emb_proj: once here for all
            emb = F.silu(emb)
        h = self.conv_in(x)
        ddpm = self.layout == "ddpm"
        skips = [h] if ddpm else []
        blocks, attns = iter(self.down), iter(self.down_attn)
        crosses = iter(self.down_cross) if self.text_emb is not None else None
        for i in range(self.levels):
            for _ in range(self.blocks):
                h = next(attns)(next(blocks)(h, emb))
                if crosses is not None:
                    h = next(crosses)(h, text)
                if ddpm:
                    skips.append(h)
            if not ddpm:
                skips.append(h)
            if i < self.levels - 1:
                if self.down_padding == 0:  # diffusers' Downsample2D with padding 0: bottom and right only
                    h = F.pad(h, (0, 1, 0, 1))
                h = self.downsample[i](h)
                if ddpm:
                    skips.append(h)
        h = self.attn(self.mid1(h, emb))
        if self.mid_cross is not None:
            h = self.mid_cross(h, text)
        h = self.mid2(h, emb)
        blocks, attns, takes = iter(self.up), iter(self.up_attn), iter(self.up_skips)
        crosses = iter(self.up_cross) if self.text_emb is not None else None
        per_level = self.blocks + ddpm
        for j in range(self.levels):
            for _ in range(per_level):
                block = next(blocks)
                h = next(attns)(block(torch.cat([h, skips.pop()], dim=1) if next(takes) else h, emb))
                if crosses is not None:
                    h = next(crosses)(h, text)
            if j < self.levels - 1:
                h = self.upsample[j](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        out = self.conv_out(F.silu(self.norm_out(h)))
        return out[..., :height, :width].contiguous()  # (B, C, H, W), the usual layout
