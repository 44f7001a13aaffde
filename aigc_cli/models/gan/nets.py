"""Generators and discriminators: the MLP GAN (Goodfellow et al., 2014) and DCGAN (Radford et al.).

Generators map (z (B, latent), labels (B,) or None) to (B, C, H, W) in [-1, 1].
Discriminators map (x (B, C, H, W), labels or None) to one score per image (B,). Conditional
discriminators use the projection of Miyato & Koyama (2018): score = psi(h) + <embed(y), h>.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from aigc_cli.core.registry import Registry
from aigc_cli.models.common import LABEL_DIM, NetSpec, check_square, dcgan_init, embed_labels, label_embedding

ARCHS: Registry = Registry("GAN architecture")


def register_arch(name: str):
    """Register ``build(spec) -> (generator, discriminator)``."""
    return ARCHS.register(name)


class Projection(nn.Module):
    """Final linear score plus the class projection term."""

    def __init__(self, features: int, num_classes: int | None):
        super().__init__()
        self.linear = nn.Linear(features, 1)
        self.embed = nn.Embedding(num_classes, features) if num_classes else None

    def forward(self, h, labels):  # h: (B, F)
        out = self.linear(h).squeeze(1)
        if self.embed is not None:
            out = out + (self.embed(labels) * h).sum(1)
        return out  # (B,)


class MLPGenerator(nn.Module):
    def __init__(self, spec: NetSpec):
        super().__init__()
        self.shape = spec.image_shape
        self.embed = label_embedding(spec.num_classes)
        w = spec.width
        n_in = spec.latent_dim + (LABEL_DIM if self.embed is not None else 0)
        out = spec.image_shape[0] * spec.image_shape[1] * spec.image_shape[2]
        self.net = nn.Sequential(
            nn.Linear(n_in, 4 * w), nn.LeakyReLU(0.2),
            nn.Linear(4 * w, 8 * w), nn.BatchNorm1d(8 * w), nn.LeakyReLU(0.2),
            nn.Linear(8 * w, 16 * w), nn.BatchNorm1d(16 * w), nn.LeakyReLU(0.2),
            nn.Linear(16 * w, out), nn.Tanh(),
        )

    def forward(self, z, labels=None):
        x = self.net(embed_labels(self.embed, z, labels))  # input (B, latent [+ LABEL_DIM])
        return x.view(-1, *self.shape)


class MLPDiscriminator(nn.Module):
    def __init__(self, spec: NetSpec):
        super().__init__()
        w = spec.width
        n_in = spec.image_shape[0] * spec.image_shape[1] * spec.image_shape[2]
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(n_in, 8 * w), nn.LeakyReLU(0.2), nn.Linear(8 * w, 4 * w), nn.LeakyReLU(0.2)
        )
        self.head = Projection(4 * w, spec.num_classes)

    def forward(self, x, labels=None):
        return self.head(self.net(x), labels)


@register_arch("mlp")
def build_mlp(spec: NetSpec):
    return MLPGenerator(spec), MLPDiscriminator(spec)


def _channels(width: int, stages: int) -> list[int]:
    """Channels from the coarsest to the finest resolution: 4w, 2w, w, w, ... (stages + 1 entries)."""
    return [max(width, 4 * width // 2**i) for i in range(stages + 1)]


def _generator_plan(spec: NetSpec) -> tuple[int, list[int]]:
    """(start side, channels coarse to fine) of a DCGAN generator: 7 and [4w, 2w, w] for 28x28."""
    stages = check_square(spec.image_shape)
    return spec.image_shape[1] // 2**stages, _channels(spec.width, stages)


class DCGANGenerator(nn.Module):
    """z -> linear -> (4w, s, s) -> [transposed conv x2 -> BN -> ReLU] ... -> conv -> tanh."""

    def __init__(self, spec: NetSpec):
        super().__init__()
        c = spec.image_shape[0]
        self.start, ch = _generator_plan(spec)  # start: 4 for 32x32, 7 for 28x28
        self.project = nn.Sequential(nn.Linear(spec.latent_dim, ch[0] * self.start**2, bias=False))
        self.bn0 = nn.BatchNorm2d(ch[0])
        blocks = []
        for cin, cout in zip(ch[:-1], ch[1:]):
            blocks += [nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True)]
        self.blocks = nn.Sequential(*blocks)
        self.to_image = nn.Sequential(nn.Conv2d(ch[-1], c, 3, 1, 1), nn.Tanh())
        self.ch0 = ch[0]

    def forward(self, z, labels=None):
        h = self.project(z)
        h = torch.relu(self.bn0(h.view(-1, self.ch0, self.start, self.start)))  # (B, 4w, s, s)
        return self.to_image(self.blocks(h))  # (B, C, H, W)


class ConditionalBatchNorm2d(nn.Module):
    """BatchNorm whose scale and shift are looked up per class (de Vries et al., 2017; the
    generators of Miyato & Koyama, 2018). Starts as the identity affine for every class."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, affine=False)
        self.scale = nn.Embedding(num_classes, channels)
        self.shift = nn.Embedding(num_classes, channels)
        nn.init.ones_(self.scale.weight)
        nn.init.zeros_(self.shift.weight)

    def forward(self, h, labels):  # h: (B, C, H, W), labels: (B,)
        return self.bn(h) * self.scale(labels)[:, :, None, None] + self.shift(labels)[:, :, None, None]


class ConditionalDCGANGenerator(nn.Module):
    """The DCGAN generator with the class in every BatchNorm's scale and shift.

    Joining a label embedding to z at the input instead (as the MLP generator does) made this
    generator ignore z and draw about one prototype per class on MNIST (class diversity 1.7
    against 8.7 for real digits; with conditional BatchNorm 8.7: docs/benchmarks/gan.md).
    """

    def __init__(self, spec: NetSpec):
        super().__init__()
        c, k = spec.image_shape[0], spec.num_classes
        self.start, ch = _generator_plan(spec)
        self.project = nn.Sequential(nn.Linear(spec.latent_dim, ch[0] * self.start**2, bias=False))
        self.bn0 = ConditionalBatchNorm2d(ch[0], k)
        self.ups = nn.ModuleList(nn.ConvTranspose2d(a, b, 4, 2, 1, bias=False) for a, b in zip(ch[:-1], ch[1:]))
        self.norms = nn.ModuleList(ConditionalBatchNorm2d(b, k) for b in ch[1:])
        self.to_image = nn.Sequential(nn.Conv2d(ch[-1], c, 3, 1, 1), nn.Tanh())
        self.ch0 = ch[0]

    def forward(self, z, labels):
        h = self.project(z).view(-1, self.ch0, self.start, self.start)
        h = torch.relu(self.bn0(h, labels))  # (B, 4w, s, s)
        for up, norm in zip(self.ups, self.norms):
            h = torch.relu(norm(up(h), labels))
        return self.to_image(h)  # (B, C, H, W)


class DCGANDiscriminator(nn.Module):
    def __init__(self, spec: NetSpec):
        super().__init__()
        c, h, _ = spec.image_shape
        stages = check_square(spec.image_shape)
        ch = list(reversed(_channels(spec.width, stages)))  # fine to coarse: w, ..., 4w
        layers = [nn.Conv2d(c, ch[0], 3, 1, 1), nn.LeakyReLU(0.2)]
        for cin, cout in zip(ch[:-1], ch[1:]):
            layers += [nn.Conv2d(cin, cout, 4, 2, 1), nn.LeakyReLU(0.2)]
        layers.append(nn.Flatten())
        self.net = nn.Sequential(*layers)
        start = h // 2**stages
        self.head = Projection(ch[-1] * start * start, spec.num_classes)

    def forward(self, x, labels=None):
        return self.head(self.net(x), labels)


@register_arch("dcgan")
def build_dcgan(spec: NetSpec):
    generator = ConditionalDCGANGenerator(spec) if spec.num_classes else DCGANGenerator(spec)
    return generator, DCGANDiscriminator(spec)


def add_spectral_norm(module: nn.Module) -> nn.Module:
    """Spectral normalisation (Miyato et al., 2018) on every weight layer of a discriminator."""
    for name, child in list(module.named_children()):
        if isinstance(child, (nn.Conv2d, nn.Linear, nn.Embedding)):
            setattr(module, name, spectral_norm(child))
        else:
            add_spectral_norm(child)
    return module


def build_nets(arch: str, spec: NetSpec, spectral: bool):
    g, d = ARCHS.get(arch)(spec)
    dcgan_init(g)
    dcgan_init(d)
    if spectral:
        add_spectral_norm(d)
    return g, d
