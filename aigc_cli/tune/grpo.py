"""GRPO for text runs: policy gradient with a group baseline and a KL penalty to the parent.

Each step, every prompt of the global batch (``--batch-size`` prompts, drawn from ``--prompts``
or the run's empty prompt) gets ``--group`` completions of ``--length`` tokens from the policy
at ``--temperature``; the reward scores them; a completion's advantage is its reward less its
group's mean, over the group's standard deviation (Shao et al. 2024, DeepSeekMath). The loss, per
completion token (each token weighs the same, whatever its completion's length):

    -advantage * log pi(token)  +  kl * (exp(r) - r - 1),   r = log pi_ref(token) - log pi(token)

the second term being the k3 estimator of KL(pi || pi_ref) (Schulman 2020), unbiased and never
negative, against the parent's frozen weights. One gradient step per batch of samples: the
samples are on-policy, so GRPO's ratio is 1 and its clipping has nothing to clip (several inner
steps would need both; not done). Dropout is off throughout: the tokens are scored by the
network that drew them.

Reproducible: the prompts of a step come from (seed, step), each prompt's completions from
(seed, step, its place in the global batch): N ranks draw what one process draws, and a resumed
run continues bit-identically (given a deterministic reward).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from aigc_cli.core.distributed import rank
from aigc_cli.core.seeding import keyed_generator
from aigc_cli.core.errors import ConfigError
from aigc_cli.core.io import check_input
from aigc_cli.data.text import decode_text
from aigc_cli.models.protocol import TrainingData
from aigc_cli.models.text.sampling import generate
from aigc_cli.models.text.tokenizer import make_tokenizer
from aigc_cli.tune.methods import TuneMethod, register_method
from aigc_cli.tune.rewards import reward_record
from aigc_cli.tune.text import TextTuneTask, encode_prompt

KEY = "aigc-grpo"  # of every draw's generator (core.seeding.keyed_generator)
EMPTY_PROMPT_STEPS = 25  # steps in an epoch when every sample starts from the empty prompt
PREVIEWS = 3
MAX_PROMPTS_BYTES = 1 << 20  # prompts travel inside config.json: a resume needs no file


def configure(values: dict[str, Any], produces: str) -> dict[str, Any]:
    return {"reward": reward_record(values, produces), "prompts": read_prompts(values["prompts"]),
            **{k: values[k] for k in ("group", "length", "temperature", "kl")}}


def read_prompts(path: str | None) -> list[str]:
    """The prompts of a UTF-8 file, one a line ('' for an empty line); [] without a file."""
    if path is None:
        return []
    p = Path(path).expanduser()
    size = check_input(p, "a prompts file", error=ConfigError).st_size
    if size > MAX_PROMPTS_BYTES:
        raise ConfigError(f"{path} holds {size:,} bytes of prompts; at most {MAX_PROMPTS_BYTES:,} (they are kept in "
                          "the run's config.json)")
    try:
        data = p.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror or e}") from None
    prompts = decode_text(data, str(path)).split("\n")
    if prompts and prompts[-1] == "":
        prompts.pop()  # the newline that ends the last line
    if not prompts:
        raise ConfigError(f"{path} holds no prompts; give one a line (an empty line is the empty prompt)")
    return prompts



def prompt_ids(config: dict[str, Any]) -> list[torch.Tensor]:
    """Each prompt's token ids (tune/text.py: the empty prompt is the run's start text)."""
    tok = make_tokenizer(config["model"])
    return [encode_prompt(tok, p, f"prompt {i + 1}") for i, p in enumerate(config["tune"]["prompts"] or [""])]


def check(config: dict[str, Any]) -> None:
    """A GPT scores at most its context at once: the longest prompt and --length must fit (the
    last token is scored, never read)."""
    model, length = config["model"], config["tune"]["length"]
    longest = max(len(p) for p in prompt_ids(config))
    if model["arch"] == "gpt" and longest + length - 1 > model["context"]:
        raise ConfigError(f"the longest prompt ({longest} token{'s' if longest != 1 else ''}) and --length {length} "
                          f"exceed the run's context of {model['context']} tokens; use shorter prompts or a smaller "
                          "--length")


class GRPOTask(TextTuneTask):
    def __init__(self, base, impl, config, device):
        super().__init__(base, impl, config, device)
        self.prompts = self.tune["prompts"] or [""]
        self.ids = prompt_ids(config)
        self.batch_size, self.seed = config["train"]["batch_size"], config["seed"]
        self.stats: dict[str, torch.Tensor] = {}

    def _complete(self, prompt: torch.Tensor, n: int, g: torch.Generator) -> torch.Tensor:
        """(n, length) completion ids of ``prompt`` from the policy, as plain tensors (autograd-able)."""
        ids = generate(self.net, prompt, n, self.tune["length"], g, temperature=self.tune["temperature"])
        return ids.clone()  # out of inference mode

    def make_batch(self, batch_size: int, step: int):
        """(this rank's ``batch_size`` prompts x group rows: (N, 2, T) ids and completion mask,
        (N,) advantages); rewards kept for the step's metrics."""
        group, world_batch = self.tune["group"], self.batch_size
        which = torch.randint(len(self.ids), (world_batch,), generator=keyed_generator(KEY, self.seed, step, "prompts"))
        lo = rank() * batch_size
        rows, masks, texts, prompts = [], [], [], []
        for j in range(lo, lo + batch_size):
            p = self.ids[int(which[j])]
            done = self._complete(p, group, keyed_generator(KEY, self.seed, step, j))  # (G, L)
            rows += [torch.cat([p, c]) for c in done]
            masks += [torch.cat([torch.zeros(len(p)), torch.ones(len(c))]) for c in done]
            texts += [self.base.tokenizer.decode(c.tolist()) for c in done]
            prompts += [self.prompts[int(which[j])]] * group
        scores = torch.tensor(self.reward("text")(texts, prompts=prompts), dtype=torch.float32)  # (N,)
        by_group = scores.view(-1, group)
        adv = (by_group - by_group.mean(1, keepdim=True)) / (by_group.std(1, keepdim=True, unbiased=False) + 1e-4)
        width = max(len(r) for r in rows)
        tokens = torch.zeros(len(rows), width, dtype=torch.long)  # right-padded: a causal net never sees the pad
        mask = torch.zeros(len(rows), width, dtype=torch.long)
        for i, (r, m) in enumerate(zip(rows, masks)):
            tokens[i, : len(r)], mask[i, : len(m)] = r, m.long()
        self.stats = {"reward": scores.mean(), "reward_min": scores.min(), "reward_max": scores.max()}
        return torch.stack([tokens, mask], 1).to(self.device), adv.flatten().to(self.device)

    def train_step(self, batch: torch.Tensor, labels: torch.Tensor | None, step: int) -> dict[str, torch.Tensor]:
        x, mask, adv = batch[:, 0], batch[:, 1, 1:].float(), labels  # mask: which next tokens were sampled
        logp_all = self.logprobs(self.net, x)  # (N, T - 1, V)
        logp = logp_all.gather(-1, x[:, 1:, None]).squeeze(-1)  # (N, T - 1)
        with torch.no_grad():
            ref = self.logprobs(self.reference["model"], x).gather(-1, x[:, 1:, None]).squeeze(-1)
            entropy = -(logp_all.exp() * logp_all).sum(-1)
        count = mask.sum().clamp(min=1)
        r = ref - logp
        kl = ((r.exp() - r - 1) * mask).sum() / count
        pg = -(adv[:, None] * logp * mask).sum() / count
        loss = pg + self.tune["kl"] * kl
        opt = self.optim["model"]
        opt.zero_grad()
        opt.backward(loss)
        norm = opt.step(step)
        return {"loss": loss.detach(), **self.stats, "kl": kl.detach(), "entropy": ((entropy * mask).sum() / count),
                "grad_norm": norm.detach()}

    @torch.no_grad()
    def previews(self) -> dict[str, str]:
        net = self.inference_modules()["model"]
        out = []
        for i, (p, ids) in enumerate(list(zip(self.prompts, self.ids))[:PREVIEWS]):
            done = generate(net, ids, 1, self.tune["length"], keyed_generator(KEY, self.seed, "preview", i),
                            temperature=self.tune["temperature"])[0]
            text = self.base.tokenizer.decode(done.tolist())
            score = self.reward("text")([text], prompts=[p])[0]
            out.append(f"{p}{text}\n[reward {score:.4g}]")
        return {"samples": "\n\n---\n\n".join(out) + "\n"}


def items(config: dict[str, Any]) -> TrainingData:
    """Batches the task makes (its samples); an epoch is a pass over the prompts, or
    EMPTY_PROMPT_STEPS steps without any."""
    tune, batch = config["tune"], config["train"]["batch_size"]
    steps = max(1, len(tune["prompts"]) // batch) if tune["prompts"] else EMPTY_PROMPT_STEPS
    return TrainingData(None, unit="samples", per_item=tune["group"], steps_per_epoch=steps)


register_method(TuneMethod(
    name="grpo", description="policy gradient with a group baseline and a KL penalty to the parent (text)",
    produces="text", learns_from="reward", make_task=GRPOTask,
    options=("reward", "reward_cmd", "reward_timeout", "prompts", "group", "length", "temperature", "kl"),
    configure=configure, items=items, check=check))
