"""The text family's networks: a GPT (pre-LayerNorm decoder blocks, causal self-attention through
``scaled_dot_product_attention``, learned positions, tied input/output embeddings) and GRU/LSTM
language models (untied). Each maps token ids (B, T) to next-token logits (B, T, V), and carries
what generation needs to continue without recomputing the past: the GPT's key/value cache, the
RNN's hidden state (``forward(idx, state)`` -> ``(logits, state)``).

The GPT is GPT-2's architecture when built with ``bias=True, activation="gelu_tanh"`` (what an
imported GPT-2 checkpoint gets, hub/gpt2.py); aigc's own GPTs keep no biases and exact GELU.
Its module names (``attn.qkv``, ``attn.proj``, ``fc``, ``out``) are what adapters attach to.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from aigc_cli.models.text import ACTIVATIONS


class KVCache:
    """Keys and values of every layer, preallocated for ``length`` positions: (B, H, length, D)."""

    def __init__(self, layers: int, batch: int, heads: int, length: int, head_dim: int, like: torch.Tensor):
        shape = (batch, heads, length, head_dim)
        self.k = [like.new_zeros(shape) for _ in range(layers)]
        self.v = [like.new_zeros(shape) for _ in range(layers)]
        self.length, self.filled = length, 0

    def extend(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write this step's (B, H, T, D) keys and values; return all so far."""
        end = self.filled + k.shape[2]
        self.k[layer][:, :, self.filled:end] = k
        self.v[layer][:, :, self.filled:end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]


class SelfAttention(nn.Module):
    def __init__(self, width: int, heads: int, dropout: float, bias: bool = False):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(width, 3 * width, bias=bias)  # q, k and v in one matmul: (C) -> (3C), q first
        self.proj = nn.Linear(width, width, bias=bias)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)  # each (B, H, T, D)
        past = 0
        if cache is not None:
            past = cache.filled
            k, v = cache.extend(layer, k, v)
        # Several new positions only ever come on an empty cache (a prompt, a re-prefill): causal
        # among themselves; one new position attends to everything before it, no mask needed.
        assert past == 0 or t == 1, "several positions are fed only to an empty cache"
        if q.device.type == "cpu" and q.dtype != torch.float32:
            # Under bf16 autocast on the CPU the matmuls gain 4x (AMX), but the CPU's attention
            # kernel is 8x slower in bf16 than in fp32 (backward): attention stays fp32 there.
            with torch.autocast("cpu", enabled=False):
                y = self._attend(q.float(), k.float(), v.float(), past)
        else:
            y = self._attend(q, k, v, past)
        return self.drop(self.proj(y.transpose(1, 2).reshape(b, t, c)))

    def _attend(self, q, k, v, past: int) -> torch.Tensor:
        # Causal on an empty cache (training, a prompt); one position after cached ones sees them
        # all. Decided by the cache, a Python int, not by T: torch.export traces T as a symbol.
        return F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0,
                                              is_causal=past == 0)  # (B, H, T, D)


class Block(nn.Module):
    def __init__(self, width: int, heads: int, dropout: float, bias: bool = False, activation: str = "gelu",
                 ln_eps: float = 1e-5):
        super().__init__()
        self.ln1 = nn.LayerNorm(width, eps=ln_eps, bias=bias)
        self.attn = SelfAttention(width, heads, dropout, bias)
        self.ln2 = nn.LayerNorm(width, eps=ln_eps, bias=bias)
        self.fc = nn.Linear(width, 4 * width, bias=bias)
        self.out = nn.Linear(4 * width, width, bias=bias)
        self.drop = nn.Dropout(dropout)
        self.approximate = "tanh" if activation == "gelu_tanh" else "none"

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), cache, layer)
        return x + self.drop(self.out(F.gelu(self.fc(self.ln2(x)), approximate=self.approximate)))


class GPT(nn.Module):
    def __init__(self, vocab: int, width: int, layers: int, heads: int, context: int, dropout: float, *,
                 bias: bool = False, activation: str = "gelu", ln_eps: float = 1e-5):
        super().__init__()
        if width % heads:
            raise ValueError(f"--width {width} must be a multiple of --heads {heads}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        self.context, self.heads, self.layers = context, heads, layers
        self.tok = nn.Embedding(vocab, width)
        self.pos = nn.Embedding(context, width)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(width, heads, dropout, bias, activation, ln_eps) for _ in range(layers))
        self.ln = nn.LayerNorm(width, eps=ln_eps, bias=bias)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # GPT-2's: N(0, 0.02), and the projections into the residual stream scaled down by
        # sqrt(2 * layers) so that the stream's variance does not grow with depth; biases 0
        # (draws no random numbers: a run without biases initialises as before they existed).
        for name, p in self.named_parameters():
            if p.ndim == 2:
                std = 0.02 / math.sqrt(2 * self.layers) if name.endswith(("proj.weight", "out.weight")) else 0.02
                nn.init.normal_(p, 0.0, std)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def new_cache(self, batch: int, like: torch.Tensor) -> KVCache:
        width = self.tok.embedding_dim
        return KVCache(self.layers, batch, self.heads, self.context, width // self.heads, like)

    def forward(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """(B, T) ids -> (B, T, V) logits; with a cache, T new positions after the cached ones."""
        start = cache.filled if cache is not None else 0
        pos = torch.arange(start, start + idx.shape[1], device=idx.device)
        x = self.drop(self.tok(idx) + self.pos(pos))  # (B, T, C)
        for i, block in enumerate(self.blocks):
            x = block(x, cache, i)
        if cache is not None:
            cache.filled += idx.shape[1]
        return F.linear(self.ln(x), self.tok.weight)  # tied: the input embedding reads out the logits


class RNNLM(nn.Module):
    """Embedding, a GRU or LSTM stack, and a linear output layer (with a bias).

    Not tied, unlike the GPT: with the embedding as the output layer the RNNs learned several
    times slower at equal wall time (docs/benchmarks/text.md), as char-rnn's untied layers suggest.
    """

    def __init__(self, vocab: int, width: int, layers: int, arch: str, dropout: float):
        super().__init__()
        self.arch = arch
        self.tok = nn.Embedding(vocab, width)
        rnn = nn.GRU if arch == "gru" else nn.LSTM
        self.rnn = rnn(width, width, layers, batch_first=True, dropout=dropout if layers > 1 else 0.0)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(width, vocab)

    def forward(self, idx: torch.Tensor, state=None):
        """(B, T) ids (and the state after the previous ones) -> ((B, T, V) logits, state)."""
        h, state = self.rnn(self.drop(self.tok(idx)), state)  # (B, T, C)
        return self.head(self.drop(h)), state
