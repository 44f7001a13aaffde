"""VAE encoders and decoders: an MLP and a convolutional pair sized to the dataset.

Encoders map (x (B, C, H, W) in [0, 1], labels (B,) or None) to the posterior's (mu, logvar),
each (B, latent). Decoders map (z (B, latent), labels or None) to one value per pixel and
channel, (B, C, H, W), that the likelihood reads (the mean image is its sigmoid; see
likelihoods.py). Conditional models (a CVAE) see a learned label embedding in both halves.
"""

from __future__ import annotations

from torch import nn

from aigc_cli.core.registry import Registry
from aigc_cli.models.common import LABEL_DIM, NetSpec, check_square, embed_labels, label_embedding


VaeSpec = NetSpec  # the VAE nets are sized from the same fields as the GAN nets


ARCHS: Registry = Registry("VAE architecture")


def register_arch(name: str):
    """Register ``build(spec) -> (encoder, decoder)``."""
    return ARCHS.register(name)


def _extra(spec: VaeSpec) -> int:
    return LABEL_DIM if spec.num_classes else 0


class MLPEncoder(nn.Module):
    def __init__(self, spec: VaeSpec):
        super().__init__()
        c, h, w = spec.image_shape
        hidden = 16 * spec.width
        self.embed = label_embedding(spec.num_classes)
        self.net = nn.Sequential(
            nn.Linear(c * h * w + _extra(spec), hidden), nn.SiLU(),
            nn.Linear(hidden, hidden), nn.SiLU(),
            nn.Linear(hidden, 2 * spec.latent_dim),
        )

    def forward(self, x, labels=None):
        h = embed_labels(self.embed, (x * 2 - 1).flatten(1), labels)
        mu, logvar = self.net(h).chunk(2, dim=1)
        return mu, logvar


class MLPDecoder(nn.Module):
    def __init__(self, spec: VaeSpec):
        super().__init__()
        self.shape = spec.image_shape
        c, h, w = spec.image_shape
        hidden = 16 * spec.width
        self.embed = label_embedding(spec.num_classes)
        self.net = nn.Sequential(
            nn.Linear(spec.latent_dim + _extra(spec), hidden), nn.SiLU(),
            nn.Linear(hidden, hidden), nn.SiLU(),
            nn.Linear(hidden, c * h * w),
        )

    def forward(self, z, labels=None):
        return self.net(embed_labels(self.embed, z, labels)).view(-1, *self.shape)


@register_arch("mlp")
def build_mlp(spec: VaeSpec):
    return MLPEncoder(spec), MLPDecoder(spec)


def _channels(width: int, stages: int) -> list[int]:
    """Channels from the finest to the coarsest resolution: w, 2w, 4w, 4w, ... (one per stage)."""
    return [width * min(2**i, 4) for i in range(stages)]


class ConvEncoder(nn.Module):
    """Stride-2 4x4 convolutions down to a 4..7 pixel square, then a linear head."""

    def __init__(self, spec: VaeSpec):
        super().__init__()
        c, size, _ = spec.image_shape
        stages = check_square(spec.image_shape)
        ch = _channels(spec.width, stages)
        layers: list[nn.Module] = [nn.Conv2d(c, ch[0], 4, 2, 1), nn.SiLU()]
        for cin, cout in zip(ch[:-1], ch[1:]):
            layers += [nn.Conv2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.SiLU()]
        layers.append(nn.Flatten())
        self.net = nn.Sequential(*layers)
        start = size // 2**stages
        self.embed = label_embedding(spec.num_classes)
        self.head = nn.Linear(ch[-1] * start * start + _extra(spec), 2 * spec.latent_dim)

    def forward(self, x, labels=None):
        h = embed_labels(self.embed, self.net(x * 2 - 1), labels)
        mu, logvar = self.head(h).chunk(2, dim=1)
        return mu, logvar


class ConvDecoder(nn.Module):
    """The encoder mirrored: a linear projection to a 4..7 pixel square, then stride-2 4x4
    transposed convolutions up to the image size."""

    def __init__(self, spec: VaeSpec):
        super().__init__()
        c, size, _ = spec.image_shape
        stages = check_square(spec.image_shape)
        ch = list(reversed(_channels(spec.width, stages)))  # coarse to fine
        self.start = size // 2**stages
        self.ch0 = ch[0]
        self.embed = label_embedding(spec.num_classes)
        self.project = nn.Linear(spec.latent_dim + _extra(spec), ch[0] * self.start**2, bias=False)
        layers: list[nn.Module] = [nn.BatchNorm2d(ch[0]), nn.SiLU()]
        for cin, cout in zip(ch[:-1], ch[1:]):
            layers += [nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.SiLU()]
        layers.append(nn.ConvTranspose2d(ch[-1], c, 4, 2, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, z, labels=None):
        h = self.project(embed_labels(self.embed, z, labels))
        return self.net(h.view(-1, self.ch0, self.start, self.start))


@register_arch("conv")
def build_conv(spec: VaeSpec):
    return ConvEncoder(spec), ConvDecoder(spec)


def build_nets(arch: str, spec: VaeSpec) -> tuple[nn.Module, nn.Module]:
    return ARCHS.get(arch)(spec)
