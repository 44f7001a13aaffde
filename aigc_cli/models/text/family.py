"""The text family's implementation: configuration, tokenized training windows, the training task
and the sampler (options and defaults are declared in ``__init__.py``)."""

from __future__ import annotations

import json
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from aigc_cli.core.device import auto_precision
from aigc_cli.core.distributed import batch_randint
from aigc_cli.core.errors import ConfigError, DatasetError, OptionError
from aigc_cli.models.common import EMA
from aigc_cli.models.registry import ExportGraph, GraphInput, TrainingData
from aigc_cli.models.sizing import check_network
from aigc_cli.models.text.nets import GPT, RNNLM
from aigc_cli.models.text.sampling import generate, rows_loss, token_losses
from aigc_cli.models.text.tokenizer import make_tokenizer

# Sizes by architecture when --width/--layers are not given: nanoGPT's CPU configuration for the
# GPT; for the RNNs the best of 4x128, 3x128, 2x128 and 2x256 at equal time (docs/benchmarks.md).
DEFAULT_WIDTH = {"gpt": 128, "gru": 256, "lstm": 256}
DEFAULT_LAYERS = {"gpt": 4, "gru": 2, "lstm": 2}
VAL_TOKENS = 32_768  # held-out tokens scored after every epoch (evenly spread windows)
PREVIEW_TOKENS = 200
PREVIEW_COUNT = 2
PREVIEW_TEMPERATURE = 0.8


def build_model(model: dict[str, Any]) -> nn.Module:
    if model["arch"] == "gpt":
        return GPT(model["vocab_size"], model["width"], model["layers"], model["heads"], model["context"],
                   model["dropout"])
    return RNNLM(model["vocab_size"], model["width"], model["layers"], model["arch"], model["dropout"])


def resolve_precision(precision: str, device: torch.device) -> str:
    """auto: core.device.auto_precision, except that text never trains in fp16 (its logits and
    attention scores outrun fp16's range without loss scaling): fp32 there."""
    if precision != "auto":
        return precision
    chosen = auto_precision(device)
    return "fp32" if chosen == "fp16" else chosen


def start_tokens(tokenizer) -> str:
    """The text an empty prompt stands for: a newline, where the vocabulary has one."""
    return "\n" if tokenizer.kind == "byte" or "\n" in tokenizer.alphabet else tokenizer.alphabet[0]


def corpus_tokens(data, model: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """(training ids (L,), held-out ids (M,)) of a TextCorpus."""
    tokenizer = make_tokenizer(model)
    return tokenizer.encode(data.text, data.name), tokenizer.encode(data.held_out, f"{data.name}'s held-out part")


class TextTask:
    """GPT/GRU/LSTM training: next-token cross-entropy on windows of ``context`` tokens, AdamW
    with weight decay on matrices only, a linear warm-up then cosine decay to lr/10, the gradient
    norm clipped."""

    def __init__(self, config: dict[str, Any], device: torch.device):
        model, train = config["model"], config["train"]
        self.model_cfg, self.train_cfg, self.device = model, train, device
        self.context = model["context"]
        self.net = build_model(model).to(device)
        self.ema = EMA(self.net, train["ema_decay"]) if train["ema_decay"] > 0 else None
        self.modules = {"model": self.net} | ({"model_ema": self.ema.shadow} if self.ema else {})
        decay = [p for p in self.net.parameters() if p.ndim >= 2]  # matrices and embeddings
        rest = [p for p in self.net.parameters() if p.ndim < 2]  # LayerNorm scales, RNN biases
        # Fused AdamW: one kernel for all parameters instead of a dozen ops per tensor, which is
        # most of an optimizer step's time for a model this small (CPU and CUDA have it).
        self.optimizers = {"model": torch.optim.AdamW(
            [{"params": decay, "weight_decay": train["weight_decay"]}, {"params": rest, "weight_decay": 0.0}],
            lr=train["lr"], betas=(0.9, 0.99), fused=device.type in ("cpu", "cuda"))}
        self.total_steps = max(train["epochs"] * (train["items"] // train["batch_size"]), 1)
        self.tokenizer = make_tokenizer(model)
        # The network runs under autocast; weights, optimizer state and the loss stay fp32.
        self.precision = resolve_precision(train.get("precision", "fp32"), device)

    def learning_rate(self, step: int) -> float:
        lr, warmup = self.train_cfg["lr"], self.train_cfg["warmup"]
        if step < warmup:
            return lr * (step + 1) / warmup
        progress = min((step - warmup) / max(self.total_steps - warmup, 1), 1.0)
        return lr / 10 + (lr - lr / 10) * 0.5 * (1 + math.cos(math.pi * progress))

    def train_step(self, batch: torch.Tensor, labels: torch.Tensor | None, step: int) -> dict[str, torch.Tensor]:
        # batch: (B, 2T) ids; each row trains on T + 1 of them from a random offset, so that an
        # epoch sees every part of the text at every position (core/distributed.py: same on N ranks).
        b, t = batch.shape[0], self.context
        offsets = batch_randint(t, b, device=batch.device)  # (B,)
        x = batch.gather(1, offsets[:, None] + torch.arange(t + 1, device=batch.device))  # (B, T + 1)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            out = self.net(x[:, :-1])
        logits = out[0] if isinstance(out, tuple) else out  # (B, T, V)
        loss = F.cross_entropy(logits.float().flatten(0, 1), x[:, 1:].flatten())
        opt = self.optimizers["model"]
        for group in opt.param_groups:
            group["lr"] = self.learning_rate(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.train_cfg["grad_clip"])
        opt.step()
        if self.ema is not None:
            self.ema.update(self.net, step)
        return {"loss": loss.detach(), "grad_norm": norm.detach()}

    def sync_inference(self, items: torch.Tensor, labels: torch.Tensor | None) -> None:
        pass  # no BatchNorm, no prior

    def inference_modules(self) -> dict[str, nn.Module]:
        return {"model": self.ema.shadow if self.ema else self.net}

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


class TextSampler:
    """A trained text model on ``device``, its tokenizer, and what generation and scoring need."""

    def __init__(self, model: nn.Module, config: dict[str, Any], device: torch.device):
        self.config = config["model"]
        self.model = model.to(device).eval()
        self.tokenizer = make_tokenizer(self.config)
        self.start = start_tokens(self.tokenizer)  # what an empty prompt stands for
        self.context = self.config["context"]
        self.device = device

    def generate(self, prompt: torch.Tensor, n: int, length: int, generator: torch.Generator, **options):
        return generate(self.model, prompt, n, length, generator, **options)

    def token_losses(self, tokens: torch.Tensor) -> tuple[float, int]:
        return token_losses(self.model, tokens, self.context)

    def export_graph(self, fmt: str) -> ExportGraph:
        """``aigc export onnx --format logits``: tokens (N, L) int64 -> logits (N, L, V) float32,
        the next-token logits after each position from a zero state (no cache, no RNN state in or
        out); L up to the context for the GPT (its learned positions end there), any L for an RNN.
        The metadata holds the vocabulary: a user's own sampling loop needs nothing else."""
        if fmt != "logits":
            raise ConfigError(f"text runs have no {fmt!r} network to export")
        m, tok = self.config, self.tokenizer
        v, window = tok.vocab_size, self.context if m["arch"] == "gpt" else None
        meta = {"aigc.tokenizer": tok.kind, "aigc.vocab_size": str(v), "aigc.context": str(self.context)}
        if tok.kind == "char":
            meta["aigc.alphabet"] = json.dumps(tok.alphabet)  # token i is the character alphabet[i]
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


class TextFamily:
    @staticmethod
    def make_config(options: dict[str, Any], info: dict[str, Any]) -> tuple[dict, dict]:
        if info.get("alphabet") is None:
            raise ConfigError("the text family trains on text: give --dataset a text file, a folder of .txt files or "
                              "a corpus name (bard, shakespeare)")
        arch, tokenizer = options["arch"], options["tokenizer"]
        heads = options["heads"]
        width = options["width"] or DEFAULT_WIDTH[arch]
        layers = options["layers"] or DEFAULT_LAYERS[arch]
        if arch == "gpt" and width % heads:
            raise OptionError("width", f"{width} must be a multiple of --heads {heads}")
        model = {
            "arch": arch,
            "tokenizer": tokenizer,
            "alphabet": info["alphabet"] if tokenizer == "char" else None,
            "vocab_size": len(info["alphabet"]) if tokenizer == "char" else 256,
            "layers": layers,
            "width": width,
            "heads": heads if arch == "gpt" else None,
            "context": options["context"],
            "dropout": options["dropout"],
        }
        train = {"lr": options["lr"], "warmup": options["warmup"], "weight_decay": options["weight_decay"],
                 "grad_clip": options["grad_clip"], "ema_decay": options["ema_decay"],
                 "precision": options["precision"]}
        # An impossible shape or a model too large for the device: a clean error before a run exists.
        check_network(lambda: {"model": build_model(model)},
                      lambda nets, b: nets["model"](torch.zeros(b, model["context"], dtype=torch.long)),
                      {"width": width, "layers": layers, "context": model["context"]}, options["precision"])
        return model, train

    @staticmethod
    def training_data(data, config: dict[str, Any]) -> TrainingData:
        """Windows of 2 * context tokens every context tokens: (N, 2T); a step trains on T + 1
        of each from a random offset (TextTask.train_step)."""
        if not hasattr(data, "held_out"):
            raise DatasetError("the text family trains on text, not images")
        t = config["model"]["context"]
        tokens, held_out = corpus_tokens(data, config["model"])
        n = (len(tokens) - 2 * t) // t + 1
        if n < 1:
            raise DatasetError(f"{data.name} has {len(tokens):,} tokens, too few for --context {t} "
                               f"(at least {2 * t}); use a smaller --context or more text")
        items = tokens[: (n + 1) * t].unfold(0, 2 * t, t).contiguous()  # (N, 2T)
        return TrainingData(items, None, unit="tokens", per_item=t, held_out=held_out)

    @staticmethod
    def make_task(config: dict[str, Any], device: torch.device) -> TextTask:
        return TextTask(config, device)

    @staticmethod
    def build(config: dict[str, Any]) -> dict[str, nn.Module]:
        return {"model": build_model(config["model"])}

    @staticmethod
    def sampler(modules: dict[str, nn.Module], config: dict[str, Any], device: torch.device) -> TextSampler:
        return TextSampler(modules["model"], config, device)
