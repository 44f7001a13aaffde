"""DPO for text runs: learn from preference pairs, no reward model (Rafailov et al. 2023).

Each pair is a prompt and two completions, the chosen and the rejected. With ``d = log pi(y|x) -
log pi_ref(y|x)`` (the completion's summed token log-probabilities, less the frozen parent's),
the loss is ``-log sigmoid(beta * (d_chosen - d_rejected))``: the run raises the chosen
completion's likelihood relative to the parent, and lowers the rejected one's, as far as
``--beta`` lets it move. Logged per step as TRL logs them: the implicit rewards ``beta * d`` of
the chosen and the rejected, their margin, and the share of pairs ranked right.

The file: JSON lines with TRL's field names, ``{"prompt": ..., "chosen": ..., "rejected": ...}``
(strings; no "prompt": the empty prompt, which stands for the run's start text as in ``aigc
sample``). The run keeps the file's path and sha256; a resume reads it again and refuses it if it
changed. A pair longer than a GPT's context is refused with its line (TRL truncates; a silent cut
of a completion would train on what nobody preferred). Dropout is off, as in GRPO.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from aigc_cli.core.errors import ConfigError
from aigc_cli.core.io import check_input
from aigc_cli.data.text import decode_text
from aigc_cli.models.protocol import TrainingData
from aigc_cli.models.text.tokenizer import make_tokenizer
from aigc_cli.tune.methods import TuneMethod, register_method
from aigc_cli.tune.text import TextTuneTask, encode_prompt

MAX_BYTES = 256 << 20  # a preference file read whole


def read_pairs(path: str | Path) -> tuple[list[tuple[str, str, str]], str]:
    """((prompt, chosen, rejected) of every line of a JSONL file, the sha256 of its bytes), from
    one read; one line naming the first bad line."""
    p = Path(path).expanduser()
    size = check_input(p, "a preference file (JSON lines)", error=ConfigError).st_size
    if size > MAX_BYTES:
        raise ConfigError(f"{path} holds {size:,} bytes; at most {MAX_BYTES:,}")
    try:
        data = p.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror or e}") from None
    lines = decode_text(data, str(path)).split("\n")
    pairs = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path} line {n}: not JSON ({e.msg})") from None
        if not isinstance(row, dict):
            raise ConfigError(f"{path} line {n}: a JSON object with 'prompt', 'chosen' and 'rejected' is needed")
        for key in ("chosen", "rejected"):
            if not isinstance(row.get(key), str) or not row[key]:
                raise ConfigError(f"{path} line {n}: {key!r} must be a non-empty string")
        if not isinstance(row.get("prompt", ""), str):
            raise ConfigError(f"{path} line {n}: 'prompt' must be a string")
        pairs.append((row.get("prompt", ""), row["chosen"], row["rejected"]))
    if not pairs:
        raise ConfigError(f"{path} holds no preference pairs; give one JSON object a line")
    return pairs, hashlib.sha256(data).hexdigest()


def configure(values: dict[str, Any], produces: str) -> dict[str, Any]:
    path = Path(values["preferences"]).expanduser().resolve()
    pairs, digest = read_pairs(path)
    return {"preferences": {"path": str(path), "sha256": digest, "pairs": len(pairs)}, "beta": values["beta"]}


def pair_tokens(config: dict[str, Any]) -> torch.Tensor:
    """(N, 2, 2, T) int64: for each pair, the chosen then the rejected sequence (prompt +
    completion), each as token ids and a mask of its completion's tokens; right-padded."""
    record, model = config["tune"]["preferences"], config["model"]
    path = Path(record["path"])
    pairs, digest = read_pairs(path)
    if digest != record["sha256"]:
        raise ConfigError(f"{path} has changed since this run started (sha256 differs); tuning on would not "
                          "continue the same run")
    tok = make_tokenizer(model)
    seqs = []
    for n, (prompt, chosen, rejected) in enumerate(pairs, 1):
        p = encode_prompt(tok, prompt, f"pair {n}'s prompt")
        pair = []
        for key, text in (("chosen", chosen), ("rejected", rejected)):
            c = tok.encode(text, f"pair {n}'s {key}")
            if model["arch"] == "gpt" and len(p) + len(c) > model["context"] + 1:
                raise ConfigError(f"{path}: pair {n}'s prompt and {key} are {len(p) + len(c)} tokens, more than the "
                                  f"run's context of {model['context']} (+1); shorten it")
            pair.append((torch.cat([p, c]), torch.cat([torch.zeros(len(p)), torch.ones(len(c))]).long()))
        seqs.append(pair)
    width = max(len(s) for pair in seqs for s, _ in pair)
    out = torch.zeros(len(seqs), 2, 2, width, dtype=torch.long)
    for i, pair in enumerate(seqs):
        for j, (ids, mask) in enumerate(pair):
            out[i, j, 0, : len(ids)], out[i, j, 1, : len(mask)] = ids, mask
    return out


def items(config: dict[str, Any]) -> TrainingData:
    return TrainingData(pair_tokens(config), unit="pairs")


class DPOTask(TextTuneTask):
    def _seq_logp(self, net, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(N,) summed log-probabilities of each row's completion tokens."""
        logp = self.logprobs(net, x).gather(-1, x[:, 1:, None]).squeeze(-1)
        return (logp * mask[:, 1:]).sum(1)

    def train_step(self, batch: torch.Tensor, labels: torch.Tensor | None, step: int) -> dict[str, torch.Tensor]:
        b = batch.shape[0]
        x, mask = batch[:, :, 0].flatten(0, 1), batch[:, :, 1].flatten(0, 1).float()  # (2B, T): chosen, rejected
        policy = self._seq_logp(self.net, x, mask)
        with torch.no_grad():
            ref = self._seq_logp(self.reference["model"], x, mask)
        d = (policy - ref).view(b, 2)
        beta = self.tune["beta"]
        margin = beta * (d[:, 0] - d[:, 1])
        loss = -F.logsigmoid(margin).mean()
        opt = self.optim["model"]
        opt.zero_grad()
        opt.backward(loss)
        norm = opt.step(step)
        return {"loss": loss.detach(), "reward_chosen": (beta * d[:, 0]).mean().detach(),
                "reward_rejected": (beta * d[:, 1]).mean().detach(), "margin": margin.mean().detach(),
                "accuracy": (margin > 0).float().mean(), "grad_norm": norm.detach()}

    def previews(self) -> dict[str, str]:
        return self.base.previews()


register_method(TuneMethod(
    name="dpo", description="direct preference optimization on chosen/rejected pairs (text)",
    produces="text", learns_from="preferences", make_task=DPOTask, options=("preferences", "beta"),
    configure=configure, items=items))
