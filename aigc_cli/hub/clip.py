"""CLIP from the Hugging Face format, without transformers: the frozen text encoder that
conditions text-to-image (``--text-encoder``) and the two towers of ``aigc eval``'s CLIP score.

```python
from aigc_cli.hub.clip import load_clip, tokenize

text, vision, tokenizer = load_clip("openai/clip-vit-base-patch32")   # or a local folder
ids, mask = tokenize(["a red bus"], tokenizer, text.max_length)        # (1, 77) int64, bool
states, pooled = text(ids, mask)                                       # (1, 77, 512), (1, 512)
```

:func:`read_clip` reads a folder (or a hub id, through the import machinery's download) saved by
transformers' ``CLIPModel`` (config.json ``model_type: "clip"``, both towers) or
``CLIPTextModel`` / ``CLIPTextModelWithProjection`` (``model_type: "clip_text_model"``): the
configs as plain dicts, the weights renamed to this file's modules, and the tokenizer as a
``tokenizers`` JSON string. Safetensors only. The modules are transformers' CLIP layer for layer
(pre-LN blocks, causal attention in the text tower, QuickGELU or GELU) with q/k/v fused into one
projection; tests/test_clip_import.py holds them to transformers' outputs within 1e-5.

CLIP is never imported as a run: a ``clip`` format is registered only so that ``aigc import``
says where CLIP goes, and so that a hub id is fetched with the same checks and cache as imports.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from aigc_cli.models.captions.clip import (ACTIVATIONS, BOS, EOS, Block, ClipTextEncoder,  # noqa: F401
                                         ClipVisionEncoder, _tokenizer, tokenize)
from aigc_cli.hub.formats import read_vocab_and_merges, Converted, ImportError_, ImportFormat, read_json, read_safetensors, register_format

# transformers' CLIPTextConfig / CLIPVisionConfig defaults (a field a config.json leaves out).
TEXT_DEFAULTS = {"vocab_size": 49408, "hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 12,
                 "num_attention_heads": 8, "max_position_embeddings": 77, "hidden_act": "quick_gelu",
                 "layer_norm_eps": 1e-5, "eos_token_id": 49407}
VISION_DEFAULTS = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
                   "num_channels": 3, "image_size": 224, "patch_size": 32, "hidden_act": "quick_gelu",
                   "layer_norm_eps": 1e-5}
# OpenAI's normalisation of [0, 1] RGB (transformers' OPENAI_CLIP_MEAN / OPENAI_CLIP_STD).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# Module names inside a layer: transformers' -> ours ("qkv": q_proj, k_proj, v_proj concatenated).
LAYER_KEYS = {"layer_norm1": "ln1", "self_attn.out_proj": "attn.proj", "layer_norm2": "ln2",
              "mlp.fc1": "fc", "mlp.fc2": "out"}


@dataclass
class ClipFiles:
    """A CLIP save, read: ``text``/``vision`` hold the fields the encoders are built from (plain
    JSON-able dicts), ``*_weights`` their state dicts in this file's names."""

    text: dict[str, Any]
    text_weights: dict[str, torch.Tensor]
    vision: dict[str, Any] | None  # None: a text-only save (CLIPTextModel[WithProjection])
    vision_weights: dict[str, torch.Tensor] | None
    tokenizer: str  # tokenizers.Tokenizer.to_str(), with CLIP's BOS/EOS post-processor and pad token
    folder: Path


# -- reading -----------------------------------------------------------------------------------
class ClipFormat(ImportFormat):
    name = "clip"
    summary = ("clip: transformers' CLIPModel / CLIPTextModel (not a run: used by --text-encoder and "
               "aigc eval's CLIP score)")

    def detect(self, folder: Path) -> bool:
        try:
            config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            return False
        return isinstance(config, dict) and config.get("model_type") in ("clip", "clip_text_model")

    def files(self) -> list[str]:
        return ["config.json", "model.safetensors", "model.safetensors.index.json", "model-*.safetensors",
                "tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json",
                "preprocessor_config.json"]

    def convert(self, folder: Path) -> Converted:
        raise ImportError_(f"{folder} is a CLIP model: aigc does not make it a run; give it to train --text-encoder "
                           "(a frozen caption encoder) or to aigc eval for the CLIP score")


FORMAT = register_format(ClipFormat())


def read_clip(source: str, *, revision: str | None = None,
              say: Callable[[str], None] = lambda message: None) -> ClipFiles:
    """A CLIP save from a local folder or a hub id (fetched through huggingface_hub's cache, as
    ``aigc import`` fetches); anything unusable is one line (ImportError_/ConfigError)."""
    from aigc_cli.hub.importer import locate

    folder, _ = locate(source, revision, FORMAT.name, say)
    path = folder / "config.json"
    config = read_json(path, "the model's configuration")
    kind = config.get("model_type")
    if kind == "clip":
        text_config, vision_config = config.get("text_config") or {}, config.get("vision_config") or {}
        if not isinstance(text_config, dict) or not isinstance(vision_config, dict):
            raise ImportError_(f"{path} fields 'text_config' and 'vision_config' must be JSON objects")
    elif kind == "clip_text_model":
        text_config, vision_config = config, None
    else:
        raise ImportError_(f"{path} field 'model_type' is {kind!r}: expected 'clip' (CLIPModel) or 'clip_text_model' "
                           "(CLIPTextModel, CLIPTextModelWithProjection)")
    tensors = read_safetensors(folder, ("model.safetensors",))
    text = _fields(text_config, TEXT_DEFAULTS, path, "text_config." if vision_config is not None else "")
    text_weights = _tower(tensors, "text_model.", text, folder, vision=False)
    text["projection_dim"] = _projection(tensors, "text_projection.weight", text_weights, text["hidden_size"])
    vision = vision_weights = None
    if vision_config is not None:
        vision = _fields(vision_config, VISION_DEFAULTS, path, "vision_config.")
        if vision["num_channels"] != 3:
            raise ImportError_(f"{path} field 'vision_config.num_channels' is {vision['num_channels']}: CLIP reads RGB (3)")
        if vision["image_size"] % vision["patch_size"]:
            raise ImportError_(f"{path} field 'vision_config.image_size' must be a multiple of 'patch_size'")
        vision_weights = _tower(tensors, "vision_model.", vision, folder, vision=True)
        vision["projection_dim"] = _projection(tensors, "visual_projection.weight", vision_weights,
                                               vision["hidden_size"])
    tokenizer, specials = read_tokenizer(folder)
    size = _tokenizer(tokenizer).get_vocab_size(with_added_tokens=True)
    if size > text["vocab_size"]:
        raise ImportError_(f"{folder}'s tokenizer has {size} tokens, more than config.json's vocab_size "
                           f"({text['vocab_size']}): the tokenizer belongs to another model")
    text.update(specials)
    return ClipFiles(text, text_weights, vision, vision_weights, tokenizer, folder)


def _fields(config: dict[str, Any], defaults: dict[str, Any], path: Path, prefix: str) -> dict[str, Any]:
    """The fields an encoder is built from, each checked: one line naming a bad one."""
    out = {}
    for name, default in defaults.items():
        value = config.get(name, default)
        if name == "hidden_act":
            if value not in ACTIVATIONS:
                raise ImportError_(f"{path} field '{prefix}{name}' is {value!r}: aigc's CLIP has {', '.join(ACTIVATIONS)}")
        elif name == "layer_norm_eps":
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value < 1:
                raise ImportError_(f"{path} field '{prefix}{name}' must be a small positive number, got {value!r:.60}")
            value = float(value)
        elif not isinstance(value, int) or isinstance(value, bool) or value < (0 if name == "eos_token_id" else 1):
            raise ImportError_(f"{path} field '{prefix}{name}' must be a whole number, got {value!r:.60}")
        out[name] = value
    if out["hidden_size"] % out["num_attention_heads"]:
        raise ImportError_(f"{path} field '{prefix}hidden_size' ({out['hidden_size']}) must be a multiple of "
                           f"'num_attention_heads' ({out['num_attention_heads']})")
    return out


def _tower(tensors: dict[str, torch.Tensor], prefix: str, fields: dict[str, Any], folder: Path,
           vision: bool) -> dict[str, torch.Tensor]:
    """One tower's state dict in our names. CLIPModel's and transformers 4's CLIPTextModel saves
    prefix the keys with ``text_model.``/``vision_model.``; transformers 5's CLIPTextModel does not."""
    where = folder / "model.safetensors"
    plain = {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix) or not vision}
    shown = prefix if any(k.startswith(prefix) for k in tensors) else ""  # names as the save spells them

    def take(key: str) -> torch.Tensor:
        if key not in plain:
            raise ImportError_(f"{where} has no tensor {shown + key!r} (a CLIP {'vision' if vision else 'text'} tower "
                               f"of {fields['num_hidden_layers']} layers needs it); check config.json")
        return plain[key].float()  # fp16 saves become fp32: the encoders compute in fp32 unless moved

    if vision:
        out = {"patch.weight": take("embeddings.patch_embedding.weight"), "cls": take("embeddings.class_embedding"),
               "pos.weight": take("embeddings.position_embedding.weight")}
        for ours, theirs in (("ln_pre", "pre_layrnorm"), ("ln_post", "post_layernorm")):  # sic: "layrnorm"
            out[f"{ours}.weight"], out[f"{ours}.bias"] = take(f"{theirs}.weight"), take(f"{theirs}.bias")
    else:
        out = {"tok.weight": take("embeddings.token_embedding.weight"),
               "pos.weight": take("embeddings.position_embedding.weight"),
               "ln.weight": take("final_layer_norm.weight"), "ln.bias": take("final_layer_norm.bias")}
    for i in range(fields["num_hidden_layers"]):
        for part in ("weight", "bias"):
            # (3D, D) / (3D,): q, k, v stacked in that order, as Block.attention splits them
            out[f"blocks.{i}.attn.qkv.{part}"] = torch.cat(
                [take(f"encoder.layers.{i}.self_attn.{p}_proj.{part}") for p in "qkv"])
            for theirs, ours in LAYER_KEYS.items():
                out[f"blocks.{i}.{ours}.{part}"] = take(f"encoder.layers.{i}.{theirs}.{part}")
    if f"encoder.layers.{fields['num_hidden_layers']}.layer_norm1.weight" in plain:
        raise ImportError_(f"{where} holds more layers than config.json's num_hidden_layers "
                           f"({fields['num_hidden_layers']})")
    return out


def _projection(tensors: dict[str, torch.Tensor], key: str, weights: dict[str, torch.Tensor], width: int) -> int | None:
    """The projection's output size (the save's ``text_projection``/``visual_projection``, a
    bias-free (P, D) Linear), added to ``weights``; None where the save has none."""
    if key not in tensors:
        return None
    weight = tensors[key].float()
    if weight.ndim != 2 or weight.shape[1] != width:
        raise ImportError_(f"model.safetensors tensor {key!r} is {tuple(weight.shape)}, expected (P, {width})")
    weights["projection.weight"] = weight
    return int(weight.shape[0])


# -- the tokenizer -------------------------------------------------------------------------------
def read_tokenizer(folder: Path) -> tuple[str, dict[str, int]]:
    """(the tokenizer's JSON, its bos/pad token ids): tokenizer.json as saved, else vocab.json +
    merges.txt built as transformers' CLIPTokenizer builds them. The pad token (tokenizer_config.json's
    ``pad_token``, ``<|endoftext|>`` by default, "!" in some Stable Diffusion saves) is written
    into the JSON's padding, so that :func:`tokenize` pads as transformers does."""
    from tokenizers import Tokenizer

    settings: dict[str, Any] = {}
    for name in ("special_tokens_map.json", "tokenizer_config.json"):  # the latter wins, as in transformers
        if (folder / name).is_file():
            settings.update(read_json(folder / name, "the tokenizer's settings"))
    path = folder / "tokenizer.json"
    if path.is_file():
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as e:  # noqa: BLE001 (tokenizers raises a bare Exception for a bad file)
            raise ImportError_(f"{path} is not a tokenizers JSON ({str(e).splitlines()[0][:120]})") from None
    else:
        vocab, merges = folder / "vocab.json", folder / "merges.txt"
        if not (vocab.is_file() and merges.is_file()):
            raise ImportError_(f"{folder} has no tokenizer: expected tokenizer.json, or vocab.json and merges.txt "
                               "(download them with the model)")
        tokenizer = _from_vocab_and_merges(vocab, merges, settings)
    ids = {}
    for name, default in (("bos", BOS), ("eos", EOS), ("pad", EOS)):
        token = _special(settings.get(f"{name}_token")) or default
        ids[name] = tokenizer.token_to_id(token)
        if ids[name] is None:
            raise ImportError_(f"{folder}'s tokenizer has no {name} token {token!r} in its vocabulary")
    tokenizer.enable_padding(pad_id=ids["pad"], pad_token=tokenizer.id_to_token(ids["pad"]))
    return tokenizer.to_str(), {"bos_token_id": ids["bos"], "pad_token_id": ids["pad"]}


def _special(value: Any) -> str | None:
    """A special token as tokenizer_config.json or special_tokens_map.json writes it."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) and value else None


def _from_vocab_and_merges(vocab_path: Path, merges_path: Path, settings: dict[str, Any]):
    """transformers' CLIPTokenizer (and CLIPConverter before it): NFC, whitespace runs to one
    space and lower case; CLIP's word regex, then bytes; BPE whose word ends carry ``</w>``;
    ``<|startoftext|> ... <|endoftext|>`` around every text."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    vocab, merges = read_vocab_and_merges(vocab_path, merges_path)
    tokens = {k: _special(settings.get(f"{k}_token")) or d for k, d in (("unk", EOS), ("bos", BOS), ("eos", EOS))}
    try:
        tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, dropout=None, continuing_subword_prefix="",
                                         end_of_word_suffix="</w>", fuse_unk=False, unk_token=tokens["unk"]))
    except Exception as e:  # noqa: BLE001 (tokenizers raises a bare Exception: a merge of unknown tokens)
        raise ImportError_(f"{merges_path} does not fit {vocab_path.name} ({str(e).splitlines()[0][:120]})") from None
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()])
    words = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(words), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tokenizer.decoder = decoders.ByteLevel()
    specials = list(dict.fromkeys(tokens.values()))
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    for name in ("bos", "eos"):
        if tokenizer.token_to_id(tokens[name]) is None:
            raise ImportError_(f"{vocab_path} has no {name} token {tokens[name]!r}")
    # RobertaProcessing: "<bos> text <eos>" for one text (what transformers uses, for its offsets)
    tokenizer.post_processor = processors.RobertaProcessing(
        (tokens["eos"], tokenizer.token_to_id(tokens["eos"])), (tokens["bos"], tokenizer.token_to_id(tokens["bos"])),
        trim_offsets=False, add_prefix_space=False)
    return tokenizer


def load_clip(source: str | ClipFiles, device: str | torch.device = "cpu",
              ) -> tuple[ClipTextEncoder, ClipVisionEncoder | None, str]:
    """(text encoder, vision encoder or None, tokenizer JSON) of a CLIP save, frozen: eval mode,
    no gradients (aigc never trains CLIP)."""
    files = source if isinstance(source, ClipFiles) else read_clip(source)
    text = _filled(ClipTextEncoder(files.text), files.text_weights, files.folder)
    vision = None
    if files.vision is not None:
        vision = _filled(ClipVisionEncoder(files.vision), files.vision_weights, files.folder)
    for module in (text, vision):
        if module is not None:
            module.to(device).eval().requires_grad_(False)
    return text, vision, files.tokenizer


def _filled(module: nn.Module, weights: dict[str, torch.Tensor], folder: Path) -> nn.Module:
    """``module`` with ``weights`` loaded; a tensor whose shape config.json contradicts is one line."""
    for key, want in module.state_dict().items():
        if tuple(weights[key].shape) != tuple(want.shape):
            raise ImportError_(f"{folder / 'model.safetensors'} tensor for {key} is {tuple(weights[key].shape)}, "
                               f"config.json makes it {tuple(want.shape)}: the config belongs to another model")
    module.load_state_dict(weights, strict=True)
    return module


# -- images and the score ------------------------------------------------------------------------
def clip_preprocess(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> float32 (N, 3, size, size) on the images' device: the shortest side
    resized to ``size`` (bicubic; the longer side to int(size * long / short)), centre-cropped,
    scaled to [0, 1] and normalised with CLIP's mean and std, transformers' CLIPImageProcessor's steps.

    The resize is torch's uint8 bicubic with ``antialias=True``, on the CPU (CUDA has no uint8
    antialiased bicubic; a float resize on the GPU would differ by up to 9 levels on noise). It is
    what transformers 5's default CLIPImageProcessor (torchvision) computes: equal to float
    rounding. Against the PIL processor (transformers 4's default, CLIPImageProcessorPil in 5),
    whose bicubic filter is PIL's, it differs by at most 1 uint8 level on a few pixels (mean
    0.005 levels on noise). Without antialias a downscale differs from both by up to 159 levels on
    noise (17 on smooth images): aliasing. Measured in tests/test_clip_import.py."""
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"clip_preprocess takes uint8 RGB images (N, 3, H, W), got {images.dtype} "
                         f"{tuple(images.shape)}")
    h, w = images.shape[-2:]
    short, long = min(h, w), max(h, w)
    new = (size, int(size * long / short)) if h <= w else (int(size * long / short), size)
    x = images
    if (h, w) != new:  # uint8 in, uint8 out: rounded and clipped as an image library's resize
        x = F.interpolate(images.cpu(), size=new, mode="bicubic", antialias=True, align_corners=False)
    top, left = int((new[0] - size) / 2.0), int((new[1] - size) / 2.0)
    x = x[:, :, top:top + size, left:left + size].to(images.device, torch.float32) / 255
    mean = torch.tensor(CLIP_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


@torch.no_grad()
def clip_score(text_encoder: ClipTextEncoder, vision_encoder: ClipVisionEncoder, images: torch.Tensor,
               texts: Sequence[str], tokenizer_json: str, batch_size: int = 64) -> torch.Tensor:
    """(N,) float32: max(100 * cos(image_embeds, text_embeds), 0) for each image and its text,
    the CLIP score of Hessel et al. (2021) as torchmetrics' CLIPScore defines it (w = 100; it
    reports the mean). images uint8 (N, 3, H, W); texts N captions, cut at the text tower's length."""
    if len(texts) != images.shape[0]:
        raise ValueError(f"clip_score needs one text per image: {images.shape[0]} images, {len(texts)} texts")
    device, text_device = vision_encoder.patch.weight.device, text_encoder.tok.weight.device
    scores = []
    for start in range(0, len(texts), batch_size):
        pixels = clip_preprocess(images[start:start + batch_size].to(device), vision_encoder.image_size)
        ids, mask = tokenize(texts[start:start + batch_size], tokenizer_json, text_encoder.max_length)
        image = F.normalize(vision_encoder.embed(pixels).float(), dim=-1)
        text = F.normalize(text_encoder.embed(ids.to(text_device), mask.to(text_device)).float().to(device), dim=-1)
        scores.append((100 * (image * text).sum(-1)).clamp(min=0))
    return torch.cat(scores).cpu() if scores else torch.zeros(0)
