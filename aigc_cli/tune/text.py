"""What the text methods (GRPO, DPO) share: prompts as token ids, and a policy scored token by token."""

from __future__ import annotations

import torch

from aigc_cli.core.device import autocast
from aigc_cli.tune.methods import TuneTask


def encode_prompt(tok, prompt: str, what: str) -> torch.Tensor:
    """(P,) ids of ``prompt`` by the run's tokenizer ``tok``. The empty prompt stands for the run's
    start text (a newline, GPT-2's <|endoftext|>), as in ``aigc sample``; a character outside a
    char run's alphabet is one line naming ``what``."""
    from aigc_cli.models.text.family import start_tokens

    return tok.encode(prompt or start_tokens(tok), what)


class TextTuneTask(TuneTask):
    """A text run's task tuned: its network ``net``, dropout off throughout (tokens are scored by
    the network that drew them, and compared with the parent's without it)."""

    def __init__(self, base, impl, config, device):
        super().__init__(base, impl, config, device)
        self.net = base.net
        self.net.eval()

    def logprobs(self, net, x: torch.Tensor) -> torch.Tensor:
        """(N, T - 1, V) next-token log-probabilities of ``net`` after each position of x (N, T) but the last."""
        with autocast(self.device, self.base.precision):
            out = net(x[:, :-1])
        logits = out[0] if isinstance(out, tuple) else out  # an RNN also returns its state
        return logits.float().log_softmax(-1)
