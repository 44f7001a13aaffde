"""Generation and scoring for the text family: next-token choice (temperature, top-k, top-p),
steppers that continue a sequence in constant work per token (the GPT's key/value cache, the
RNN's hidden state), and the loss per token over a text.

Randomness comes from one CPU generator seeded by ``--seed``: the logits are moved to the CPU
before a token is drawn, so a seed gives the same text on any device's logits of equal value.

Both run on the CPU threads that core/threads.py chooses for the size of their steps: one token
of n continuations, or one scoring batch (an RNN's: one time step of it), is small enough for one
thread at the default sizes, which keeps them fast when another job shares the cores.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from aigc_cli.core.threads import cpu_threads, step_flops
from aigc_cli.models.text.nets import GPT


def pick(logits: torch.Tensor, generator: torch.Generator, temperature: float = 1.0, top_k: int | None = None,
         top_p: float | None = None) -> torch.Tensor:
    """(n, V) logits -> (n,) token ids on the CPU. Temperature 0 takes the most likely token."""
    logits = logits.float().cpu()
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]  # (n, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1:
        # Nucleus sampling: the smallest set of tokens whose probability reaches top_p (at least one).
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        drop = probs.cumsum(-1) - probs >= top_p  # the mass before a token already reaches top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(1)


SCORE_BATCH = 64  # rows of context + 1 tokens scored at once


class Stepper:
    """Continues n sequences one token at a time: ``start(ids (n, P))`` and then ``step(ids (n,))``
    each return the next-token logits (n, V)."""

    def __init__(self, model: nn.Module, cache: bool = True):
        self.model, self.cache = model, cache
        self.gpt = isinstance(model, GPT)
        self.history: torch.Tensor | None = None  # (n, L): what the GPT may need to re-read
        self.state = None

    def start(self, ids: torch.Tensor) -> torch.Tensor:
        self.history = ids
        if not self.gpt:
            logits, self.state = self.model(ids)  # the whole prompt once; then the state carries it
            return logits[:, -1]
        return self._prefill(ids[:, -self.model.context:])

    def _prefill(self, ids: torch.Tensor) -> torch.Tensor:
        if not self.cache:
            return self.model(ids)[:, -1]
        self.state = self.model.new_cache(len(ids), self.model.tok.weight)
        return self.model(ids, self.state)[:, -1]

    def step(self, ids: torch.Tensor) -> torch.Tensor:
        ids = ids[:, None]  # (n, 1)
        if not self.gpt:
            logits, self.state = self.model(ids, self.state)
            return logits[:, -1]
        self.history = torch.cat([self.history[:, -self.model.context:], ids], dim=1)
        if not self.cache:
            return self.model(self.history[:, -self.model.context:])[:, -1]  # nanoGPT's way: re-read it all
        if self.state.filled == self.model.context:
            # The cache holds the whole context: start a new one from the last half (a
            # re-read of context/2 tokens every context/2 steps, so still linear in the length).
            return self._prefill(self.history[:, -(self.model.context // 2 + 1):])
        return self.model(ids, self.state)[:, -1]


@torch.inference_mode()
def generate(model: nn.Module, prompt: torch.Tensor, n: int, length: int, generator: torch.Generator,
             temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
             on_tokens: Callable[[torch.Tensor], None] | None = None, cache: bool = True) -> torch.Tensor:
    """(n, length) new token ids after ``prompt`` (P,) ids; ``on_tokens((n,) ids)`` hears each step."""
    device = next(model.parameters()).device
    with cpu_threads(step_flops(model, n), device):  # a step: one token of each of the n rows
        stepper = Stepper(model.eval(), cache)
        logits = stepper.start(prompt.to(device).expand(n, -1))
        out = []
        for i in range(length):
            ids = pick(logits, generator, temperature, top_k, top_p)  # (n,)
            out.append(ids)
            if on_tokens is not None:
                on_tokens(ids)
            if i + 1 < length:
                logits = stepper.step(ids.to(device))
    return torch.stack(out, dim=1) if out else torch.empty(n, 0, dtype=torch.int64)


def windows(tokens: torch.Tensor, context: int) -> torch.Tensor:
    """(N, context + 1) consecutive windows of ``tokens``, overlapping by one token: each scores
    its last ``context`` tokens, every token but the first once. A shorter rest is left out."""
    n = max((len(tokens) - 1) // context, 0)
    if n == 0:
        return tokens.new_empty(0, context + 1)
    return tokens[: n * context + 1].unfold(0, context + 1, context)


@torch.inference_mode()
def token_losses(model: nn.Module, tokens: torch.Tensor, context: int,
                 progress: Callable[[int, int], None] | None = None) -> tuple[float, int]:
    """(sum of the next-token losses in nats, tokens scored) over ``tokens`` (L,): windows of
    ``context`` tokens, each scored from its start as in training (models/text/family.py).
    ``progress(done, total)`` hears of every batch of windows."""
    rows = windows(tokens, context)
    batch = max(min(len(rows), SCORE_BATCH), 1)
    # A step: a GPT scores a batch's B x T tokens at once, an RNN one time step of B rows.
    parallel = batch * context if isinstance(model, GPT) else batch
    with cpu_threads(step_flops(model, parallel), next(model.parameters()).device):
        total, count = rows_loss(model, rows, SCORE_BATCH, progress)
        scored = len(rows) * context
        if len(tokens) - 1 > scored:  # the tokens after the last whole window: one shorter window
            rest, n = rows_loss(model, tokens[scored:][None])
            total, count = total + rest, count + n
    return total, count


@torch.inference_mode()
def rows_loss(model: nn.Module, rows: torch.Tensor, batch_size: int = SCORE_BATCH,
              progress: Callable[[int, int], None] | None = None) -> tuple[float, int]:
    """(sum of the next-token losses in nats, tokens scored) of (N, T + 1) rows, each scored from
    its start, ``batch_size`` rows at a time; ``progress(done, total)`` after each batch."""
    device = next(model.parameters()).device
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(rows), batch_size):
        x = rows[i : i + batch_size].to(device)
        out = model(x[:, :-1])
        logits = out[0] if isinstance(out, tuple) else out  # (B, T, V)
        total += float(F.cross_entropy(logits.flatten(0, 1).float(), x[:, 1:].flatten(), reduction="sum"))
        count += x[:, 1:].numel()
        if progress is not None:
            progress(i // batch_size + 1, -(-len(rows) // batch_size))
    return total, count
