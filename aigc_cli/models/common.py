"""Building blocks shared by the families: the image fields of a config, fixed preview inputs,
label embeddings, init, BatchNorm re-estimation, and the Sampler of one-pass families (a decoder
call per batch)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from aigc_cli.core.errors import ConfigError, OptionError
from aigc_cli.core.schema import Field
from aigc_cli.models.conditions import Conditioning
from aigc_cli.models.protocol import Decoder, FamilyImpl, Sampler

PREVIEW_COUNT = 64  # images in an image family's per-epoch preview grids


@dataclass(frozen=True)
class CaptionedImages:
    """A preview of a captioned run: (N, C, H, W) images in [0, 1], each drawn with its prompt
    written under it (core/images.py ``captioned_grid``)."""

    images: torch.Tensor
    captions: tuple[str, ...]
PREVIEW_SEED_OFFSET = 7  # the preview latents' seed: the run's seed plus this


def image_fields(dataset_info: dict[str, Any], conditional: bool | None) -> dict[str, Any]:
    """The ``model`` fields every image family records: what it draws and what it is conditioned on."""
    return {
        "image_shape": list(dataset_info["shape"]),
        "num_classes": dataset_info.get("classes"),
        "conditional": resolve_conditional(conditional, dataset_info),
    }


# The declarations of those fields, for checking a run's config.json (FamilyImpl.model_fields).
IMAGE_FIELDS = (
    Field("image_shape", list, items=int, length=(3, 3), minimum=1),
    Field("num_classes", int, minimum=1, optional=True),
    Field("conditional", bool),
)


def num_classes(model: dict[str, Any]) -> int | None:
    """The classes a run is conditioned on, or None when it is unconditional."""
    return model["num_classes"] if model["conditional"] else None


def class_conditions(model: dict[str, Any]) -> dict[str, Any]:
    """``Sampler.conditions`` of an image run: a class label when it is class-conditional."""
    k = num_classes(model)
    return {"label": k} if k is not None else {}


def preview_inputs(seed: int, latent_dim: int, model: dict[str, Any], device: torch.device,
                   n: int = PREVIEW_COUNT) -> tuple[torch.Tensor, Conditioning]:
    """Fixed inputs of the per-epoch previews: (n, latent_dim) latents from the run's seed and
    every class in turn, so that each epoch's grid shows the same draws getting better."""
    g = torch.Generator().manual_seed(seed + PREVIEW_SEED_OFFSET)
    z = torch.randn(n, latent_dim, generator=g).to(device)
    k = num_classes(model)
    return z, Conditioning(n, labels=(torch.arange(n) % k).to(device) if k else None)


class ImageFamily(FamilyImpl):
    """What the image families share: a run started from another's weights (``--init``) keeps
    its image size, and takes its classes from its own dataset."""

    init_free = ("num_classes", "conditional")

    def init_model(self, parent: dict[str, Any], fresh: dict[str, Any], parent_id: str) -> tuple[dict, list[str]]:
        if list(parent["image_shape"]) != list(fresh["image_shape"]):
            shape = lambda s: "x".join(map(str, s))  # noqa: E731
            raise ConfigError(f"--init {parent_id}: its network draws {shape(parent['image_shape'])} images (C x H x W), "
                              f"this dataset holds {shape(fresh['image_shape'])} ones; start from a run of that size")
        model, notes = super().init_model(parent, fresh, parent_id)
        was, now = num_classes(parent), num_classes(model)
        if was != now:
            if now is None:
                notes.append(f"{parent_id}'s class embeddings ({was} classes) are left out: this run is unconditional")
            elif was is None:
                notes.append(f"the class embeddings ({now} classes) start from random weights: {parent_id} is unconditional")
            else:
                notes.append(f"the class embeddings start from random weights: this dataset has {now} classes, "
                             f"{parent_id} had {was}")
        return model, notes


@dataclass(frozen=True)
class NetSpec:
    """What every family's networks are sized from."""

    image_shape: tuple[int, int, int]  # (C, H, W)
    latent_dim: int
    num_classes: int | None  # None: unconditional
    width: int  # base channel count / hidden width unit

    @classmethod
    def from_model(cls, model: dict[str, Any]) -> "NetSpec":
        """From the ``model`` section of a run's config.json."""
        return cls(
            image_shape=tuple(model["image_shape"]),
            latent_dim=model["latent_dim"],
            num_classes=model["num_classes"] if model["conditional"] else None,
            width=model["width"],
        )


def dcgan_init(module: nn.Module) -> None:
    """N(0, 0.02) weights as in Radford et al. (2016); BatchNorm scales around 1."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) and m.affine:
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def conv_stages(size: int) -> int:
    """How many x2 up/down-samplings take a square side down to a 4..7 pixel start."""
    if size < 8 or size % 4:
        raise ConfigError(
            f"convolutional models need square images whose side is a multiple of 4 and at least 8, "
            f"got {size}; use --arch mlp"
        )
    stages = 0
    while size % 2 == 0 and size // 2 >= 4:
        size //= 2
        stages += 1
    return stages


def check_square(image_shape: tuple[int, int, int]) -> int:
    c, h, w = image_shape
    if h != w:
        raise ConfigError(f"convolutional models need square images, got {h}x{w}; use --arch mlp")
    return conv_stages(h)


@torch.no_grad()
def recalibrate_batchnorm(module: nn.Module, make_input, batches: int = 8) -> None:
    """Re-estimate BatchNorm statistics for ``module``'s own weights (cumulative average).

    The averaged (EMA) weights never ran in training mode, so the statistics the raw model gathered
    do not fit them. ``make_input(i)`` returns the i-th batch of inputs as a tuple.
    """
    bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average over the batches below
    module.train()
    for i in range(batches):
        module(*make_input(i))
    module.eval()
    for m, mom in zip(bns, saved):
        m.momentum = mom


def resolve_conditional(requested: bool | None, dataset_info: dict) -> bool:
    """--conditional (True), --unconditional (False) or neither (None: conditional exactly when
    the dataset has labels)."""
    has_labels = bool(dataset_info.get("classes"))
    if requested and not has_labels:
        raise ConfigError("--conditional needs a dataset with labels; this one has none")
    return has_labels if requested is None else bool(requested)


LABEL_DIM = 32  # size of a learned label embedding joined to a conditional model's input


def label_embedding(num_classes: int | None, dim: int = LABEL_DIM) -> nn.Embedding | None:
    """A label embedding for conditional models; None for unconditional ones."""
    return nn.Embedding(num_classes, dim) if num_classes else None


def embed_labels(embed: nn.Embedding | None, h: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    """Join the embedded labels to the features ``h`` (B, F) -> (B, F + dim); ``h`` as is when unconditional."""
    if embed is None:
        return h
    return torch.cat([h, embed(labels)], dim=1)


def truncate(z: torch.Tensor, psi: float, generator: torch.Generator) -> torch.Tensor:
    """The truncation trick of BigGAN: redraw every value with |z| > psi until all lie inside."""
    if not psi > 0:
        raise OptionError("truncation", f"must be positive, got {psi}")
    z = z.clone()
    for _ in range(1000):
        bad = z.abs() > psi
        if not bad.any():
            break
        z[bad] = torch.randn(int(bad.sum()), generator=generator)
    return z.clamp_(-psi, psi)


class FeedForwardSampler(Sampler):
    """The Sampler of families that draw in one pass: GAN and VAE.

    Latents are standard normal draws from the seed, truncated first when asked; for a run with
    a fitted prior (VAE ``--prior gmm``) the prior then maps them, with one uniform draw per
    sample picking its component. The prior stays on the CPU, where latents are drawn.
    """

    def __init__(self, latent_dim: int, decoder: nn.Module, device: torch.device, model: dict[str, Any],
                 encoder: nn.Module | None = None, prior: nn.Module | None = None):
        self.latent_shape = (latent_dim,)
        self.conditions = class_conditions(model)
        self._decoder = decoder.to(device).eval()
        self._encoder = encoder.to(device).eval() if encoder is not None else None
        self.prior = prior  # (eps (n, D), u (n,)) -> codes (n, D); None: N(0, I)
        self.latent_distribution = "normal" if prior is None else "fitted-gmm"

    def draw(self, n: int, generator: torch.Generator, truncation: float | None = None) -> torch.Tensor:
        z = torch.randn(n, self.latent_shape[0], generator=generator)  # (n, D)
        if truncation is not None:
            z = truncate(z, truncation, generator)
        if self.prior is not None:
            z = self.prior.codes(z, torch.rand(n, generator=generator))
        return z

    def decoder(self) -> nn.Module:
        return self._decoder

    def encoder(self) -> nn.Module | None:
        return self._encoder


class OnePassDecoder(nn.Module, Decoder):
    """A decoder that maps (z, conditioning) to images in one network pass: ``image(z, labels)``.
    No conditioning: an unconditional draw."""

    def forward(self, z: torch.Tensor, cond: Conditioning | None = None, on_pass=None) -> torch.Tensor:
        return self.image(z, cond.labels if cond is not None else None)
