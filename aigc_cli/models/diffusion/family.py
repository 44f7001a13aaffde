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
from aigc_cli.models.captions import LEARNED, encoder_section
from aigc_cli.models.captions.build import build_encoder, tokenizer_only
from aigc_cli.models.captions.encoders import TextEncoder, check_text_section
from aigc_cli.models.common import (ImageFamily, IMAGE_FIELDS, CaptionedImages, class_conditions, image_fields,
                                    num_classes, preview_inputs)
from aigc_cli.models.conditions import Conditioning
from aigc_cli.models.diffusion import (CAPTION_GUIDANCE, CAPTION_WEIGHTING, DEFAULT_GUIDANCE, DEFAULT_WEIGHTING, LAYOUTS,
                                      PREDICTIONS, WEIGHTINGS)
from aigc_cli.models.diffusion.sampling import SPACINGS, DdimInverter, DiffusionDecoder, SamplingRules
from aigc_cli.models.diffusion.schedule import (BETA_END, BETA_START, SCHEDULES, TIMESTEPS, loss_weight,
                                                run_alpha_bar, target)
from aigc_cli.models.diffusion.unet import UNet
from aigc_cli.models.optim import OptimizerSpec
from aigc_cli.models.graphs import ExportGraph, GraphInput
from aigc_cli.models.protocol import Sampler, TrainingData, TrainTask
from aigc_cli.models.sizing import check_network

PREVIEW_STEPS = 20
PREVIEW_PROMPTS = 16  # a captioned run's previews: this many of its captions, PREVIEW_COUNT // this images each
CROSS_ATTENTION_BELOW = 32  # captioned runs attend to the caption at the levels of at most 16x16 (and the middle)


def cross_attention_levels(image_shape, levels: int) -> list[bool]:
    """Which U-Net levels of a captioned run attend to the caption: those at 16x16 or coarser.
    Attention over a 32x32 level's 1,024 positions costs more than it helps (docs/text-to-image.md);
    where a shape sits and what it is is decided at the coarse levels."""
    side = max(image_shape[1:])
    return [side // 2**i < CROSS_ATTENTION_BELOW for i in range(levels)]


def default_guidance(model: dict[str, Any]) -> float:
    """The guidance previews and samplers use when none is given: CAPTION_GUIDANCE for a captioned
    run, DEFAULT_GUIDANCE for a class-conditional one, 1 (none) for an unconditional one."""
    if model.get("text"):
        return CAPTION_GUIDANCE
    return DEFAULT_GUIDANCE if num_classes(model) else 1.0


def preview_prompts(captions: list[str], n: int = PREVIEW_PROMPTS) -> list[str]:
    """``n`` distinct non-empty captions of the dataset, picked by a fixed seed from the sorted
    set: the prompts every epoch's previews draw (and ``sample``'s defaults)."""
    distinct = sorted({c for c in captions if c})
    order = torch.randperm(len(distinct), generator=torch.Generator().manual_seed(0)).tolist()
    return [distinct[i] for i in order[:n]]


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
    text = model.get("text")
    net = UNet(model["image_shape"][0], model["width"], tuple(model["channel_mult"]), num_classes(model),
               model["layout"], model["blocks"], **{k: model[k] for k in UNET_FIELDS},
               context_dim=text["dim"] if text else None, cross_attention=model.get("cross_attention"))
    # Channels-last weights, as the U-Net's activations are (unet.py): same values, faster kernels.
    return net.to(memory_format=torch.channels_last)


class DiffusionTask(TrainTask):
    def __init__(self, config: dict[str, Any], device: torch.device):
        model, self.train = config["model"], config["train"]
        self.model_cfg, self.device = model, device
        self.net = build_unet(model).to(device)
        self.modules = {"unet": self.net}  # the loop adds unet_ema (param_groups)
        self.text: TextEncoder | None = None
        if model.get("text"):  # a captioned run: its text encoder is a module of the run
            self.text = build_encoder(model["text"]).to(device)
            self.modules["text"] = self.text
            if not self.text.trainable:
                self.text.eval().requires_grad_(False)
            null_ids, null_mask = self.text.tokenize([""])  # caption dropout trains the empty caption
            self.null_ids, self.null_mask = null_ids.to(device), null_mask.to(device)
        # The network runs under autocast, the loss and the weights stay fp32; fp16's narrow
        # range needs the loss scaled (the optimizer's GradScaler, models/optim.py).
        self.precision = resolve_precision(self.train["precision"], device)
        self.ab = run_alpha_bar(model).to(device)  # (T,)
        self.cond_drop = self.train["cond_drop"] if model["conditional"] or self.text is not None else 0.0
        self.num_classes = num_classes(model)
        c, h, w = model["image_shape"]
        self.preview_z, self.preview_cond = preview_inputs(config["seed"], c * h * w, model, device)
        if self.text is not None:
            prompts = model["text"]["prompts"]
            each = len(self.preview_z) // len(prompts)
            self.preview_z = self.preview_z[: each * len(prompts)]
            self.preview_cond = Conditioning(len(self.preview_z), prompts=tuple(p for p in prompts for _ in range(each)))

    def param_groups(self) -> dict[str, OptimizerSpec]:
        params, ema = list(self.net.parameters()), {"unet": self.train["ema_decay"]}
        if self.text is not None and self.text.trainable:  # the learned encoder trains with the U-Net
            params += list(self.text.parameters())
            ema["text"] = self.train["ema_decay"]
        return {"unet": OptimizerSpec([{"params": params, "lr": self.train["lr"], "weight_decay": 0.0}],
                                      kind="adamw", loss_scaling=self.precision == "fp16", ema=ema)}

    def inference_names(self) -> dict[str, str]:
        names = {"unet": "unet_ema"}  # sampling uses the weight average
        if self.text is not None:
            names["text"] = "text_ema" if self.text.trainable else "text"
        return names

    def caption_states(self, ids: torch.Tensor, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch's captions, (B, L) token ids with -1 for padding (``training_data``), some
        dropped to the empty caption -> (states (B, L', D), mask (B, L')), L' the batch's longest."""
        mask = ids >= 0
        ids = ids.clamp(min=0).long()
        drop = batch_rand(b, device=self.device) < self.cond_drop
        null_ids, null_mask = self.null_ids[:, : ids.shape[1]], self.null_mask[:, : ids.shape[1]]
        ids = torch.where(drop[:, None], null_ids, ids)
        mask = torch.where(drop[:, None], null_mask, mask)
        used = int(mask.any(0).nonzero().max()) + 1  # padding no row needs is not computed
        ids, mask = ids[:, :used], mask[:, :used]
        if self.text.trainable:
            return self.text(ids, mask), mask
        with torch.no_grad():
            return self.text(ids, mask), mask

    def train_step(self, batch: torch.Tensor, labels: torch.Tensor | None, step: int) -> dict[str, torch.Tensor]:
        x0 = batch.float().div_(127.5).sub_(1)  # (B, C, H, W) in [-1, 1]
        b = x0.shape[0]
        # Per-sample draws of the global batch (core/distributed.py): the same with any number of ranks.
        t = batch_randint(len(self.ab), b, device=self.device)
        ab = self.ab[t]  # (B,)
        eps = batch_randn(*x0.shape, device=x0.device)
        x_t = ab.sqrt().view(-1, 1, 1, 1) * x0 + (1 - ab).sqrt().view(-1, 1, 1, 1) * eps
        given: dict[str, Any] = {}
        if self.text is not None:  # ``labels`` holds the captions' token ids
            with autocast(self.device, self.precision):
                given["text"] = self.caption_states(labels, b)
        elif self.num_classes:
            # Label dropout: some steps learn the unconditional model that guidance needs.
            drop = batch_rand(b, device=self.device) < self.cond_drop
            given["labels"] = torch.where(drop, torch.full_like(labels, self.num_classes), labels)
        with autocast(self.device, self.precision):
            out = self.net(x_t, t, **given)
        goal = target(self.model_cfg["prediction"], x0, eps, ab)
        per_sample = F.mse_loss(out.float(), goal, reduction="none").mean(dim=(1, 2, 3))  # (B,)
        loss = (loss_weight(self.model_cfg["weighting"], self.model_cfg["prediction"], ab) * per_sample).mean()
        opt = self.optim["unet"]
        opt.zero_grad()
        opt.backward(loss)  # scaled under fp16
        opt.step(step)  # and the weight average
        return {"loss": loss.detach()}

    @torch.no_grad()
    def previews(self) -> dict[str, torch.Tensor | CaptionedImages]:
        guidance = default_guidance(self.model_cfg)
        text = self.modules[self.inference_names()["text"]] if self.text is not None else None
        decoder = DiffusionDecoder(self.modules["unet_ema"], self.ab, self.model_cfg["prediction"],
                                   self.model_cfg["image_shape"], steps=PREVIEW_STEPS, guidance=guidance,
                                   rules=SamplingRules.from_model(self.model_cfg), text=text)
        images = decoder(self.preview_z, self.preview_cond)
        if self.text is not None:  # each image with its prompt written under it
            return {"samples": CaptionedImages(images, self.preview_cond.prompts)}
        return {"samples": images}


class DiffusionSampler(Sampler):
    """The latent is the initial noise x_T, (C, H, W)."""

    def __init__(self, unet: nn.Module, config: dict[str, Any], device: torch.device, text: nn.Module | None = None):
        self.model = config["model"]
        self.unet = unet.to(device).eval()
        self.text = text.to(device).eval() if text is not None else None
        self.ab = run_alpha_bar(self.model).to(device)
        self.rules = SamplingRules.from_model(self.model)
        self.latent_shape = tuple(self.model["image_shape"])
        self.conditions = caption_conditions(self.model) if text is not None else class_conditions(self.model)
        self.conditional = bool(self.conditions)

    def draw(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randn(n, math.prod(self.latent_shape), generator=generator)  # (n, C*H*W)

    def _guidance(self, guidance: float | None) -> float:
        if guidance is None:
            return default_guidance(self.model)
        if not self.conditional and guidance != 1.0:
            raise ConfigError("--guidance needs a class-conditional or captioned run; this one is unconditional")
        return guidance

    def decoder(self, steps: int, sampler: str, eta: float, guidance: float | None) -> nn.Module:
        if eta and sampler != "ddim":
            raise ConfigError(f"--eta applies to --sampler ddim, not {sampler}")
        return DiffusionDecoder(self.unet, self.ab, self.model["prediction"], self.latent_shape, steps=steps,
                                sampler=sampler, eta=eta, guidance=self._guidance(guidance), rules=self.rules,
                                text=self.text).eval()

    def encoder(self, steps: int, sampler: str, eta: float, guidance: float | None) -> nn.Module:
        # Inversion is exact only without guidance and noise: it ignores those decode options.
        return DdimInverter(self.unet, self.ab, self.model["prediction"], self.latent_shape, steps=steps,
                            rules=self.rules, text=self.text).eval()

    def export_graph(self, fmt: str) -> ExportGraph:
        if fmt == "text-encoder":
            if self.text is None:
                raise ConfigError("--format text-encoder needs a captioned run; this one has no text encoder")
            return text_encoder_graph(self.text, self.model)
        if fmt != "denoiser":
            raise ConfigError(f"diffusion runs have no {fmt!r} network to export")
        return denoiser_graph(self.unet, self.model, self.ab)


def caption_conditions(model: dict[str, Any]) -> dict[str, Any]:
    """``Sampler.conditions`` of a captioned run: a prompt (the preview prompts in turn when none
    is given; "" draws unconditionally) and a negative prompt."""
    return {"prompt": {"defaults": model["text"]["prompts"], "empty": ""}, "negative_prompt": None}


class DenoiserExport(nn.Module):
    """The U-Net alone, as ``--format denoiser`` exports it: (x_t, t[, label]) -> the prediction;
    a captioned run's: (x_t, t, states, mask) with the text encoder's states and a 0/1 mask."""

    def __init__(self, unet: nn.Module, conditional: bool, captioned: bool = False):
        super().__init__()
        self.unet, self.conditional, self.captioned = unet, conditional, captioned

    def forward(self, x: torch.Tensor, t: torch.Tensor, *cond: torch.Tensor) -> torch.Tensor:
        if self.captioned:
            states, mask = cond
            return self.unet(x, t, text=(states, mask > 0))
        return self.unet(x, t, cond[0] if self.conditional else None)


class TextEncoderExport(nn.Module):
    """A captioned run's text encoder, as ``--format text-encoder`` exports it: (ids, mask) -> states."""

    def __init__(self, text: TextEncoder):
        super().__init__()
        self.text = text

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.text(ids, mask > 0)


def tokenizer_note(text: dict[str, Any]) -> str:
    """How a user's own code turns a prompt into the text encoder's ids, for the ONNX metadata."""
    if text["encoder"] == "learned":
        return ("ids = [256] + list(prompt.encode('utf-8')) + [257], cut to L; padded with 258 to the "
                "graph's L; mask 1 on the ids, 0 on the padding")
    if text["encoder"] == "run":
        return ("the aigc text run's tokenizer (aigc.text_source) over aigc.text_start + prompt, cut to L; "
                "padded with 0; mask 1 on the ids, 0 on the padding")
    return "CLIP's tokenizer (aigc.text_source): start and end tokens, cut to L, padded; mask 1 on the ids"


def text_encoder_graph(text: TextEncoder, model: dict[str, Any]) -> ExportGraph:
    """The caption's half of a captioned run: what a user's own sampler feeds the denoiser graph."""
    section = model["text"]
    length, dim = section["length"], section["dim"]

    def ids(n, g, L=length):
        made = [text.tokenize([f"prompt {i}"]) for i in range(n)]
        return torch.cat([m[0] for m in made])[:, :L]

    def mask(n, g, L=length):
        made = [text.tokenize([f"prompt {i}"]) for i in range(n)]
        return torch.cat([m[1] for m in made])[:, :L].long()

    inputs = (GraphInput("ids", "int64", ("L",), ids), GraphInput("mask", "int64", ("L",), mask))
    meta = {"aigc.text_encoder": section["encoder"], "aigc.text_source": str(section.get("source")),
            "aigc.text_length": str(length), "aigc.tokenizer": tokenizer_note(section)}
    if section["encoder"] == "run":
        meta["aigc.text_start"] = section["start"]
    return ExportGraph(
        module=TextEncoderExport(text).eval(),
        inputs=inputs,
        output="states",
        output_dtype="float32",
        output_shape=("L", dim),
        summary=f"aigc {section['encoder']} text encoder: (ids, mask) -> the caption's token states, "
                f"the denoiser graph's states input",
        metadata=meta,
        atol=1e-4,
        dynamic={"L": (2, length)},
    )


def denoiser_graph(unet: nn.Module, model: dict[str, Any], ab: torch.Tensor) -> ExportGraph:
    """What a user's own sampler loop needs, the way diffusers' ONNX pipelines take a U-Net: the
    network's inputs and output, and in the metadata everything to turn the output into x0 and
    eps (the prediction type and the whole alpha-bar table, not only the schedule's name)."""
    shape = tuple(model["image_shape"])
    k = model["num_classes"] if model["conditional"] else None
    total = model["timesteps"]
    text = model.get("text")
    dynamic = {}
    inputs = [
        GraphInput("x", "float32", shape, lambda n, g, **_: torch.randn(n, *shape, generator=g)),
        GraphInput("t", "int64", (), lambda n, g, **_: torch.randint(0, total, (n,), generator=g),
                   {"range": [0, total - 1]}),
    ]
    if text:  # the text encoder graph's states, and which of its L positions are tokens
        length, dim = text["length"], text["dim"]
        dynamic = {"L": (2, length)}

        def mask(n, g, L=length):
            lengths = torch.randint(1, L + 1, (n,), generator=g)
            return (torch.arange(L)[None] < lengths[:, None]).long()

        inputs += [GraphInput("states", "float32", ("L", dim), lambda n, g, L=length: torch.randn(n, L, dim, generator=g),
                              {"from": "the text-encoder graph"}),
                   GraphInput("mask", "int64", ("L",), mask, {"values": "1 token, 0 padding"})]
    elif k is not None:  # label k is "no label": the unconditional half of classifier-free guidance
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
    if k is not None and not text:
        meta["aigc.null_label"] = str(k)
    if text:
        meta["aigc.guidance"] = ("the unconditional half: the text-encoder graph's states of the empty prompt "
                                 "(or a negative prompt)")
    names = ", ".join(i.name for i in inputs)
    return ExportGraph(
        module=DenoiserExport(unet, k is not None, bool(text)).eval(),
        inputs=tuple(inputs),
        output="prediction",
        output_dtype="float32",
        output_shape=shape,
        summary=f"aigc diffusion U-Net: ({names}) -> the {model['prediction']} prediction",
        metadata=meta,
        atol=1e-4,  # outputs of order 1, not [0, 1] images: float32 sums over a deeper network
        dynamic=dynamic,
    )


def size_step(nets: dict[str, nn.Module], b: int, model: dict[str, Any]) -> torch.Tensor:
    """One training step's forward on made-up inputs (models/sizing.py runs it on the meta device)."""
    labels = torch.zeros(b, dtype=torch.long) if model["conditional"] else None
    text = model.get("text")
    given = {"text": (torch.randn(b, text["length"], text["dim"]), torch.ones(b, text["length"], dtype=torch.bool))} \
        if text else {"labels": labels}
    return nets["unet"](torch.randn(b, *model["image_shape"]), torch.zeros(b, dtype=torch.long), **given)


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
        # Captioned runs (models/captions/): the text encoder's section and where the U-Net attends to it
        Field("text", dict, optional=True),
        Field("cross_attention", list, items=bool, length=(1, 8), optional=True),
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
        # A dataset with captions trains on them (not on its labels) unless --unconditional; the
        # --text-encoder value was resolved into its config section by training (training/text_encoders.py).
        captioned = bool(dataset_info.get("captions")) and options["conditional"] is not False
        if not captioned and options["text_encoder"] != LEARNED:
            raise OptionError("text_encoder", "needs a dataset with captions (a metadata.jsonl, .txt files beside "
                              "the images, or shapes-captions) and a conditional run")
        model = {
            "width": options["width"],
            "channel_mult": list(mult),
            "layout": options["layout"],
            "blocks": options["blocks"],
            "schedule": options["schedule"],
            "prediction": options["prediction"],
            "weighting": options["weighting"] or (CAPTION_WEIGHTING if captioned else DEFAULT_WEIGHTING),
            **image_fields(dataset_info, False if captioned else options["conditional"]),
            "timesteps": TIMESTEPS,
            **aigc_defaults(len(mult)),
        }
        if captioned:
            text = encoder_section(options["text_encoder"])
            model["text"] = {**text, "prompts": preview_prompts(data.captions if data is not None else [])}
            model["cross_attention"] = cross_attention_levels(model["image_shape"], len(mult))
        train = {"lr": float(options["lr"]), "cond_drop": float(options["cond_drop"]),
                 "ema_decay": float(options["ema_decay"]), "precision": options["precision"]}
        # An impossible shape or a model too large for the device: a clean error before a run exists.
        check_network(lambda: {"unet": build_unet(model)}, lambda nets, b: size_step(nets, b, model),
                      {k: options[k] for k in ("width", "channel_mult", "blocks")}, options["precision"])
        return model, train

    def training_data(self, data: Any, config: dict[str, Any]) -> TrainingData:
        """A captioned run trains on its captions' token ids in place of labels: (N, L) int32,
        -1 for padding (the task drops captions to the empty one and derives the mask)."""
        text = config["model"].get("text")
        if not text:
            return super().training_data(data, config)
        encoder = tokenizer_only(text)
        ids = torch.full((len(data.captions), text["length"]), -1, dtype=torch.int32)
        for lo in range(0, len(ids), 4096):
            chunk, mask = encoder.tokenize(data.captions[lo : lo + 4096])
            ids[lo : lo + len(chunk)] = torch.where(mask, chunk, -1).to(torch.int32)
        return TrainingData(data.images, ids, windows=data.windows, mapped=data.mapped)

    def data_notes(self, data: Any, config: dict[str, Any]) -> list[str]:
        text = config["model"].get("text")
        if not text or data is None or data.captions is None:
            return []
        encoder = tokenizer_only(text)
        long = {c for c in set(data.captions) if encoder.tokens_needed(c) > text["length"]}
        if not long:
            return []
        cut = sum(1 for c in data.captions if c in long)
        return [f"{cut:,} of {len(data.captions):,} captions are longer than the {text['encoder']} text encoder's "
                f"{text['length']} tokens: each is cut at the end"]

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
        if model.get("text") is not None:
            cross = model.get("cross_attention")
            if cross is None or len(cross) != levels:
                raise RunError(f"{at} field 'cross_attention' must hold one entry per level of channel_mult ({levels})")
            check_text_section(model["text"], f"{at} field 'text'")
            attended += [model["width"] * m for m, c in zip(model["channel_mult"], cross) if c]
        if model["head_dim"] is not None and any(c % model["head_dim"] for c in attended):
            raise RunError(f"{at} field 'head_dim' ({model['head_dim']}) must divide the channels of every "
                           f"level with attention ({', '.join(map(str, attended))})")

    def make_task(self, config: dict[str, Any], device: torch.device) -> DiffusionTask:
        return DiffusionTask(config, device)

    def build(self, config: dict[str, Any]) -> dict[str, nn.Module]:
        modules = {"unet": build_unet(config["model"])}
        if config["model"].get("text"):
            modules["text"] = build_encoder(config["model"]["text"])
        return modules

    def sampler(self, modules: dict[str, nn.Module], config: dict[str, Any], device: torch.device) -> DiffusionSampler:
        return DiffusionSampler(modules["unet"], config, device, modules.get("text"))

    def lora_targets(self, config: dict[str, Any]) -> dict[str, tuple[str, ...]]:
        # The attention projections and the residual blocks' convolutions (diffusers' LoRA
        # training scripts adapt attention and, for small data, convolutions too): the layers
        # that shape what the U-Net draws; the time MLP, input and output convolutions stay.
        return {"unet": ("*attn*", "*.conv1", "*.conv2")}
