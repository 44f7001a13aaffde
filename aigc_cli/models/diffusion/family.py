"""The diffusion family's implementation: configuration, the training task and the sampler (the
options and their defaults are declared in ``__init__.py``)."""

from __future__ import annotations

import json
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from aigc_cli.core.device import autocast, resolve_precision
from aigc_cli.core.distributed import batch_rand, batch_randint, batch_randn
from aigc_cli.core.errors import ConfigError, OptionError, RunError
from aigc_cli.core.schema import Field
from aigc_cli.models.common import ImageFamily, IMAGE_FIELDS, class_conditions, image_fields, num_classes, preview_inputs
from aigc_cli.models.diffusion import DEFAULT_GUIDANCE, LAYOUTS, PREDICTIONS, WEIGHTINGS
from aigc_cli.models.diffusion.sampling import SPACINGS, DdimInverter, DiffusionDecoder, SamplingRules
from aigc_cli.models.diffusion.schedule import (BETA_END, BETA_START, SCHEDULES, TIMESTEPS, loss_weight,
                                                run_alpha_bar, target)
from aigc_cli.models.diffusion.unet import UNet
from aigc_cli.models.optim import OptimizerSpec
from aigc_cli.models.graphs import ExportGraph, GraphInput
from aigc_cli.models.protocol import Sampler, TrainTask
from aigc_cli.models.sizing import check_network

PREVIEW_STEPS = 20


def parse_mult(text: str) -> tuple[int, ...]:
    try:
        mult = tuple(int(p) for p in str(text).split(","))
    except ValueError:
        raise OptionError("channel_mult", f"must be comma-separated whole numbers such as 1,2,2, got {text!r}") from None
    if not 1 <= len(mult) <= 5 or min(mult) < 1:
        raise OptionError("channel_mult", f"must list 1 to 5 positive numbers, got {text!r}")
    return mult


# The model fields format 3 added (for diffusers' UNet2DModel and its schedulers: hub/diffusers_unet.py),
# at what every run before them did; make_config writes them so for aigc's own runs too.
UNET_FIELDS = ("norm_groups", "norm_eps", "flip_sin_to_cos", "freq_shift", "time_act", "down_attention",
               "up_attention", "mid_attention", "head_dim", "mid_scale", "down_padding", "center_input")


def aigc_defaults(levels: int) -> dict[str, Any]:
    """The format-3 model fields of aigc's own runs (and of every run of format 1 or 2)."""
    return {
        "norm_groups": None, "norm_eps": 1e-5, "flip_sin_to_cos": False, "freq_shift": 0, "time_act": False,
        "down_attention": [False] * levels, "up_attention": [False] * levels, "mid_attention": True,
        "head_dim": None, "mid_scale": 1.0, "down_padding": 1, "center_input": False,
        "beta_start": BETA_START, "beta_end": BETA_END, "spacing": "aigc", "steps_offset": 0,
        "final_alpha_one": True, "clip_x0": 1.0, "clipped_eps": True,
    }


def build_unet(model: dict[str, Any]) -> UNet:
    net = UNet(model["image_shape"][0], model["width"], tuple(model["channel_mult"]), num_classes(model),
               model["layout"], model["blocks"], **{k: model[k] for k in UNET_FIELDS})
    # Channels-last weights, as the U-Net's activations are (unet.py): same values, faster kernels.
    return net.to(memory_format=torch.channels_last)


class DiffusionTask(TrainTask):
    def __init__(self, config: dict[str, Any], device: torch.device):
        model, self.train = config["model"], config["train"]
        self.model_cfg, self.device = model, device
        self.net = build_unet(model).to(device)
        self.modules = {"unet": self.net}  # the loop adds unet_ema (param_groups)
        # The network runs under autocast, the loss and the weights stay fp32; fp16's narrow
        # range needs the loss scaled (the optimizer's GradScaler, models/optim.py).
        self.precision = resolve_precision(self.train["precision"], device)
        self.ab = run_alpha_bar(model).to(device)  # (T,)
        self.cond_drop = self.train["cond_drop"] if model["conditional"] else 0.0
        self.num_classes = num_classes(model)
        c, h, w = model["image_shape"]
        self.preview_z, self.preview_cond = preview_inputs(config["seed"], c * h * w, model, device)

    def param_groups(self) -> dict[str, OptimizerSpec]:
        return {"unet": OptimizerSpec([{"params": list(self.net.parameters()), "lr": self.train["lr"],
                                        "weight_decay": 0.0}], kind="adamw",
                                      loss_scaling=self.precision == "fp16", ema={"unet": self.train["ema_decay"]})}

    def inference_names(self) -> dict[str, str]:
        return {"unet": "unet_ema"}  # sampling uses the weight average

    def train_step(self, batch: torch.Tensor, labels: torch.Tensor | None, step: int) -> dict[str, torch.Tensor]:
        x0 = batch.float().div_(127.5).sub_(1)  # (B, C, H, W) in [-1, 1]
        b = x0.shape[0]
        # Per-sample draws of the global batch (core/distributed.py): the same with any number of ranks.
        t = batch_randint(len(self.ab), b, device=self.device)
        ab = self.ab[t]  # (B,)
        eps = batch_randn(*x0.shape, device=x0.device)
        x_t = ab.sqrt().view(-1, 1, 1, 1) * x0 + (1 - ab).sqrt().view(-1, 1, 1, 1) * eps
        if self.num_classes:
            # Label dropout: some steps learn the unconditional model that guidance needs.
            drop = batch_rand(b, device=self.device) < self.cond_drop
            labels = torch.where(drop, torch.full_like(labels, self.num_classes), labels)
        else:
            labels = None
        with autocast(self.device, self.precision):
            out = self.net(x_t, t, labels)
        goal = target(self.model_cfg["prediction"], x0, eps, ab)
        per_sample = F.mse_loss(out.float(), goal, reduction="none").mean(dim=(1, 2, 3))  # (B,)
        loss = (loss_weight(self.model_cfg["weighting"], self.model_cfg["prediction"], ab) * per_sample).mean()
        opt = self.optim["unet"]
        opt.zero_grad()
        opt.backward(loss)  # scaled under fp16
        opt.step(step)  # and the weight average
        return {"loss": loss.detach()}

    @torch.no_grad()
    def previews(self) -> dict[str, torch.Tensor]:
        guidance = DEFAULT_GUIDANCE if self.num_classes else 1.0
        decoder = DiffusionDecoder(self.modules["unet_ema"], self.ab, self.model_cfg["prediction"],
                                   self.model_cfg["image_shape"], steps=PREVIEW_STEPS, guidance=guidance,
                                   rules=SamplingRules.from_model(self.model_cfg))
        return {"samples": decoder(self.preview_z, self.preview_cond)}


class DiffusionSampler(Sampler):
    """The latent is the initial noise x_T, (C, H, W)."""

    def __init__(self, unet: nn.Module, config: dict[str, Any], device: torch.device):
        self.model = config["model"]
        self.unet = unet.to(device).eval()
        self.ab = run_alpha_bar(self.model).to(device)
        self.rules = SamplingRules.from_model(self.model)
        self.latent_shape = tuple(self.model["image_shape"])
        self.conditions = class_conditions(self.model)
        self.conditional = bool(self.conditions)

    def draw(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randn(n, math.prod(self.latent_shape), generator=generator)  # (n, C*H*W)

    def _guidance(self, guidance: float | None) -> float:
        if guidance is None:
            return DEFAULT_GUIDANCE if self.conditional else 1.0
        if not self.conditional and guidance != 1.0:
            raise ConfigError("--guidance needs a class-conditional run; this one is unconditional")
        return guidance

    def decoder(self, steps: int, sampler: str, eta: float, guidance: float | None) -> nn.Module:
        if eta and sampler != "ddim":
            raise ConfigError(f"--eta applies to --sampler ddim, not {sampler}")
        return DiffusionDecoder(self.unet, self.ab, self.model["prediction"], self.latent_shape, steps=steps,
                                sampler=sampler, eta=eta, guidance=self._guidance(guidance), rules=self.rules).eval()

    def encoder(self, steps: int, sampler: str, eta: float, guidance: float | None) -> nn.Module:
        # Inversion is exact only without guidance and noise: it ignores those decode options.
        return DdimInverter(self.unet, self.ab, self.model["prediction"], self.latent_shape, steps=steps,
                            rules=self.rules).eval()

    def export_graph(self, fmt: str) -> ExportGraph:
        if fmt != "denoiser":
            raise ConfigError(f"diffusion runs have no {fmt!r} network to export")
        return denoiser_graph(self.unet, self.model, self.ab)


class DenoiserExport(nn.Module):
    """The U-Net alone, as ``--format denoiser`` exports it: (x_t, t[, label]) -> the prediction."""


    def __init__(self, unet: nn.Module, conditional: bool):
        super().__init__()
        self.unet, self.conditional = unet, conditional

    def forward(self, x: torch.Tensor, t: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        return self.unet(x, t, label if self.conditional else None)


def denoiser_graph(unet: nn.Module, model: dict[str, Any], ab: torch.Tensor) -> ExportGraph:
    """What a user's own sampler loop needs, the way diffusers' ONNX pipelines take a U-Net: the
    network's inputs and output, and in the metadata everything to turn the output into x0 and
    eps (the prediction type and the whole alpha-bar table, not only the schedule's name)."""
    shape = tuple(model["image_shape"])
    k = model["num_classes"] if model["conditional"] else None
    total = model["timesteps"]
    inputs = [
        GraphInput("x", "float32", shape, lambda n, g: torch.randn(n, *shape, generator=g)),
        GraphInput("t", "int64", (), lambda n, g: torch.randint(0, total, (n,), generator=g),
                   {"range": [0, total - 1]}),
    ]
    if k is not None:  # label k is "no label": the unconditional half of classifier-free guidance
        inputs.append(GraphInput("label", "int64", (), lambda n, g: torch.arange(n) % (k + 1),
                                 {"classes": k, "null_label": k}))
    meta = {
        "aigc.prediction": model["prediction"],
        "aigc.schedule": model["schedule"],
        "aigc.timesteps": str(total),
        # 9 significant digits hold a float32 exactly: the very table the sampler uses.
        "aigc.alphas_cumprod": json.dumps([float(f"{v:.9g}") for v in ab.float().tolist()]),
        "aigc.x_t": "sqrt(alphas_cumprod[t]) * x0 + sqrt(1 - alphas_cumprod[t]) * eps, x0 in [-1, 1]",
    }
    if k is not None:
        meta["aigc.null_label"] = str(k)
    names = ", ".join(i.name for i in inputs)
    return ExportGraph(
        module=DenoiserExport(unet, k is not None).eval(),
        inputs=tuple(inputs),
        output="prediction",
        output_dtype="float32",
        output_shape=shape,
        summary=f"aigc diffusion U-Net: ({names}) -> the {model['prediction']} prediction",
        metadata=meta,
        atol=1e-4,  # outputs of order 1, not [0, 1] images: float32 sums over a deeper network
    )


def size_step(nets: dict[str, nn.Module], b: int, model: dict[str, Any]) -> torch.Tensor:
    """One training step's forward on made-up inputs (models/sizing.py runs it on the meta device)."""
    labels = torch.zeros(b, dtype=torch.long) if model["conditional"] else None
    return nets["unet"](torch.randn(b, *model["image_shape"]), torch.zeros(b, dtype=torch.long), labels)


class DiffusionFamily(ImageFamily):
    model_fields = (
        Field("width", int, minimum=1),
        Field("channel_mult", list, items=int, length=(1, 8), minimum=1),  # training takes up to 5 (parse_mult)
        Field("layout", str, choices=LAYOUTS),
        Field("blocks", int, minimum=1),
        Field("schedule", str, choices=SCHEDULES),
        Field("prediction", str, choices=PREDICTIONS),
        Field("weighting", str, choices=WEIGHTINGS),
        Field("timesteps", int, minimum=2),
        *IMAGE_FIELDS,
        # Format 3 (aigc_defaults): the network ...
        Field("norm_groups", int, minimum=1, optional=True),
        Field("norm_eps", float, minimum=1e-12),
        Field("flip_sin_to_cos", bool),
        Field("freq_shift", int, minimum=0),
        Field("time_act", bool),
        Field("down_attention", list, items=bool, length=(1, 8)),
        Field("up_attention", list, items=bool, length=(1, 8)),
        Field("mid_attention", bool),
        Field("head_dim", int, minimum=1, optional=True),
        Field("mid_scale", float, minimum=1e-6),
        Field("down_padding", int, choices=(0, 1)),
        Field("center_input", bool),
        # ... the schedule's betas and how the samplers step (sampling.SamplingRules)
        Field("beta_start", float, minimum=0.0, below=1.0),
        Field("beta_end", float, minimum=0.0, below=1.0),
        Field("spacing", str, choices=SPACINGS),
        Field("steps_offset", int, minimum=0),
        Field("final_alpha_one", bool),
        Field("clip_x0", float, minimum=1e-6, optional=True),
        Field("clipped_eps", bool),
    )
    train_fields = (
        Field("lr", float, minimum=0.0),
        Field("cond_drop", float, minimum=0.0, below=1.0),
        Field("ema_decay", float, minimum=0.0, below=1.0),
        Field("precision", str, choices=("auto", "fp32", "bf16", "fp16")),
    )

    def make_config(self, options: dict[str, Any], dataset_info: dict[str, Any],
                    data: Any = None) -> tuple[dict, dict]:
        mult = parse_mult(options["channel_mult"])
        model = {
            "width": options["width"],
            "channel_mult": list(mult),
            "layout": options["layout"],
            "blocks": options["blocks"],
            "schedule": options["schedule"],
            "prediction": options["prediction"],
            "weighting": options["weighting"],
            **image_fields(dataset_info, options["conditional"]),
            "timesteps": TIMESTEPS,
            **aigc_defaults(len(mult)),
        }
        train = {"lr": float(options["lr"]), "cond_drop": float(options["cond_drop"]),
                 "ema_decay": float(options["ema_decay"]), "precision": options["precision"]}
        # An impossible shape or a model too large for the device: a clean error before a run exists.
        check_network(lambda: {"unet": build_unet(model)}, lambda nets, b: size_step(nets, b, model),
                      {k: options[k] for k in ("width", "channel_mult", "blocks")}, options["precision"])
        return model, train

    def upgrade_config(self, config: dict[str, Any], version: int) -> dict[str, Any]:
        # Format 1 runs made before the options: the compact layout, one block per level, fp32.
        model = {"layout": "compact", "blocks": 1, **config["model"]}
        train = {"precision": "fp32", **config["train"]}
        # Formats 1 and 2: the fields format 3 added, at what those runs did (aigc_defaults).
        mult = model.get("channel_mult")
        model = {**aigc_defaults(len(mult) if isinstance(mult, list) else 1), **model}
        return {**config, "model": model, "train": train}

    def check_config(self, config: dict[str, Any], where: str) -> None:
        super().check_config(config, where)
        model, at = config["model"], f"{where} 'model'"
        levels = len(model["channel_mult"])
        for name in ("down_attention", "up_attention"):
            if len(model[name]) != levels:
                raise RunError(f"{at} field {name!r} must hold one entry per level of channel_mult ({levels}), "
                               f"got {len(model[name])}")
        channels = [model["width"]] + [model["width"] * m for m in model["channel_mult"]]
        if model["norm_groups"] is not None and any(c % model["norm_groups"] for c in channels):
            raise RunError(f"{at} field 'norm_groups' ({model['norm_groups']}) must divide every level's "
                           f"channels ({', '.join(map(str, channels))})")
        attended = [model["width"] * m for m, d, u in zip(model["channel_mult"], model["down_attention"],
                                                           model["up_attention"]) if d or u]
        attended += [channels[-1]] if model["mid_attention"] else []
        if model["head_dim"] is not None and any(c % model["head_dim"] for c in attended):
            raise RunError(f"{at} field 'head_dim' ({model['head_dim']}) must divide the channels of every "
                           f"level with attention ({', '.join(map(str, attended))})")

    def make_task(self, config: dict[str, Any], device: torch.device) -> DiffusionTask:
        return DiffusionTask(config, device)

    def build(self, config: dict[str, Any]) -> dict[str, nn.Module]:
        return {"unet": build_unet(config["model"])}

    def sampler(self, modules: dict[str, nn.Module], config: dict[str, Any], device: torch.device) -> DiffusionSampler:
        return DiffusionSampler(modules["unet"], config, device)

    def lora_targets(self, config: dict[str, Any]) -> dict[str, tuple[str, ...]]:
        # The attention projections and the residual blocks' convolutions (diffusers' LoRA
        # training scripts adapt attention and, for small data, convolutions too): the layers
        # that shape what the U-Net draws; the time MLP, input and output convolutions stay.
        return {"unet": ("*attn*", "*.conv1", "*.conv2")}
