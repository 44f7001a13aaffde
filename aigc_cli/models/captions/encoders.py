"""Text encoders: captions -> token ids (``tokenize``) -> token embeddings (``forward``).

Every encoder maps (ids (B, L) int64, mask (B, L) bool) to states (B, L, D), the embeddings the
U-Net's cross-attention reads; padding positions carry mask False and are never attended to. A
pooled embedding, added to the U-Net's time embedding, is the masked mean of the states (unet.py),
the same rule for every encoder, so one exported denoiser graph takes the states alone. Every
tokenization keeps at least one position (a start token), so the empty caption, the unconditional
half of classifier-free guidance, has an embedding of its own.

Built from the run's ``model["text"]`` section alone (build.py ``build_encoder``); where frozen weights
come from (an aigc text run, a CLIP folder) is training's business (training/text_encoders.py).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

LEARNED_LENGTH = 96  # bytes of a caption the learned encoder reads, its start and end tokens included
LEARNED_WIDTH = 128
LEARNED_LAYERS = 2
LEARNED_HEADS = 4


class TextEncoder(nn.Module, ABC):
    """``dim``: the width D of the states; ``length``: the L every tokenization is padded to;
    ``trainable``: trained with the U-Net (else frozen, its weights from its source)."""

    dim: int
    length: int
    trainable: bool = False

    @abstractmethod
    def tokenize(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids (N, L) int64, mask (N, L) bool) for N texts, each cut to ``length`` tokens."""

    @abstractmethod
    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(N, L) ids and mask -> (N, L, D) states."""

    @abstractmethod
    def tokens_needed(self, text: str) -> int:
        """How many tokens ``text`` takes uncut: training counts the captions ``length`` cuts."""


def _pad(rows: list[list[int]], length: int, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.full((len(rows), length), pad, dtype=torch.int64)
    mask = torch.zeros(len(rows), length, dtype=torch.bool)
    for i, row in enumerate(rows):
        row = row[:length]
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.int64)
        mask[i, : len(row)] = True
    return ids, mask


class Block(nn.Module):
    """Pre-LayerNorm transformer block, bidirectional self-attention over the unmasked tokens."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.ln2 = nn.LayerNorm(width)
        self.fc = nn.Linear(width, 4 * width)
        self.out = nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        # keep (B, 1, 1, L): which keys a query may see; every row keeps its start token
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=keep)  # (B, H, L, C / H)
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, c))
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class LearnedEncoder(TextEncoder):
    """A small transformer over UTF-8 bytes, trained jointly with the U-Net: ids 0-255 are the
    bytes, 256 starts a caption, 257 ends it, 258 pads. Any text encodes; nothing to download."""

    START, END, PAD = 256, 257, 258
    trainable = True

    def __init__(self, width: int = LEARNED_WIDTH, layers: int = LEARNED_LAYERS, heads: int = LEARNED_HEADS,
                 length: int = LEARNED_LENGTH):
        super().__init__()
        self.dim, self.length = width, length
        self.tok = nn.Embedding(259, width)
        self.pos = nn.Embedding(length, width)
        self.blocks = nn.ModuleList(Block(width, heads) for _ in range(layers))
        self.ln = nn.LayerNorm(width)
        # Weights N(0, 0.02) and biases 0, as GPT-2's, but the byte embeddings N(0, 1): what a
        # token is must outweigh where it is and what the blocks add. With PyTorch's default
        # biases (up to +-0.09 here) every token got the same vector added, and with N(0, 0.02)
        # byte embeddings joint training made every caption's states alike (pooled cosine 0.996,
        # then 1.000): the U-Net had nothing to tell captions apart by and never learnt to
        # (docs/benchmarks/text-to-image.md measures both).
        for name, p in self.named_parameters():
            if p.ndim == 2:
                nn.init.normal_(p, 0.0, 0.02)
            elif name.endswith("bias") and not name.endswith(("ln1.bias", "ln2.bias", "ln.bias")):
                nn.init.zeros_(p)
        nn.init.normal_(self.tok.weight, 0.0, 1.0)

    def _row(self, text: str) -> list[int]:
        return [self.START, *text.encode("utf-8"), self.END]

    def tokenize(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        return _pad([self._row(t) for t in texts], self.length, self.PAD)

    def tokens_needed(self, text: str) -> int:
        return len(self._row(text))

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.tok(ids) + self.pos.weight[: ids.shape[1]]  # (B, L, D)
        keep = mask[:, None, None, :]
        for block in self.blocks:
            x = block(x, keep)
        return self.ln(x)


class GptEncoder(TextEncoder):
    """An aigc GPT text run, frozen: the final LayerNorm's states of ``start + caption`` (the
    run's start text first, so the empty caption has a position too; causal, so a state sees its
    caption up to itself)."""

    def __init__(self, gpt_model: dict[str, Any], start: str, length: int):
        super().__init__()
        from aigc_cli.models.text.family import build_model
        from aigc_cli.models.text.tokenizer import make_tokenizer

        self.gpt = build_model(gpt_model)
        self.tokenizer = make_tokenizer(gpt_model)
        self.start = start
        self.dim, self.length = gpt_model["width"], length

    def _row(self, text: str) -> list[int]:
        return self.tokenizer.encode(self.start + text, "a caption").tolist()

    def tokenize(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        return _pad([self._row(t) for t in texts], self.length, 0)

    def tokens_needed(self, text: str) -> int:
        return len(self._row(text))

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        gpt = self.gpt
        x = gpt.tok(ids) + gpt.pos.weight[: ids.shape[1]]  # (B, L, C)
        for block in gpt.blocks:
            x = block(x)  # causal: padding after a caption never reaches its states
        return gpt.ln(x)


def learned_section() -> dict[str, Any]:
    """The ``text`` fields of a run with the learned encoder."""
    return {"encoder": "learned", "source": None, "length": LEARNED_LENGTH, "dim": LEARNED_WIDTH,
            "learned": {"width": LEARNED_WIDTH, "layers": LEARNED_LAYERS, "heads": LEARNED_HEADS}}


def check_text_section(text: Any, where: str) -> None:
    """A run's ``text`` section has what ``build_encoder`` and the samplers read (a hand-edited or
    damaged config.json is refused in one line, not a KeyError while sampling)."""
    from aigc_cli.core.errors import RunError

    if not isinstance(text, dict):
        raise RunError(f"{where} must be an object")
    kind = text.get("encoder")
    need = {"learned": ("learned",), "run": ("gpt", "start"), "clip": ("clip",)}.get(kind)
    if need is None:
        raise RunError(f"{where} names encoder {kind!r}; aigc knows learned, run and clip")
    for key in ("length", "dim", "prompts", *need):
        if key not in text:
            raise RunError(f"{where} lacks {key!r}")
    if not isinstance(text["length"], int) or text["length"] < 2 or not isinstance(text["dim"], int):
        raise RunError(f"{where} has a bad length or dim")
    prompts = text["prompts"]
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise RunError(f"{where} field 'prompts' must be a non-empty list of texts")
