"""diffusers' ``UNet2DModel`` with its scheduler (DDPM/DDIM U-Nets such as google/ddpm-cifar10-32)
into the diffusion family.

A folder is either the U-Net saved alone (config.json of a UNet2DModel, its safetensors, and a
scheduler_config.json beside it) or a pipeline (model_index.json, unet/, scheduler/). The U-Net
becomes the ddpm layout with the fields diffusers' options need (models/diffusion/family.py),
the scheduler the schedule and the sampler's rules, chosen so that ``aigc sample --sampler ddim``
follows DDIMScheduler's timesteps and arithmetic for the same config. Whatever aigc cannot build
the same way is refused in one line naming the file and the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aigc_cli.hub.formats import Converted, ImportError_, ImportFormat, read_json, read_safetensors, register_format

UNET = "UNet2DModel"
DOWN_BLOCKS = {"DownBlock2D": False, "AttnDownBlock2D": True}  # block type -> attention after each resnet
UP_BLOCKS = {"UpBlock2D": False, "AttnUpBlock2D": True}
WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "model.safetensors")
SCHEDULES = {"linear": "linear", "scaled_linear": "scaled_linear", "squaredcos_cap_v2": "cosine"}
PREDICTIONS = {"epsilon": "eps", "v_prediction": "v", "sample": "x0"}
SPACINGS = ("linspace", "leading", "trailing")
FINE_TUNE_LR = 1e-4  # diffusers' train_unconditional example: a pre-trained U-Net moves in small steps

# The DDIMScheduler defaults a field left out of scheduler_config.json takes (DDIMScheduler.from_config).
SCHEDULER_DEFAULTS = {
    "num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear",
    "trained_betas": None, "clip_sample": True, "set_alpha_to_one": True, "steps_offset": 0,
    "prediction_type": "epsilon", "thresholding": False, "clip_sample_range": 1.0, "timestep_spacing": "leading",
    "rescale_betas_zero_snr": False, "variance_type": "fixed_small",
}
# UNet2DModel's own defaults, for a config.json that leaves a field out.
UNET_DEFAULTS = {
    "sample_size": None, "in_channels": 3, "out_channels": 3, "center_input_sample": False,
    "time_embedding_type": "positional", "time_embedding_dim": None, "freq_shift": 0, "flip_sin_to_cos": True,
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"],
    "mid_block_type": "UNetMidBlock2D", "up_block_types": ["AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
    "block_out_channels": [224, 448, 672, 896], "layers_per_block": 2, "mid_block_scale_factor": 1,
    "downsample_padding": 1, "downsample_type": "conv", "upsample_type": "conv", "dropout": 0.0, "act_fn": "silu",
    "attention_head_dim": 8, "norm_num_groups": 32, "attn_norm_num_groups": None, "norm_eps": 1e-5,
    "resnet_time_scale_shift": "default", "add_attention": True, "class_embed_type": None, "num_class_embeds": None,
}


def _locate(folder: Path) -> tuple[Path, Path] | None:
    """(the U-Net's folder, where its scheduler config should be), or None when ``folder`` is
    neither a UNet2DModel nor a pipeline holding a U-Net."""
    if (folder / "model_index.json").is_file() and (folder / "unet" / "config.json").is_file():
        return folder / "unet", folder / "scheduler" / "scheduler_config.json"
    try:
        # Any diffusers U-Net class is this format's to read, so that convert names what it cannot build.
        config = read_json(folder / "config.json", "a model's config")
        if "_diffusers_version" in config and str(config.get("_class_name", "")).startswith("UNet"):
            sched = folder / "scheduler_config.json"
            return folder, sched if sched.is_file() else folder / "scheduler" / "scheduler_config.json"
    except ImportError_:
        return None
    return None


class _Reader:
    """A config's fields with their library defaults; every complaint names the file and field."""

    def __init__(self, path: Path, folder: Path, values: dict[str, Any], defaults: dict[str, Any]):
        self.where, self.values, self.defaults = _rel(path, folder), values, defaults

    def __getitem__(self, name: str) -> Any:
        return self.values.get(name, self.defaults.get(name))

    def refuse(self, name: str, why: str) -> ImportError_:
        return ImportError_(f"{self.where} field {name!r} is {self[name]!r:.80}: {why}")

    def whole(self, name: str, minimum: int = 0) -> int:
        v = self[name]
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        if not isinstance(v, int) or isinstance(v, bool) or v < minimum:
            raise self.refuse(name, f"expected a whole number of at least {minimum}")
        return v

    def number(self, name: str, above: float | None = None) -> float:
        v = self[name]
        if not isinstance(v, (int, float)) or isinstance(v, bool) or (above is not None and not v > above):
            raise self.refuse(name, "expected a number" + (f" above {above:g}" if above is not None else ""))
        return float(v)

    def flag(self, name: str) -> bool:
        if not isinstance(self[name], bool):
            raise self.refuse(name, "expected true or false")
        return self[name]

    def one_of(self, name: str, allowed, what: str) -> Any:
        if self[name] not in allowed:
            *rest, last = map(repr, allowed)
            raise self.refuse(name, f"aigc {what} {', '.join(rest) + ' or ' if rest else ''}{last} only")
        return self[name]


def _rel(path: Path, folder: Path) -> str:
    try:
        return str(path.relative_to(folder.parent))
    except ValueError:
        return str(path)


def unet_fields(c: _Reader) -> dict[str, Any]:
    """The diffusion family's network fields for a UNet2DModel config (models/diffusion/family.py)."""
    c.one_of("_class_name", (UNET,), "imports")
    c.one_of("time_embedding_type", ("positional",), "builds the timestep embedding")
    c.one_of("act_fn", ("silu", "swish"), "builds activations")  # swish is SiLU's other name
    c.one_of("resnet_time_scale_shift", ("default",), "builds resnet_time_scale_shift")
    c.one_of("mid_block_type", ("UNetMidBlock2D",), "builds mid_block_type")
    c.one_of("downsample_type", ("conv",), "builds downsample_type")
    c.one_of("upsample_type", ("conv",), "builds upsample_type")
    for name in ("class_embed_type", "num_class_embeds"):
        if c[name] is not None:
            raise c.refuse(name, "class-conditional diffusers U-Nets are not imported (aigc's class table has a "
                           "'no label' row for guidance that they lack); use an unconditional one")
    channels = c["block_out_channels"]
    if not isinstance(channels, list) or not 1 <= len(channels) <= 8 or not all(
            isinstance(ch, int) and not isinstance(ch, bool) and ch > 0 for ch in channels):
        raise c.refuse("block_out_channels", "expected 1 to 8 positive whole numbers")
    width = channels[0]
    if width % 2 or any(ch % width for ch in channels):
        raise c.refuse("block_out_channels", "aigc builds levels of channels that are multiples of the first, "
                       "itself even (the timestep sinusoid's size)")
    if c["time_embedding_dim"] not in (None, 4 * width):
        raise c.refuse("time_embedding_dim", f"aigc builds {4 * width} (4 x block_out_channels[0]) only")
    levels = len(channels)
    attention = []
    for name, kinds in (("down_block_types", DOWN_BLOCKS), ("up_block_types", UP_BLOCKS)):
        types = c[name]
        if not isinstance(types, list) or len(types) != levels:
            raise c.refuse(name, f"expected one block type per entry of block_out_channels ({levels})")
        bad = [t for t in types if t not in kinds]
        if bad:
            raise ImportError_(f"{c.where} field {name!r} has {bad[0]!r}: aigc builds {' and '.join(kinds)} only")
        attention.append([kinds[t] for t in types])
    down_attention, up_attention = attention[0], attention[1][::-1]  # up blocks run from the lowest level
    groups = c.whole("norm_num_groups", 1)
    if c["attn_norm_num_groups"] not in (None, groups):
        raise c.refuse("attn_norm_num_groups", f"aigc builds the mid attention's GroupNorm with norm_num_groups ({groups})")
    if any(ch % groups for ch in channels):
        raise c.refuse("norm_num_groups", f"must divide every entry of block_out_channels {channels}")
    head_dim = c["attention_head_dim"]
    if head_dim is not None:
        head_dim = c.whole("attention_head_dim", 1)
        attended = [ch for ch, d, u in zip(channels, down_attention, up_attention) if d or u]
        attended += [channels[-1]] if c.flag("add_attention") else []
        if any(ch % head_dim for ch in attended):
            raise c.refuse("attention_head_dim", f"must divide the channels of every level with attention {attended}")
    return {
        "width": width,
        "channel_mult": [ch // width for ch in channels],
        "layout": "ddpm",  # diffusers' skips: the input convolution, every block, every downsampler
        "blocks": c.whole("layers_per_block", 1),
        "norm_groups": groups,
        "norm_eps": c.number("norm_eps", above=0.0),
        "flip_sin_to_cos": c.flag("flip_sin_to_cos"),
        "freq_shift": c.whole("freq_shift"),
        "time_act": True,  # diffusers' ResnetBlock2D: SiLU on the embedding before time_emb_proj
        "down_attention": down_attention,
        "up_attention": up_attention,
        "mid_attention": c.flag("add_attention"),
        "head_dim": head_dim,
        "mid_scale": c.number("mid_block_scale_factor", above=0.0),
        "down_padding": c.one_of("downsample_padding", (0, 1), "builds downsample_padding"),
        "center_input": c.flag("center_input_sample"),
    }


def image_shape(c: _Reader) -> list[int]:
    cin, cout = c.whole("in_channels", 1), c.whole("out_channels", 1)
    if cin != cout:
        raise c.refuse("out_channels", f"differs from in_channels ({cin}): aigc's denoiser predicts an image-shaped "
                       "output (a learned variance's extra channels are not imported)")
    size = c["sample_size"]
    if isinstance(size, int) and not isinstance(size, bool) and size > 0:
        return [cin, size, size]
    if isinstance(size, list) and len(size) == 2 and all(isinstance(s, int) and s > 0 for s in size):
        return [cin, *size]
    raise c.refuse("sample_size", "expected the image size (a whole number, or [height, width])")


def scheduler_fields(s: _Reader) -> dict[str, Any]:
    """The schedule and the sampler's rules (models/diffusion/sampling.py: SamplingRules) that make
    aigc's DDIM step as DDIMScheduler.from_config(this config) does."""
    for name, why in (("trained_betas", "aigc computes betas from beta_schedule; a table of betas is not imported"),
                      ("thresholding", "dynamic thresholding is not supported; aigc clips x0 (clip_sample)"),
                      ("rescale_betas_zero_snr", "zero-terminal-SNR rescaling is not supported")):
        if s[name] not in (None, False):
            raise s.refuse(name, why)
    if str(s["variance_type"]).startswith("learned"):
        raise s.refuse("variance_type", "a learned variance is not imported (aigc's samplers use fixed variances)")
    clip = s.flag("clip_sample")
    return {
        "schedule": SCHEDULES[s.one_of("beta_schedule", tuple(SCHEDULES), "computes beta_schedule")],
        "timesteps": s.whole("num_train_timesteps", 2),
        "beta_start": s.number("beta_start", above=0.0),
        "beta_end": s.number("beta_end", above=0.0),
        "prediction": PREDICTIONS[s.one_of("prediction_type", tuple(PREDICTIONS), "reads prediction_type")],
        "spacing": s.one_of("timestep_spacing", SPACINGS, "steps with timestep_spacing"),
        "steps_offset": s.whole("steps_offset"),
        "final_alpha_one": s.flag("set_alpha_to_one"),
        "clip_x0": s.number("clip_sample_range", above=0.0) if clip else None,
        "clipped_eps": False,  # DDIMScheduler.step keeps the model's eps (use_clipped_model_output False)
    }


# diffusers' module names -> aigc's, inside a resnet and an attention block (the deprecated
# attention names of checkpoints saved before diffusers 0.13 too: query, key, value, proj_attn).
RESNET = {"norm1": "norm1", "conv1": "conv1", "time_emb_proj": "emb", "norm2": "norm2", "conv2": "conv2",
          "conv_shortcut": "skip"}
QKV = (("to_q", "query"), ("to_k", "key"), ("to_v", "value"))
OUT = ("to_out.0", "proj_attn")


def convert_weights(sd: dict[str, Any], model: dict[str, Any], where: str) -> dict[str, Any]:
    """diffusers' UNet2DModel state dict -> aigc's UNet's (models/diffusion/unet.py): the same
    tensors renamed, q/k/v's (C, C) Linear weights stacked into the fused (3C, C, 1, 1) qkv
    convolution and to_out's into a (C, C, 1, 1) one. Keys it does not know are left for the
    importer's check (which names them)."""
    import torch

    sd, out = dict(sd), {}

    def take(key: str) -> Any:
        if key not in sd:
            raise ImportError_(f"{where} has no tensor {key!r}: the weights do not match config.json")
        return sd.pop(key)

    def first(prefix: str, names: tuple[str, ...], suffix: str) -> Any:
        for name in names:
            if f"{prefix}.{name}.{suffix}" in sd:
                return sd.pop(f"{prefix}.{name}.{suffix}")
        return take(f"{prefix}.{names[0]}.{suffix}")

    def resnet(src: str, dst: str) -> None:
        for theirs, mine in RESNET.items():
            for p in ("weight", "bias"):
                if f"{src}.{theirs}.{p}" in sd:
                    out[f"{dst}.{mine}.{p}"] = sd.pop(f"{src}.{theirs}.{p}")

    def attention(src: str, dst: str) -> None:
        for p in ("weight", "bias"):
            out[f"{dst}.norm.{p}"] = take(f"{src}.group_norm.{p}")
        w = torch.cat([first(src, names, "weight") for names in QKV])  # (3C, C)
        out[f"{dst}.qkv.weight"] = w[:, :, None, None]
        out[f"{dst}.qkv.bias"] = torch.cat([first(src, names, "bias") for names in QKV])
        out[f"{dst}.out.weight"] = first(src, OUT, "weight")[:, :, None, None]
        out[f"{dst}.out.bias"] = first(src, OUT, "bias")

    for p in ("weight", "bias"):
        out[f"time_mlp.0.{p}"] = take(f"time_embedding.linear_1.{p}")
        out[f"time_mlp.2.{p}"] = take(f"time_embedding.linear_2.{p}")
        out[f"conv_in.{p}"] = take(f"conv_in.{p}")
        out[f"norm_out.{p}"] = take(f"conv_norm_out.{p}")
        out[f"conv_out.{p}"] = take(f"conv_out.{p}")
    levels, blocks = len(model["channel_mult"]), model["blocks"]
    for i in range(levels):
        for j in range(blocks):
            n = i * blocks + j
            resnet(f"down_blocks.{i}.resnets.{j}", f"down.{n}")
            if model["down_attention"][i]:
                attention(f"down_blocks.{i}.attentions.{j}", f"down_attn.{n}")
        if i < levels - 1:
            for p in ("weight", "bias"):
                out[f"downsample.{i}.{p}"] = first(f"down_blocks.{i}.downsamplers.0", ("conv", "Conv2d_0"), p)
    resnet("mid_block.resnets.0", "mid1")
    resnet("mid_block.resnets.1", "mid2")
    if model["mid_attention"]:
        attention("mid_block.attentions.0", "attn")
    for u in range(levels):  # up block u serves level levels - 1 - u
        for j in range(blocks + 1):
            n = u * (blocks + 1) + j
            resnet(f"up_blocks.{u}.resnets.{j}", f"up.{n}")
            if model["up_attention"][levels - 1 - u]:
                attention(f"up_blocks.{u}.attentions.{j}", f"up_attn.{n}")
        if u < levels - 1:
            for p in ("weight", "bias"):
                out[f"upsample.{u}.{p}"] = take(f"up_blocks.{u}.upsamplers.0.conv.{p}")
    if sd:  # left over: a layer aigc has no place for
        raise ImportError_(f"{where} holds tensors config.json does not describe ({', '.join(sorted(sd)[:3])})")
    return out


class DiffusersUnet(ImportFormat):
    name = "diffusers-unet"
    summary = "diffusers-unet: diffusers' UNet2DModel (config.json, or a pipeline's unet/) with its scheduler_config.json"

    def detect(self, folder: Path) -> bool:
        return _locate(folder) is not None

    def files(self) -> list[str]:
        weights = ["diffusion_pytorch_model.safetensors", "diffusion_pytorch_model*.safetensors",
                   "diffusion_pytorch_model.safetensors.index.json"]
        return ["model_index.json", "config.json", "scheduler_config.json", "scheduler/scheduler_config.json",
                "unet/config.json", *weights, *(f"unet/{w}" for w in weights)]

    def convert(self, folder: Path) -> Converted:
        from aigc_cli.models.registry import get_family

        found = _locate(folder)
        if found is None:
            raise ImportError_(f"{folder} holds no diffusers UNet2DModel (config.json with _class_name "
                               f"{UNET!r}, or a pipeline's unet/config.json)")
        unet_dir, sched_path = found
        config_path = unet_dir / "config.json"
        c = _Reader(config_path, folder, read_json(config_path, "the U-Net's config"), UNET_DEFAULTS)
        if not sched_path.is_file():
            raise ImportError_(f"{folder} has no scheduler_config.json (beside config.json or in scheduler/): "
                               "the noise schedule the U-Net was trained with is needed; save the pipeline's "
                               "scheduler with it (scheduler.save_config)")
        s = _Reader(sched_path, folder, read_json(sched_path, "the scheduler's config"), SCHEDULER_DEFAULTS)
        model = {**unet_fields(c), "image_shape": image_shape(c), "num_classes": None, "conditional": False,
                 **scheduler_fields(s),
                 "weighting": "none"}  # DDPM's plain loss on the target (L_simple): what such U-Nets trained on
        tensors = read_safetensors(unet_dir, WEIGHT_FILES)
        weights = convert_weights(tensors, model, _rel(unet_dir, folder) + "/" + WEIGHT_FILES[0])
        spec = get_family("diffusion").spec
        train = {k: spec.defaults()[k] for k in ("cond_drop", "ema_decay", "precision")}
        train["lr"] = FINE_TUNE_LR
        source = {"class": UNET, "scheduler": s["_class_name"], "sample_size": c["sample_size"],
                  "dropout": c["dropout"]}  # training-only: aigc's U-Net has no dropout layers
        return Converted("diffusion", model, train, {"unet": weights}, source)


register_format(DiffusersUnet())
