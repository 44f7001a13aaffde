"""The VAE family (Kingma & Welling, 2014; beta-VAE of Higgins et al., 2017): configuration,
the training task, the sampler (prior latents -> mean images) and the encoder (images -> latents).
The options and their defaults are declared in ``__init__.py``."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from aigc_cli.core.distributed import batch_randn
from aigc_cli.core.images import interleave_rows
from aigc_cli.core.schema import Field
from aigc_cli.models.common import ImageFamily, IMAGE_FIELDS, FeedForwardSampler, OnePassDecoder, image_fields, preview_inputs
from aigc_cli.models.conditions import Conditioning
from aigc_cli.models.optim import OptimizerSpec
from aigc_cli.models.protocol import TrainTask
from aigc_cli.models.sizing import check_network
from aigc_cli.models.vae.likelihoods import LIKELIHOODS, Likelihood, default_likelihood, gaussian_kl
from aigc_cli.models.vae.nets import ARCHS, VaeSpec, build_nets
from aigc_cli.models.vae.prior import MAX_FIT_POINTS, GmmPrior, components_for, fit_subset


class VaeSampler(OnePassDecoder):
    """(z, conditioning) -> the decoder's mean image in [0, 1]: the contract of sample and interpolate."""

    def __init__(self, decoder: nn.Module, likelihood: Likelihood):
        super().__init__()
        self.decoder = decoder
        self.likelihood = likelihood

    def image(self, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        return self.likelihood.mean(self.decoder(z, labels)).clamp(0, 1)


class VaeEncoder(nn.Module):
    """(x (B, C, H, W) in [0, 1], conditioning) -> the posterior mean (B, latent): a point to decode."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, x: torch.Tensor, cond: Conditioning | None = None) -> torch.Tensor:
        mu, _ = self.encoder(x, cond.labels if cond is not None else None)
        return mu


class PreviewBank(nn.Module):
    """The first real images the run trained on, kept (and checkpointed) so every epoch's
    reconstruction grid shows the same images, resumed runs included."""

    def __init__(self, n: int, image_shape: tuple[int, int, int]):
        super().__init__()
        self.register_buffer("images", torch.zeros(n, *image_shape, dtype=torch.uint8))
        self.register_buffer("labels", torch.zeros(n, dtype=torch.int64))
        self.register_buffer("filled", torch.zeros((), dtype=torch.uint8))

    @torch.no_grad()
    def offer(self, batch: torch.Tensor, labels: torch.Tensor | None) -> None:
        if int(self.filled):
            return
        n = self.images.shape[0]
        self.images.copy_(batch[:n])
        if labels is not None:
            self.labels.copy_(labels[:n])
        self.filled.fill_(1)


def reconstruction_rows(batch_size: int) -> tuple[int, int]:
    """(images per row, images kept) for the reconstruction preview: rows of originals alternate
    with rows of their reconstructions in a square grid (the trainer's grids are square)."""
    for r in (8, 6, 4, 2):
        if r * r // 2 <= batch_size:
            return r, r * r // 2
    # A batch of 1 has no square: its one image, then its reconstruction (side by side, as
    # the trainer's grid puts 2 images in one row).
    return 1, 1


def build_prior(model: dict[str, Any]) -> GmmPrior | None:
    if model["prior"] != "gmm":
        return None
    return GmmPrior(int(model["prior_components"]), int(model["latent_dim"]))


class VaeTask(TrainTask):
    def __init__(self, config: dict[str, Any], device: torch.device):
        model, train = config["model"], config["train"]
        self.lr, self.betas = train["lr"], tuple(train["betas"])
        self.spec = VaeSpec.from_model(model)
        self.likelihood: Likelihood = LIKELIHOODS.get(model["likelihood"])
        self.beta = float(model["beta"])
        enc, dec = build_nets(model["arch"], self.spec)
        self.E, self.D = enc.to(device), dec.to(device)
        self.per_row, kept = reconstruction_rows(train["batch_size"])
        self.bank = PreviewBank(kept, self.spec.image_shape).to(device)
        self.modules = {"encoder": self.E, "decoder": self.D, "preview_bank": self.bank}
        # Derived from the weights and the data at every save, so not part of the checkpoint.
        self.prior = build_prior(model)
        if self.prior is not None:
            self.prior.to(device)
        self.seed = config["seed"]
        steps_per_epoch = max(1, config["dataset"]["size"] // train["batch_size"])
        self.warmup_steps = int(math.ceil(train["kl_warmup"] * steps_per_epoch))
        self.device = device
        self.preview_z, self.preview_cond = preview_inputs(self.seed, self.spec.latent_dim, model, device)
        # The mixture components of the preview draws: the next draws of the same generator.
        g = torch.Generator().manual_seed(self.seed + 7)
        torch.randn(len(self.preview_z), self.spec.latent_dim, generator=g)
        self.preview_u = torch.rand(len(self.preview_z), generator=g)

    def param_groups(self) -> dict[str, OptimizerSpec]:
        params = list(self.E.parameters()) + list(self.D.parameters())
        return {"vae": OptimizerSpec([{"params": params, "lr": self.lr}], betas=self.betas)}

    def inference_names(self) -> dict[str, str]:
        return {"encoder": "encoder", "decoder": "decoder"}

    def kl_weight(self, step: int) -> float:
        if self.warmup_steps and step < self.warmup_steps:
            return self.beta * (step + 1) / self.warmup_steps
        return self.beta

    def train_step(self, batch: torch.Tensor, labels: torch.Tensor | None, step: int) -> dict[str, torch.Tensor]:
        self.bank.offer(batch, labels)
        labels = labels if self.spec.num_classes else None
        self.E.train()
        self.D.train()
        x = batch.float().div_(255)  # (B, C, H, W) in [0, 1]
        mu, logvar = self.E(x, labels)
        eps = batch_randn(*mu.shape, device=mu.device, dtype=mu.dtype)  # (B, latent)
        z = mu + eps * (0.5 * logvar).exp()  # the reparameterisation trick
        recon = self.likelihood.nll(self.D(z, labels), x).mean()
        kl = gaussian_kl(mu, logvar).mean()
        loss = recon + self.kl_weight(step) * kl
        opt = self.optim["vae"]
        opt.zero_grad()
        opt.backward(loss)
        opt.step(step)
        # "loss" is the negative ELBO (nats per image) whatever beta: comparable across runs.
        return {"recon": recon.detach(), "kl": kl.detach(), "loss": (recon + kl).detach()}

    @torch.no_grad()
    def sync_inference(self, images: torch.Tensor, labels: torch.Tensor | None) -> None:
        """Refit the prior to the posterior means of (up to MAX_FIT_POINTS) training images."""
        if self.prior is None:
            return
        keep = fit_subset(len(images), self.seed)
        if keep is not None:
            keep = keep.to(images.device)
            images, labels = images[keep], (labels[keep] if labels is not None else None)
        labels = labels if self.spec.num_classes else None
        self.E.eval()
        encode = VaeEncoder(self.E)
        device = next(self.E.parameters()).device  # a memory-mapped dataset stays on the CPU (training/loop.py)
        codes = torch.cat([
            encode(images[i : i + 500].to(device).float() / 255,
                   Conditioning(len(images[i : i + 500]),
                                labels=labels[i : i + 500].to(device) if labels is not None else None))
            for i in range(0, len(images), 500)
        ])  # (N, latent)
        self.prior.fit(codes, self.seed)

    def inference_modules(self) -> dict[str, nn.Module]:
        modules = super().inference_modules()
        if self.prior is not None:
            modules["prior"] = self.prior  # fitted at every save, not trained: no training module
        return modules

    @torch.no_grad()
    def previews(self) -> dict[str, torch.Tensor]:
        self.E.eval()
        self.D.eval()
        z = self.prior.codes(self.preview_z, self.preview_u) if self.prior is not None else self.preview_z
        samples = VaeSampler(self.D, self.likelihood)(z, self.preview_cond)
        real = self.bank.images.float() / 255
        cond = Conditioning(len(real), labels=self.bank.labels if self.spec.num_classes else None)
        recon = VaeSampler(self.D, self.likelihood)(VaeEncoder(self.E)(real, cond), cond)
        return {"samples": samples, "reconstructions": interleave_rows(real, recon, self.per_row)}


def size_step(nets: dict[str, nn.Module], b: int, spec: VaeSpec) -> torch.Tensor:
    """One training step's passes on made-up inputs (models/sizing.py runs it on the meta device)."""
    labels = torch.zeros(b, dtype=torch.long) if spec.num_classes else None
    mu, _ = nets["E"](torch.rand(b, *spec.image_shape), labels)  # (B, latent)
    return nets["D"](mu, labels)  # (B, C, H, W)


class VaeFamily(ImageFamily):
    model_fields = (
        Field("arch", str, choices=tuple(ARCHS.names())),
        Field("likelihood", str, choices=tuple(LIKELIHOODS.names())),
        Field("latent_dim", int, minimum=1),
        Field("width", int, minimum=1),
        Field("beta", float, minimum=0.0),
        Field("prior", str, choices=("gmm", "standard")),
        Field("prior_components", int, minimum=0),
        *IMAGE_FIELDS,
    )
    train_fields = (
        Field("lr", float, minimum=0.0),
        Field("betas", list, items=float, length=(2, 2), minimum=0.0, maximum=1.0),
        Field("kl_warmup", float, minimum=0.0),
    )

    def make_config(self, options: dict[str, Any], dataset_info: dict[str, Any],
                    data: Any = None) -> tuple[dict, dict]:
        """The (model, train) sections of config.json from the resolved options."""
        likelihood = options["likelihood"]
        if likelihood == "auto":
            likelihood = default_likelihood(dataset_info)
        prior = options["prior"]
        model = {
            "arch": options["arch"],
            "likelihood": likelihood,
            "latent_dim": options["latent_dim"],
            "width": options["width"],
            "beta": float(options["beta"]),
            **image_fields(dataset_info, bool(options["conditional"])),
            "prior": prior,
            "prior_components": components_for(int(dataset_info.get("size", MAX_FIT_POINTS))) if prior == "gmm" else 0,
        }
        train = {"lr": float(options["lr"]), "betas": [0.9, 0.999], "kl_warmup": float(options["kl_warmup"])}
        # An impossible shape or a model too large for the device: a clean error before a run exists.
        spec = VaeSpec.from_model(model)
        check_network(lambda: dict(zip("ED", build_nets(model["arch"], spec))),
                      lambda nets, b: size_step(nets, b, spec), {k: model[k] for k in ("width", "latent_dim")})
        return model, train

    def upgrade_config(self, config: dict[str, Any], version: int) -> dict[str, Any]:
        # Format 1 runs made before priors existed sample from N(0, I), as they always did.
        model = {"prior": "standard", "prior_components": 0, **config["model"]}
        return {**config, "model": model}

    def make_task(self, config: dict[str, Any], device: torch.device) -> VaeTask:
        return VaeTask(config, device)

    def build(self, config: dict[str, Any]) -> dict[str, nn.Module]:
        enc, dec = build_nets(config["model"]["arch"], VaeSpec.from_model(config["model"]))
        modules = {"encoder": enc, "decoder": dec}
        prior = build_prior(config["model"])
        if prior is not None:
            modules["prior"] = prior
        return modules

    def sampler(self, modules: dict[str, nn.Module], config: dict[str, Any], device: torch.device) -> FeedForwardSampler:
        """Prior latents -> the decoder's mean images; the encoder's posterior means map images back.
        Runs with a fitted prior draw from it; without one (--prior standard): N(0, I)."""
        decoder = VaeSampler(modules["decoder"], LIKELIHOODS.get(config["model"]["likelihood"]))
        return FeedForwardSampler(config["model"]["latent_dim"], decoder, device, config["model"],
                                  encoder=VaeEncoder(modules["encoder"]), prior=modules.get("prior"))
