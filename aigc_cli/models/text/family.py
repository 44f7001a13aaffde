"""The text family's implementation: configuration, tokenized training windows, the training task
and the sampler (options and defaults are declared in ``__init__.py``)."""

from __future__ import annotations

import json
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from aigc_cli.core.device import autocast, resolve_precision
from aigc_cli.core.distributed import batch_randint
from aigc_cli.core.errors import ConfigError, DatasetError, OptionError, RunError, opt
from aigc_cli.core.schema import Field
from aigc_cli.models.optim import OptimizerSpec, WarmupCosine
from aigc_cli.models.graphs import ExportGraph, GraphInput
from aigc_cli.models.protocol import FamilyImpl, TextSampler, TrainingData, TrainTask
from aigc_cli.models.text import ACTIVATIONS, ARCHS, DEFAULT_BPE_VOCAB, SPEC, TEXT_PRECISIONS, TOKENIZERS
from aigc_cli.models.sizing import check_network
from aigc_cli.models.text.bpe import END_OF_TEXT, check_bpe, load_bpe, train_bpe
from aigc_cli.models.text.nets import GPT, RNNLM
from aigc_cli.models.text.sampling import generate, rows_loss, token_losses
from aigc_cli.models.text.tokenizer import make_tokenizer

# Sizes by architecture when --width/--layers are not given: nanoGPT's CPU configuration for the
# GPT; for the RNNs the best of 4x128, 3x128, 2x128 and 2x256 at equal time (docs/benchmarks/text.md).
DEFAULT_WIDTH = {"gpt": 128, "gru": 256, "lstm": 256}
DEFAULT_LAYERS = {"gpt": 4, "gru": 2, "lstm": 2}
VAL_TOKENS = 32_768  # held-out tokens scored after every epoch (evenly spread windows)
PREVIEW_TOKENS = 200
PREVIEW_COUNT = 2
PREVIEW_TEMPERATURE = 0.8
# What aigc's own GPTs are (and every GPT run before run format 3): no biases, exact GELU,
# LayerNorm's default epsilon. An imported GPT-2 has biases, "gelu_tanh" and its own epsilon.
GPT_DEFAULTS = {"bias": False, "activation": "gelu", "ln_eps": 1e-5}
GPT_ONLY = ("heads", *GPT_DEFAULTS)  # model fields an RNN run leaves null


def build_model(model: dict[str, Any]) -> nn.Module:
    if model["arch"] == "gpt":
        return GPT(model["vocab_size"], model["width"], model["layers"], model["heads"], model["context"],
                   model["dropout"], bias=model["bias"], activation=model["activation"], ln_eps=model["ln_eps"])
    return RNNLM(model["vocab_size"], model["width"], model["layers"], model["arch"], model["dropout"])


def start_tokens(tokenizer) -> str:
    """The text an empty prompt stands for: GPT-2's ``<|endoftext|>`` where a BPE vocabulary has
    it as a token (GPT-2 saw every document begin after it), else a newline (every byte and BPE
    vocabulary has one; a char alphabet without one: its first character)."""
    if tokenizer.kind == "bpe":
        return END_OF_TEXT if tokenizer.has_token(END_OF_TEXT) else "\n"
    return "\n" if tokenizer.kind == "byte" or "\n" in tokenizer.alphabet else tokenizer.alphabet[0]


def train_section(options: dict[str, Any]) -> dict[str, Any]:
    """config.json's 'train' section of the family's options (the spec's defaults for those not
    given): what a new run and an imported model (hub/gpt2.py) start training from."""
    o = {**SPEC.defaults(), **{k: v for k, v in options.items() if v is not None}}
    return {k: o[k] for k in ("lr", "warmup", "weight_decay", "grad_clip", "ema_decay", "precision")}


def corpus_tokens(data, model: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """(training ids (L,), held-out ids (M,)) of a TextCorpus."""
    tokenizer = make_tokenizer(model)
    return tokenizer.encode(data.text, data.name), tokenizer.encode(data.held_out, f"{data.name}'s held-out part")


class TextTask(TrainTask):
    """GPT/GRU/LSTM training: next-token cross-entropy on windows of ``context`` tokens, AdamW
    with weight decay on matrices only, a linear warm-up then cosine decay to lr/10 (over the
    run's steps: models/optim.py), the gradient norm clipped."""

    def __init__(self, config: dict[str, Any], device: torch.device):
        model, train = config["model"], config["train"]
        self.model_cfg, self.train_cfg, self.device = model, train, device
        self.context = model["context"]
        self.net = build_model(model).to(device)
        self.modules = {"model": self.net}  # the loop adds model_ema when --ema-decay asks for one
        self.tokenizer = make_tokenizer(model)
        # The network runs under autocast; weights, optimizer state and the loss stay fp32.
        self.precision = resolve_precision(train["precision"], device, fp16=False)

    def param_groups(self) -> dict[str, OptimizerSpec]:
        t = self.train_cfg
        decay = [p for p in self.net.parameters() if p.ndim >= 2]  # matrices and embeddings
        rest = [p for p in self.net.parameters() if p.ndim < 2]  # LayerNorm scales, RNN biases
        # Fused AdamW: one kernel for all parameters instead of a dozen ops per tensor, which is
        # most of an optimizer step's time for a model this small (CPU and CUDA have it).
        return {"model": OptimizerSpec(
            [{"params": decay, "lr": t["lr"], "weight_decay": t["weight_decay"]},
             {"params": rest, "lr": t["lr"], "weight_decay": 0.0}],
            kind="adamw", betas=(0.9, 0.99), fused=True, grad_clip=t["grad_clip"],
            schedule=WarmupCosine(t["warmup"], floor=0.1),
            ema={"model": t["ema_decay"]} if t["ema_decay"] > 0 else {})}

    def inference_names(self) -> dict[str, str]:
        return {"model": "model_ema" if "model_ema" in self.modules else "model"}

    def train_step(self, batch: torch.Tensor, labels: torch.Tensor | None, step: int) -> dict[str, torch.Tensor]:
        # batch: (B, 2T) ids; each row trains on T + 1 of them from a random offset, so that an
        # epoch sees every part of the text at every position (core/distributed.py: same on N ranks).
        b, t = batch.shape[0], self.context
        offsets = batch_randint(t, b, device=batch.device)  # (B,)
        x = batch.gather(1, offsets[:, None] + torch.arange(t + 1, device=batch.device))  # (B, T + 1)
        with autocast(self.device, self.precision):
            out = self.net(x[:, :-1])
        logits = out[0] if isinstance(out, tuple) else out  # (B, T, V)
        loss = F.cross_entropy(logits.float().flatten(0, 1), x[:, 1:].flatten())
        opt = self.optim["model"]
        opt.zero_grad()
        opt.backward(loss)
        norm = opt.step(step)  # the schedule's learning rate, clipping, the weight average
        return {"loss": loss.detach(), "grad_norm": norm.detach()}

    def validate(self, held_out: torch.Tensor) -> dict[str, float]:
        """The loss per token on the held-out text: at most VAL_TOKENS of it, in windows of
        context + 1 tokens spread evenly over it, each scored from its start as in training."""
        model = self.inference_modules()["model"]
        was = model.training
        span = self.context + 1
        n = len(held_out) - span + 1  # possible window starts
        if n < 1:
            rows = held_out[None]  # a held-out part shorter than a window: score it whole
        else:
            starts = torch.linspace(0, n - 1, min(n, max(VAL_TOKENS // self.context, 1))).long()
            rows = torch.stack([held_out[s : s + span] for s in starts.tolist()])  # (K, T + 1)
        total, count = rows_loss(model, rows)
        model.train(was)
        loss = total / max(count, 1)
        return {"val_loss": loss, "val_bits_per_token": loss / math.log(2)}

    @torch.no_grad()
    def previews(self) -> dict[str, str]:
        model = self.inference_modules()["model"]
        was = model.training
        g = torch.Generator().manual_seed(0)
        start = start_tokens(self.tokenizer)
        ids = generate(model, self.tokenizer.encode(start), PREVIEW_COUNT, PREVIEW_TOKENS, g,
                       temperature=PREVIEW_TEMPERATURE)
        model.train(was)
        return {"samples": "\n\n---\n\n".join(start + self.tokenizer.decode(row.tolist()) for row in ids) + "\n"}


class LanguageModelSampler(TextSampler):
    """A trained text model on ``device``, its tokenizer, and what generation and scoring need."""

    def __init__(self, model: nn.Module, config: dict[str, Any], device: torch.device):
        self.config = config["model"]
        self.model = model.to(device).eval()
        self.tokenizer = make_tokenizer(self.config)
        self.start = start_tokens(self.tokenizer)  # what an empty prompt stands for
        self.context = self.config["context"]
        self.device = device

    def generate(self, prompt: torch.Tensor, n: int, length: int, generator: torch.Generator, *, on_tokens=None,
                 temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                 cache: bool = True) -> torch.Tensor:
        return generate(self.model, prompt, n, length, generator, temperature=temperature, top_k=top_k,
                        top_p=top_p, on_tokens=on_tokens, cache=cache)

    def token_losses(self, tokens: torch.Tensor, progress=None) -> tuple[float, int]:
        return token_losses(self.model, tokens, self.context, progress)

    def export_graph(self, fmt: str) -> ExportGraph:
        """``aigc export onnx --format logits``: tokens (N, L) int64 -> logits (N, L, V) float32,
        the next-token logits after each position from a zero state (no cache, no RNN state in or
        out); L up to the context for the GPT (its learned positions end there), any L for an RNN.
        The metadata holds the vocabulary: a user's own sampling loop needs nothing else (a bpe
        run's: the tokenizer file's JSON, for ``tokenizers.Tokenizer.from_str``)."""
        if fmt != "logits":
            raise ConfigError(f"text runs have no {fmt!r} network to export")
        m, tok = self.config, self.tokenizer
        v, window = m["vocab_size"], self.context if m["arch"] == "gpt" else None  # an imported model may pad V
        meta = {"aigc.tokenizer": tok.kind, "aigc.vocab_size": str(v), "aigc.context": str(self.context)}
        if tok.kind == "char":
            meta["aigc.alphabet"] = json.dumps(tok.alphabet)  # token i is the character alphabet[i]
        elif tok.kind == "bpe":
            meta["aigc.bpe"] = tok.to_json()
        tokens = GraphInput("tokens", "int64", ("L",),
                            lambda n, g, L: torch.randint(0, v, (n, L), generator=g, dtype=torch.int64),
                            {"vocab_size": v})
        return ExportGraph(
            module=LogitsExport(self.model).eval(),
            inputs=(tokens,),
            output="logits",
            output_dtype="float32",
            output_shape=("L", v),
            summary=f"aigc text {m['arch']} ({tok.kind} tokens): (tokens) -> next-token logits",
            metadata=meta,
            atol=1e-4,  # logits of order 1 to 10, not [0, 1] images
            dynamic={"L": (1, window)},
        )


class LogitsExport(nn.Module):
    """A text model as ``--format logits`` exports it: (N, L) ids -> (N, L, V) logits, from a zero
    state (an RNN) or an empty cache (the GPT: L at most its context; a longer input fails in ONNX
    Runtime on the position table instead of giving wrong logits)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        out = self.model(tokens)
        logits = out[0] if isinstance(out, tuple) else out  # an RNN also returns its state
        return logits.float()


class TextFamily(FamilyImpl):
    model_fields = (
        Field("arch", str, choices=ARCHS),
        Field("tokenizer", str, choices=TOKENIZERS),
        Field("alphabet", str, optional=True),  # char runs: token i is alphabet[i]
        Field("bpe", dict, optional=True),  # bpe runs: the tokenizer's JSON object (models/text/bpe.py)
        Field("vocab_size", int, minimum=1),
        Field("layers", int, minimum=1),
        Field("width", int, minimum=1),
        Field("heads", int, minimum=1, optional=True),
        Field("context", int, minimum=2),
        Field("dropout", float, minimum=0.0, below=1.0),
        # GPT runs only (null for an RNN): GPT_DEFAULTS for aigc's own, GPT-2's when imported
        Field("bias", bool, optional=True),
        Field("activation", str, choices=ACTIVATIONS, optional=True),
        Field("ln_eps", float, minimum=0.0, below=1.0, optional=True),
    )
    train_fields = (
        Field("lr", float, minimum=0.0),
        Field("warmup", int, minimum=0),
        Field("weight_decay", float, minimum=0.0),
        Field("grad_clip", float, minimum=0.0),
        Field("ema_decay", float, minimum=0.0, below=1.0),
        Field("precision", str, choices=TEXT_PRECISIONS),
    )

    def check_config(self, config: dict[str, Any], where: str) -> None:
        super().check_config(config, where)
        m = config["model"]
        if m["tokenizer"] == "char":
            alphabet = m["alphabet"]
            if not alphabet:
                raise RunError(f"{where} 'model' field 'alphabet' is missing: a char run needs its alphabet")
            if len(set(alphabet)) != len(alphabet):
                twice = next(c for c in alphabet if alphabet.count(c) > 1)
                raise RunError(f"{where} 'model' field 'alphabet' holds {twice!r} twice")
            if len(alphabet) != m["vocab_size"]:
                raise RunError(f"{where} 'model' field 'alphabet' has {len(alphabet)} characters, "
                               f"but 'vocab_size' is {m['vocab_size']}")
        elif m["tokenizer"] == "bpe":
            if m["bpe"] is None:
                raise RunError(f"{where} 'model' field 'bpe' is missing: a bpe run needs its tokenizer")
            check_bpe(m["bpe"], m["vocab_size"], f"{where} 'model'")
        elif m["vocab_size"] != 256:
            raise RunError(f"{where} 'model' field 'vocab_size' must be 256 for byte tokens, got {m['vocab_size']}")
        if m["arch"] == "gpt":
            for name in GPT_ONLY:
                if m.get(name) is None:
                    raise RunError(f"{where} 'model' field {name!r} is missing: a gpt run needs it")
            if m["width"] % m["heads"]:
                raise RunError(f"{where} 'model' field 'width' ({m['width']}) must be a multiple of 'heads' "
                               f"({m['heads']})")

    def upgrade_config(self, config: dict[str, Any], version: int) -> dict[str, Any]:
        model = config["model"]
        if version < 3 and isinstance(model, dict):
            # Before run format 3 a GPT had GPT_DEFAULTS' architecture, and no run had BPE tokens.
            gpt = model.get("arch") == "gpt"
            model = {**{k: v if gpt else None for k, v in GPT_DEFAULTS.items()}, "bpe": None, **model}
        return {**config, "model": model, "train": {"precision": "fp32", **config["train"]}}

    def make_config(self, options: dict[str, Any], info: dict[str, Any], data: Any = None) -> tuple[dict, dict]:
        if info.get("alphabet") is None:
            raise ConfigError("the text family trains on text: give --dataset a text file, a folder of .txt files or "
                              "a corpus name (bard, shakespeare)")
        arch, tokenizer = options["arch"], options["tokenizer"]
        vocab, bpe = self._vocabulary(tokenizer, options["vocab_size"], info, data)
        heads = options["heads"]
        width = options["width"] or DEFAULT_WIDTH[arch]
        layers = options["layers"] or DEFAULT_LAYERS[arch]
        if arch == "gpt" and width % heads:
            raise OptionError("width", f"{width} must be a multiple of --heads {heads}")
        model = {
            "arch": arch,
            "tokenizer": tokenizer,
            "alphabet": info["alphabet"] if tokenizer == "char" else None,
            "bpe": bpe,
            "vocab_size": vocab,
            "layers": layers,
            "width": width,
            "heads": heads if arch == "gpt" else None,
            "context": options["context"],
            "dropout": options["dropout"],
            **{k: v if arch == "gpt" else None for k, v in GPT_DEFAULTS.items()},
        }
        train = train_section(options)
        # An impossible shape or a model too large for the device: a clean error before a run exists.
        check_network(lambda: {"model": build_model(model)},
                      lambda nets, b: nets["model"](torch.zeros(b, model["context"], dtype=torch.long)),
                      {"width": width, "layers": layers, "context": model["context"]}, options["precision"])
        return model, train

    @staticmethod
    def _vocabulary(tokenizer: str, vocab_size: int | None, info: dict[str, Any], data: Any) -> tuple[int, dict | None]:
        """(vocab_size, the bpe field) of a new run: a char run's alphabet, the 256 bytes, or a BPE
        learnt from the training split (never the held-out part, which validation scores)."""
        if tokenizer != "bpe":
            if vocab_size is not None:
                raise OptionError("vocab_size", f"applies to {opt('tokenizer')} bpe only (char and byte runs' "
                                  "vocabularies are the text's characters and the 256 bytes)")
            return (len(info["alphabet"]) if tokenizer == "char" else 256), None
        if data is None:
            raise ConfigError("a bpe tokenizer is learnt from the training text: pass the corpus to make_config "
                              "(data=...)")
        bpe = train_bpe(data.text, vocab_size or DEFAULT_BPE_VOCAB)
        return load_bpe(bpe).get_vocab_size(with_added_tokens=True), bpe

    def training_data(self, data, config: dict[str, Any]) -> TrainingData:
        """Windows of 2 * context tokens every context tokens: (N, 2T); a step trains on T + 1
        of each from a random offset (TextTask.train_step)."""
        t = config["model"]["context"]
        tokens, held_out = corpus_tokens(data, config["model"])
        n = (len(tokens) - 2 * t) // t + 1
        if n < 1:
            raise DatasetError(f"{data.name} has {len(tokens):,} tokens, too few for --context {t} "
                               f"(at least {2 * t}); use a smaller --context or more text")
        items = tokens[: (n + 1) * t].unfold(0, 2 * t, t).contiguous()  # (N, 2T)
        return TrainingData(items, None, unit="tokens", per_item=t, held_out=held_out)

    def make_task(self, config: dict[str, Any], device: torch.device) -> TextTask:
        return TextTask(config, device)

    def build(self, config: dict[str, Any]) -> dict[str, nn.Module]:
        return {"model": build_model(config["model"])}

    def sampler(self, modules: dict[str, nn.Module], config: dict[str, Any], device: torch.device) -> LanguageModelSampler:
        return LanguageModelSampler(modules["model"], config, device)

    # --init: the parent's network and tokenizer; a fine-tune may change its dropout.
    init_free = ("dropout",)

    def init_model(self, parent: dict[str, Any], fresh: dict[str, Any], parent_id: str) -> tuple[dict, list[str]]:
        if parent["tokenizer"] == "char":
            unknown = sorted(set(fresh["alphabet"] or "") - set(parent["alphabet"]))
            if unknown:
                shown = ", ".join(repr(c) for c in unknown[:5]) + (", ..." if len(unknown) > 5 else "")
                raise ConfigError(f"--init {parent_id}: this text has {len(unknown)} character(s) outside its alphabet "
                                  f"({shown}); start from a run with byte or bpe tokens (train one with --tokenizer "
                                  "byte or bpe), or use text in its alphabet")
        return super().init_model(parent, fresh, parent_id)

    def lora_targets(self, config: dict[str, Any]) -> dict[str, tuple[str, ...]]:
        # The GPT's attention and MLP projections (LoRA's and peft's choice for GPT-2: c_attn,
        # c_proj, c_fc); the RNNs' fused gate matrices are not Linear layers: no default there.
        if config["model"]["arch"] != "gpt":
            return {}
        return {"model": ("blocks.*.attn.qkv", "blocks.*.attn.proj", "blocks.*.fc", "blocks.*.out")}
