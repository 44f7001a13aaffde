"""The GAN family's implementation: configuration, the training task and the sampler (the
options and their defaults are declared in ``__init__.py``)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from aigc_cli.core.distributed import batch_randn
from aigc_cli.models.common import EMA, FeedForwardSampler, recalibrate_batchnorm, resolve_conditional
from aigc_cli.models.gan.losses import LOSSES, GanLoss, gradient_penalty
from aigc_cli.models.gan.nets import ARCHS, NetSpec, build_nets
from aigc_cli.models.sizing import check_network

PREVIEW_COUNT = 64


class GanSampler(nn.Module):
    """(z, labels) -> images in [0, 1]: the contract shared by sample, interpolate, eval, export."""

    def __init__(self, generator: nn.Module):
        super().__init__()
        self.generator = generator

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return ((self.generator(z, labels) + 1) / 2).clamp(0, 1)


def param_groups(net: nn.Module, lr: float, class_scale: float | None) -> list[dict]:
    """Adam's parameter groups: the per-class tables (nn.Embedding) at ``class_scale`` times the
    learning rate, the rest at it. None (runs made before the option): one group."""
    if class_scale is None:
        return [{"params": list(net.parameters()), "lr": lr}]
    tables = {id(p) for m in net.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
    rest = [p for p in net.parameters() if id(p) not in tables]
    classes = [p for p in net.parameters() if id(p) in tables]
    return [{"params": rest, "lr": lr}, {"params": classes, "lr": lr * class_scale}]


class GanTask:
    def __init__(self, config: dict[str, Any], device: torch.device):
        model, train = config["model"], config["train"]
        self.loss: GanLoss = LOSSES.get(model["loss"])
        self.spec = NetSpec.from_model(model)
        g, d = build_nets(model["arch"], self.spec, spectral=self.loss.spectral_norm)
        # Channels-last activations let oneDNN/cuDNN pick their fastest convolution kernels
        # (about 1.2x per training step on the CPU here, benches/bench_train.py); same values.
        self.memory_format = torch.channels_last if model["arch"] == "dcgan" else torch.contiguous_format
        self.G = g.to(device, memory_format=self.memory_format)
        self.D = d.to(device, memory_format=self.memory_format)
        self.ema = EMA(self.G, train["ema_decay"])
        self.modules = {"G": self.G, "D": self.D, "G_ema": self.ema.shadow}
        betas = tuple(train["betas"])
        scale = train.get("class_lr_scale")
        self.optimizers = {
            "G": torch.optim.Adam(param_groups(self.G, train["lr"], scale), betas=betas),
            "D": torch.optim.Adam(param_groups(self.D, train["lr_d"], scale), betas=betas),
        }
        self.n_critic = train["n_critic"]
        self.updates = train.get("updates", "alternating")  # runs made before the option: alternating
        self.device = device
        self.seed = config["seed"]
        self.last_g: torch.Tensor = torch.zeros((), device=device)
        # Fixed inputs for the per-epoch preview grid: progress on the same latents is easy to watch.
        g_fixed = torch.Generator().manual_seed(self.seed + 7)
        self.preview_z = torch.randn(PREVIEW_COUNT, self.spec.latent_dim, generator=g_fixed).to(device)
        self.preview_labels = (
            (torch.arange(PREVIEW_COUNT) % self.spec.num_classes).to(device) if self.spec.num_classes else None
        )

    def _fake_labels(self, labels):
        return labels if self.spec.num_classes else None

    def train_step(self, batch: torch.Tensor, labels: torch.Tensor | None, step: int) -> dict[str, torch.Tensor]:
        real = batch.float().div_(127.5).sub_(1)  # (B, C, H, W) in [-1, 1]
        real = real.contiguous(memory_format=self.memory_format)
        labels = self._fake_labels(labels)
        g_step = (step + 1) % self.n_critic == 0  # every step for bce and hinge

        # One generator pass serves both updates.
        z = batch_randn(real.size(0), self.spec.latent_dim, device=self.device)  # (B, latent)
        with torch.set_grad_enabled(g_step):
            fake = self.G(z, labels)  # (B, C, H, W)
        if g_step and self.updates == "simultaneous":
            return self._simultaneous_step(real, fake, labels, step)

        d_loss, out = self._d_loss(real, fake.detach(), labels)
        self.optimizers["D"].zero_grad(set_to_none=True)
        d_loss.backward()
        self.optimizers["D"].step()

        if g_step:
            self.D.requires_grad_(False)
            g_loss = self.loss.g_loss(self.D(fake, labels))  # scored by the updated D
            self.optimizers["G"].zero_grad(set_to_none=True)
            g_loss.backward()
            self.optimizers["G"].step()
            self.D.requires_grad_(True)
            self._after_g_step(g_loss, step)
        out["g_loss"] = self.last_g
        return out

    def _d_loss(self, real, fake, labels) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        # Real and fake (detached) in one batched pass: D has no BatchNorm, so this is the same
        # function as two passes, with half the per-layer overhead.
        b = real.size(0)
        pair_labels = torch.cat([labels, labels]) if labels is not None else None
        scores = self.D(torch.cat([real, fake]), pair_labels)  # (2B,)
        return self._d_objective(scores[:b], scores[b:], real, fake, labels)

    def _d_objective(self, real_scores, fake_scores, real, fake, labels) -> tuple[torch.Tensor, dict]:
        """D's loss with the gradient penalty if the loss has one, and what to log of it."""
        d_loss = self.loss.d_loss(real_scores, fake_scores)
        out = {"d_loss": d_loss.detach()}
        if self.loss.gradient_penalty:
            gp = gradient_penalty(self.D, real, fake.detach(), labels)
            d_loss = d_loss + self.loss.gradient_penalty * gp
            out["gp"] = gp.detach()
        return d_loss, out

    def _simultaneous_step(self, real, fake, labels, step) -> dict[str, torch.Tensor]:
        # D scores the fake batch once, not detached: backpropagating d_loss into D's weights and
        # g_loss into G's weights through that one graph saves the second D pass over the fakes
        # that alternating updates need. Real and fake go through D separately here, since a
        # batched pass would make g_loss's backward compute input gradients for the real half
        # too; cached() evaluates the spectral norms once for both passes, as one batch would.
        with parametrize.cached():
            real_scores, fake_scores = self.D(real, labels), self.D(fake, labels)  # (B,), (B,)
        d_loss, out = self._d_objective(real_scores, fake_scores, real, fake, labels)
        g_loss = self.loss.g_loss(fake_scores)
        self.optimizers["D"].zero_grad(set_to_none=True)
        self.optimizers["G"].zero_grad(set_to_none=True)
        d_loss.backward(inputs=list(self.D.parameters()), retain_graph=True)  # D's weights only
        g_loss.backward(inputs=list(self.G.parameters()))  # through D's input gradients, not its weights
        self.optimizers["D"].step()
        self.optimizers["G"].step()
        self._after_g_step(g_loss, step)
        out["g_loss"] = self.last_g
        return out

    def _after_g_step(self, g_loss, step) -> None:
        self.ema.update(self.G, step // self.n_critic)
        self.last_g = g_loss.detach()

    def sync_inference(self, images: torch.Tensor, labels: torch.Tensor | None) -> None:
        # BatchNorm statistics that fit the averaged weights, from a fixed stream of latents.
        gen = torch.Generator().manual_seed(self.seed + 11)
        k = self.spec.num_classes

        def batch(i):
            z = torch.randn(256, self.spec.latent_dim, generator=gen).to(self.device)
            y = (torch.arange(256) % k).to(self.device) if k else None
            return z, y

        recalibrate_batchnorm(self.ema.shadow, batch)

    def inference_modules(self) -> dict[str, nn.Module]:
        return {"G": self.ema.shadow}

    @torch.no_grad()
    def previews(self) -> dict[str, torch.Tensor]:
        return {"samples": GanSampler(self.ema.shadow)(self.preview_z, self.preview_labels)}


def size_step(nets: dict[str, nn.Module], b: int, spec: NetSpec) -> torch.Tensor:
    """One training step's passes on made-up inputs (models/sizing.py runs it on the meta device)."""
    labels = torch.zeros(b, dtype=torch.long) if spec.num_classes else None
    fake = nets["G"](torch.randn(b, spec.latent_dim), labels)  # (B, C, H, W)
    pair = torch.cat([labels, labels]) if labels is not None else None
    return nets["D"](torch.cat([torch.randn(b, *spec.image_shape), fake]), pair)  # (2B,)


class GanFamily:
    @staticmethod
    def make_config(options: dict[str, Any], dataset_info: dict[str, Any]) -> tuple[dict, dict]:
        """The (model, train) sections of config.json from the resolved options."""
        loss = LOSSES.get(options["loss"])
        lr = options["lr"] if options["lr"] is not None else loss.lr
        model = {
            "arch": options["arch"],
            "loss": loss.name,
            "latent_dim": options["latent_dim"],
            "width": options["width"],
            "image_shape": list(dataset_info["shape"]),
            "num_classes": dataset_info.get("classes"),
            "conditional": resolve_conditional(options["conditional"], dataset_info),
        }
        train = {
            "lr": float(lr),
            "lr_d": float(options["lr_d"] if options["lr_d"] is not None else lr),
            "betas": list(loss.betas),
            "n_critic": loss.n_critic,
            "ema_decay": float(options["ema_decay"]),
            "class_lr_scale": float(options["class_lr_scale"]),
            "updates": options["updates"],
        }
        # An impossible shape or a model too large for the device: a clean error before a run exists.
        # Without spectral norm: it changes no shape nor parameter, and its power iterations on meta take seconds.
        spec = NetSpec.from_model(model)
        check_network(lambda: dict(zip("GD", build_nets(model["arch"], spec, spectral=False))),
                      lambda nets, b: size_step(nets, b, spec), {k: model[k] for k in ("width", "latent_dim")})
        return model, train

    @staticmethod
    def make_task(config: dict[str, Any], device: torch.device) -> GanTask:
        return GanTask(config, device)

    @staticmethod
    def build(config: dict[str, Any]) -> dict[str, nn.Module]:
        g, _ = ARCHS.get(config["model"]["arch"])(NetSpec.from_model(config["model"]))
        return {"G": g}

    @staticmethod
    def sampler(modules: dict[str, nn.Module], config: dict[str, Any], device: torch.device) -> FeedForwardSampler:
        return FeedForwardSampler(config["model"]["latent_dim"], GanSampler(modules["G"]), device)
