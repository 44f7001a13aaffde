"""transformers' GPT-2 (``GPT2LMHeadModel``) as an aigc text run: the text family's GPT with
GPT-2's biases, tanh GELU and LayerNorm epsilon, over GPT-2's byte-level BPE.

What differs from aigc's own GPT is only layout: transformers' ``Conv1D`` stores a weight as
(in, out), torch's Linear as (out, in), so every projection is transposed; ``lm_head.weight`` is
tied to ``wte`` (aigc reads the logits out through the embedding too); the attention's causal
``bias``/``masked_bias`` buffers are not weights. Checkpoints saved from ``GPT2LMHeadModel``
prefix the keys with ``transformer.``, the hub's original gpt2 files do not: both are read.

An architecture the GPT cannot build is refused, one line naming config.json's field.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from aigc_cli.hub.formats import (
    read_vocab_and_merges,
    Converted,
    ImportError_,
    ImportFormat,
    read_json,
    read_safetensors,
    register_format,
)

# transformers' activation names -> the GPT's (ACT2FN: "gelu_new" and "gelu_pytorch_tanh" are the
# same tanh approximation, computed two ways; "gelu" is the exact erf form).
ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu"}

# Options of GPT2Config the GPT has no counterpart for, with the value it can build.
UNSUPPORTED = {
    "scale_attn_by_inverse_layer_idx": False,  # Mistral-style 1/(layer+1) attention scaling
    "reorder_and_upcast_attn": False,
    "add_cross_attention": False,  # an encoder-decoder's cross-attention blocks
    "scale_attn_weights": True,  # attention scores divided by sqrt(head dim)
    "tie_word_embeddings": True,  # the GPT reads logits out through its input embedding
}

# Module names: transformers' -> the GPT's (models/text/nets.py); "T": a Conv1D weight, transposed.
LAYER_KEYS = {
    "ln_1": ("ln1", False), "ln_2": ("ln2", False), "attn.c_attn": ("attn.qkv", True),
    "attn.c_proj": ("attn.proj", True), "mlp.c_fc": ("fc", True), "mlp.c_proj": ("out", True),
}


class GPT2Format(ImportFormat):
    name = "gpt2"
    summary = "gpt2: transformers' GPT2LMHeadModel (config.json model_type gpt2, model.safetensors, its tokenizer)"

    def detect(self, folder: Path) -> bool:
        path = folder / "config.json"
        if not path.is_file():
            return False
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            return False
        if not isinstance(config, dict):
            return False
        architectures = config.get("architectures")
        return config.get("model_type") == "gpt2" or (
            isinstance(architectures, list) and "GPT2LMHeadModel" in architectures)

    def files(self) -> list[str]:
        return ["config.json", "generation_config.json", "model.safetensors", "model.safetensors.index.json",
                "model-*.safetensors", "tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json",
                "special_tokens_map.json", "added_tokens.json"]

    def convert(self, folder: Path) -> Converted:
        from aigc_cli.models.text.family import train_section

        config = read_json(folder / "config.json", "the model's configuration")
        model = model_section(config, folder / "config.json")
        bpe, tokenizer_files = read_tokenizer(folder)
        model["bpe"] = bpe
        tensors = read_safetensors(folder, ("model.safetensors",))
        weights = convert_weights(tensors, model, folder)
        return Converted("text", model, train_section({"dropout": model["dropout"]}), {"model": weights},
                         {"files": ["config.json", "model.safetensors", *tokenizer_files],
                          "architecture": "GPT2LMHeadModel"})


def _whole(config: dict[str, Any], name: str, path: Path, default: int, minimum: int = 1) -> int:
    value = config.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ImportError_(f"{path} field {name!r} must be a whole number of at least {minimum}, got {value!r:.60}")
    return value


def _rate(config: dict[str, Any], name: str, path: Path, default: float) -> float:
    value = config.get(name, default)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value < 1:
        raise ImportError_(f"{path} field {name!r} must be a number in [0, 1), got {value!r:.60}")
    return float(value)


def model_section(config: dict[str, Any], path: Path) -> dict[str, Any]:
    """The text family's 'model' section (less ``bpe``) of a GPT2Config, or a one-line refusal."""
    for name, usable in UNSUPPORTED.items():
        if name in config and config[name] != usable:
            raise ImportError_(f"{path} field {name!r} is {json.dumps(config[name])}: aigc's GPT cannot build that "
                               f"(only {json.dumps(usable)})")
    activation = config.get("activation_function", "gelu_new")
    if activation not in ACTIVATIONS:
        raise ImportError_(f"{path} field 'activation_function' is {activation!r}: aigc's GPT has "
                           f"{', '.join(ACTIVATIONS)}")
    width = _whole(config, "n_embd", path, 768)
    heads = _whole(config, "n_head", path, 12)
    if width % heads:
        raise ImportError_(f"{path} field 'n_embd' ({width}) must be a multiple of 'n_head' ({heads})")
    inner = config.get("n_inner")
    if inner is not None and inner != 4 * width:
        raise ImportError_(f"{path} field 'n_inner' is {inner!r}: aigc's GPT has an MLP of 4 x n_embd ({4 * width})")
    eps = config.get("layer_norm_epsilon", 1e-5)
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not 0 < eps < 1:
        raise ImportError_(f"{path} field 'layer_norm_epsilon' must be a small positive number, got {eps!r:.60}")
    # One dropout rate for the embeddings, attention and residual stream: GPT-2's residual one
    # (0.1 in every released GPT-2: what a fine-tune in transformers uses too).
    dropout = _rate(config, "resid_pdrop", path, 0.1)
    return {
        "arch": "gpt",
        "tokenizer": "bpe",
        "alphabet": None,
        "bpe": None,
        "vocab_size": _whole(config, "vocab_size", path, 50257),
        "layers": _whole(config, "n_layer", path, 12),
        "width": width,
        "heads": heads,
        "context": _whole(config, "n_positions", path, 1024, minimum=2),
        "dropout": dropout,
        "bias": True,
        "activation": ACTIVATIONS[activation],
        "ln_eps": float(eps),
    }


def read_tokenizer(folder: Path) -> tuple[dict[str, Any], list[str]]:
    """(the tokenizer's JSON object, the files it came from): tokenizer.json as saved, else
    vocab.json + merges.txt built as transformers' GPT2Tokenizer builds them (the same ids)."""
    from aigc_cli.models.text.bpe import load_bpe

    path = folder / "tokenizer.json"
    if path.is_file():
        spec = read_json(path, "the tokenizer")
        try:
            load_bpe(spec)
        except ValueError as e:
            raise ImportError_(f"{path} {e}") from None
        return spec, ["tokenizer.json"]
    vocab, merges = folder / "vocab.json", folder / "merges.txt"
    if not (vocab.is_file() and merges.is_file()):
        raise ImportError_(f"{folder} has no tokenizer: expected tokenizer.json, or vocab.json and merges.txt "
                           "(download them with the model)")
    return _from_vocab_and_merges(folder, vocab, merges), ["vocab.json", "merges.txt"]


def _special(value: Any) -> str | None:
    """A special token as tokenizer_config.json or special_tokens_map.json writes it."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) and value else None


def _from_vocab_and_merges(folder: Path, vocab_path: Path, merges_path: Path) -> dict[str, Any]:
    """GPT2Tokenizer's construction (transformers' tokenization_gpt2.py): BPE without subword
    prefixes or suffixes, GPT-2's byte-level pre-tokenizer and decoder, and its special tokens
    (``<|endoftext|>`` unless tokenizer_config.json or special_tokens_map.json say otherwise)
    added as special tokens, which keeps their ids when the vocabulary has them."""
    from tokenizers import (
        AddedToken,
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        processors,
    )

    vocab, merges = read_vocab_and_merges(vocab_path, merges_path)
    settings: dict[str, Any] = {}
    for name in ("special_tokens_map.json", "tokenizer_config.json"):  # the latter wins, as in transformers
        if (folder / name).is_file():
            settings.update(read_json(folder / name, "the tokenizer's settings"))
    prefix = settings.get("add_prefix_space", False)
    try:
        tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, dropout=None, continuing_subword_prefix="",
                                         end_of_word_suffix="", fuse_unk=False))
    except Exception as e:  # noqa: BLE001 (tokenizers raises a bare Exception: a merge of unknown tokens)
        raise ImportError_(f"{merges_path} does not fit {vocab_path.name} ({str(e).splitlines()[0][:120]})") from None
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=bool(prefix))
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    specials = [_special(settings.get(k, "<|endoftext|>" if k != "pad_token" else None))
                for k in ("unk_token", "bos_token", "eos_token", "pad_token")]
    tokens = list(dict.fromkeys(t for t in specials if t))
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in tokens])
    return json.loads(tokenizer.to_str())


def convert_weights(tensors: dict[str, torch.Tensor], model: dict[str, Any], folder: Path) -> dict[str, torch.Tensor]:
    """The GPT's state dict from a GPT2LMHeadModel's tensors (``transformer.`` prefix or none)."""
    where = folder / "model.safetensors"
    plain = {k.removeprefix("transformer."): v for k, v in tensors.items()}

    def take(key: str) -> torch.Tensor:
        if key not in plain:
            raise ImportError_(f"{where} has no tensor {key!r} (a GPT-2 of {model['layers']} layers needs it)")
        return plain[key].float()  # fp16/bf16 checkpoints become the fp32 weights aigc's runs hold

    out = {"tok.weight": take("wte.weight"), "pos.weight": take("wpe.weight"),
           "ln.weight": take("ln_f.weight"), "ln.bias": take("ln_f.bias")}
    for i in range(model["layers"]):
        for theirs, (ours, transpose) in LAYER_KEYS.items():
            for part in ("weight", "bias"):
                t = take(f"h.{i}.{theirs}.{part}")
                # Conv1D: (in, out) -> Linear (out, in); biases (out,) as they are
                out[f"blocks.{i}.{ours}.{part}"] = t.t().contiguous() if transpose and part == "weight" else t
    head = plain.get("lm_head.weight")
    if head is not None and not torch.equal(head.float(), out["tok.weight"]):
        raise ImportError_(f"{where} has an lm_head.weight unlike wte.weight: aigc's GPT ties them")
    extra = sorted(k for k in plain if not k.endswith(("attn.bias", "attn.masked_bias")) and k != "lm_head.weight"
                   and _ours(k, model["layers"]) is None)
    if extra:
        raise ImportError_(f"{where} holds tensors a GPT-2 of {model['layers']} layers does not have ({extra[0]!r}); "
                           "check config.json's n_layer")
    return out


def _ours(key: str, layers: int) -> str | None:
    """The GPT's name for one of transformers' keys (without the prefix), or None."""
    if key in ("wte.weight", "wpe.weight", "ln_f.weight", "ln_f.bias"):
        return key
    parts = key.split(".")
    if len(parts) < 4 or parts[0] != "h" or not parts[1].isdigit() or int(parts[1]) >= layers:
        return None
    module = ".".join(parts[2:-1])
    return LAYER_KEYS[module][0] if module in LAYER_KEYS and parts[-1] in ("weight", "bias") else None


register_format(GPT2Format())
