"""The GAN family's implementation: configuration, the training task and the sampler (the
options and their defaults are declared in ``__init__.py``)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from aigc_cli.core.distributed import batch_randn
from aigc_cli.core.schema import Field
from aigc_cli.models.common import ImageFamily, IMAGE_FIELDS, FeedForwardSampler, OnePassDecoder, image_fields, preview_inputs, recalibrate_batchnorm
from aigc_cli.models.gan.losses import LOSSES, GanLoss, gradient_penalty
from aigc_cli.models.gan.nets import ARCHS, NetSpec, build_nets
from aigc_cli.models.optim import OptimizerSpec
from aigc_cli.models.protocol import TrainTask
from aigc_cli.models.sizing import check_network


class GanSampler(OnePassDecoder):
    """(z, conditioning) -> images in [0, 1]: the contract shared by sample, interpolate, eval, export."""

    def __init__(self, generator: nn.Module):
        super().__init__()
        self.generator = generator

    def image(self, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        return ((self.generator(z, labels) + 1) / 2).clamp(0, 1)


def adam_groups(net: nn.Module, lr: float, class_scale: float | None) -> list[dict]:
    """Adam's parameter groups: the per-class tables (nn.Embedding) at ``class_scale`` times the
    learning rate, the rest at it. None (runs made before the option): one group."""
    if class_scale is None:
        return [{"params": list(net.parameters()), "lr": lr}]
    tables = {id(p) for m in net.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
    rest = [p for p in net.parameters() if id(p) not in tables]
    classes = [p for p in net.parameters() if id(p) in tables]
    return [{"params": rest, "lr": lr}, {"params": classes, "lr": lr * class_scale}]


class GanTask(TrainTask):
    def __init__(self, config: dict[str, Any], device: torch.device):
        model, self.train = config["model"], config["train"]
        self.loss: GanLoss = LOSSES.get(model["loss"])
        self.spec = NetSpec.from_model(model)
        g, d = build_nets(model["arch"], self.spec, spectral=self.loss.spectral_norm)
        # Channels-last activations let oneDNN/cuDNN pick their fastest convolution kernels
        # (about 1.2x per training step on the CPU here, benches/bench_train.py); same values.
        self.memory_format = torch.channels_last if model["arch"] == "dcgan" else torch.contiguous_format
        self.G = g.to(device, memory_format=self.memory_format)
        self.D = d.to(device, memory_format=self.memory_format)
        self.modules = {"G": self.G, "D": self.D}  # the loop adds G_ema (param_groups)
        self.n_critic = self.train["n_critic"]
        self.updates = self.train["updates"]
        self.device = device
        self.seed = config["seed"]
        self.last_g: torch.Tensor = torch.zeros((), device=device)
        # Fixed inputs for the per-epoch preview grid: progress on the same latents is easy to watch.
        self.preview_z, self.preview_cond = preview_inputs(self.seed, self.spec.latent_dim, model, device)

    def param_groups(self) -> dict[str, OptimizerSpec]:
        t, betas = self.train, tuple(self.train["betas"])
        return {
            "G": OptimizerSpec(adam_groups(self.G, t["lr"], t["class_lr_scale"]), betas=betas,
                               ema={"G": t["ema_decay"]}),
            "D": OptimizerSpec(adam_groups(self.D, t["lr_d"], t["class_lr_scale"]), betas=betas),
        }

    def inference_names(self) -> dict[str, str]:
        return {"G": "G_ema"}  # sampling uses the weight average

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
        self.optim["D"].zero_grad()
        self.optim["D"].backward(d_loss)
        self.optim["D"].step(step)

        if g_step:
            self.D.requires_grad_(False)
            g_loss = self.loss.g_loss(self.D(fake, labels))  # scored by the updated D
            self.optim["G"].zero_grad()
            self.optim["G"].backward(g_loss)
            self.optim["G"].step(step // self.n_critic)  # G's own step count: its weight average's warm-up
            self.D.requires_grad_(True)
            self.last_g = g_loss.detach()
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
        self.optim["D"].zero_grad()
        self.optim["G"].zero_grad()
        d_params = [p for p in self.D.parameters() if p.requires_grad]
        g_params = [p for p in self.G.parameters() if p.requires_grad]
        self.optim["D"].backward(d_loss, inputs=d_params, retain_graph=True)  # D's weights only
        self.optim["G"].backward(g_loss, inputs=g_params)  # through D's input gradients, not its weights
        self.optim["D"].step(step)
        self.optim["G"].step(step // self.n_critic)
        self.last_g = g_loss.detach()
        out["g_loss"] = self.last_g
        return out

    def sync_inference(self, images: torch.Tensor, labels: torch.Tensor | None) -> None:
        # BatchNorm statistics that fit the averaged weights, from a fixed stream of latents.
        gen = torch.Generator().manual_seed(self.seed + 11)
        k = self.spec.num_classes

        def batch(i):
            z = torch.randn(256, self.spec.latent_dim, generator=gen).to(self.device)
            y = (torch.arange(256) % k).to(self.device) if k else None
            return z, y

        recalibrate_batchnorm(self.modules["G_ema"], batch)

    @torch.no_grad()
    def previews(self) -> dict[str, torch.Tensor]:
        return {"samples": GanSampler(self.modules["G_ema"])(self.preview_z, self.preview_cond)}


def size_step(nets: dict[str, nn.Module], b: int, spec: NetSpec) -> torch.Tensor:
    """One training step's passes on made-up inputs (models/sizing.py runs it on the meta device)."""
    labels = torch.zeros(b, dtype=torch.long) if spec.num_classes else None
    fake = nets["G"](torch.randn(b, spec.latent_dim), labels)  # (B, C, H, W)
    pair = torch.cat([labels, labels]) if labels is not None else None
    return nets["D"](torch.cat([torch.randn(b, *spec.image_shape), fake]), pair)  # (2B,)


class GanFamily(ImageFamily):
    model_fields = (
        Field("arch", str, choices=tuple(ARCHS.names())),
        Field("loss", str, choices=tuple(LOSSES.names())),
        Field("latent_dim", int, minimum=1),
        Field("width", int, minimum=1),
        *IMAGE_FIELDS,
    )
    train_fields = (
        Field("lr", float, minimum=0.0),
        Field("lr_d", float, minimum=0.0),
        Field("betas", list, items=float, length=(2, 2), minimum=0.0, maximum=1.0),
        Field("n_critic", int, minimum=1),
        Field("ema_decay", float, minimum=0.0, below=1.0),
        Field("class_lr_scale", float, minimum=0.0, optional=True),
        Field("updates", str, choices=("alternating", "simultaneous")),
    )

    def make_config(self, options: dict[str, Any], dataset_info: dict[str, Any],
                    data: Any = None) -> tuple[dict, dict]:
        """The (model, train) sections of config.json from the resolved options."""
        loss = LOSSES.get(options["loss"])
        lr = options["lr"] if options["lr"] is not None else loss.lr
        model = {
            "arch": options["arch"],
            "loss": loss.name,
            "latent_dim": options["latent_dim"],
            "width": options["width"],
            **image_fields(dataset_info, options["conditional"]),
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

    def upgrade_config(self, config: dict[str, Any], version: int) -> dict[str, Any]:
        # Format 1 runs made before the options: alternating updates, one Adam group per network.
        train = {"updates": "alternating", "class_lr_scale": None, **config["train"]}
        return {**config, "train": train}

    def make_task(self, config: dict[str, Any], device: torch.device) -> GanTask:
        return GanTask(config, device)

    def build(self, config: dict[str, Any]) -> dict[str, nn.Module]:
        g, _ = ARCHS.get(config["model"]["arch"])(NetSpec.from_model(config["model"]))
        return {"G": g}

    def sampler(self, modules: dict[str, nn.Module], config: dict[str, Any], device: torch.device) -> FeedForwardSampler:
        return FeedForwardSampler(config["model"]["latent_dim"], GanSampler(modules["G"]), device, config["model"])
