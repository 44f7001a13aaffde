"""The options of ``aigc tune``, with their defaults: read by its flags and help, by
``training.tune()`` and by docs/options.md. Light to import (no torch)."""

from __future__ import annotations

from dataclasses import replace

from aigc_cli.core.options import SEED_MAX, Option
from aigc_cli.training.options import INIT_OPTIONS, LOG_EVERY

# What the run learns from: a reward (a file's function, a built-in, or a program), or preferences.
SIGNAL_OPTIONS = (
    Option("reward", str, None, "The reward: FILE.py:FUNCTION (called with a batch of samples: text as a list of "
           "str, images as a uint8 array (N, H, W, C)) or a built-in name (aigc tune --list-rewards).",
           default_text="none"),
    Option("reward_cmd", str, None, "The reward as a program: it reads one JSON object a line on stdin and "
           "writes one score a line on stdout, started for each batch.", default_text="none"),
    Option("reward_timeout", float, 60.0, "Seconds a --reward-cmd may take for one batch.", above=0.0),
    Option("preferences", str, None, "A JSONL file of preference pairs, {\"prompt\", \"chosen\", \"rejected\"} a "
           "line (TRL's field names): tunes with DPO instead of a reward.", default_text="none"),
)
# How far a reward may pull the run from its parent (GRPO and DDPO).
KL_OPTIONS = (
    Option("kl", float, 0.05, "Weight of the KL penalty to the parent (0: none).", minimum=0.0),
)
# How text is sampled (GRPO, tune/grpo.py).
TEXT_OPTIONS = (
    Option("prompts", str, None, "A UTF-8 file of prompts, one a line (empty lines: the empty prompt).",
           default_text="the empty prompt"),
    Option("group", int, 8, "Completions per prompt; each is judged against its group's mean reward.", minimum=2),
    Option("length", int, 64, "Tokens per completion.", minimum=1),
    Option("temperature", float, 1.0, "Sampling temperature of the completions.", above=0.0),
)
# How diffusion chains are sampled and trained (DDPO, tune/ddpo.py).
DIFFUSION_OPTIONS = (
    Option("steps", int, 10, "DDIM steps (eta 1) of each sampled chain.", minimum=2, maximum=1000),
    Option("clip", float, 1e-4, "Clipping of the importance ratio (DDPO's default).", above=0.0),
    Option("minibatches", int, 2, "Parts a step's chains train in, an optimizer step each.", minimum=1),
    Option("inner_epochs", int, 1, "Passes over a step's chains.", minimum=1),
    Option("label", int, None, "Tune a class-conditional run on this class alone.", default_text="every class",
           minimum=0),
)
# How far preferences may pull the run (DPO, tune/dpo.py).
DPO_OPTIONS = (
    Option("beta", float, 0.1, "DPO's beta: the strength of the pull back to the parent (smaller: the run may move "
           "further from it).", above=0.0),
)
LOOP_OPTIONS = (
    Option("lr", float, 1e-4, "Peak AdamW learning rate (cosine decay to lr/10 over the run).", above=0.0),
    Option("epochs", int, 4, "Epochs: passes over --prompts or --preferences; 25 steps without them.",
           short="-e", minimum=1),
    Option("time", str, None, "Wall-clock budget (90s, 10m, 1h30m): stop at a clean checkpoint when it runs out.",
           default_text="none"),
    Option("batch_size", int, 8, "Prompts per step (each with --group completions), preference pairs, or "
           "diffusion chains.",
           short="-b", minimum=1),
    Option("seed", int, 0, "Seed of the prompts' order and the sampling.", minimum=0, maximum=SEED_MAX),
    Option("name", str, None, "A name to refer to the run by."),
    Option("log_every", int, LOG_EVERY, "Steps between two rows of metrics.jsonl.", minimum=1),
)
LORA_OPTIONS = tuple(
    replace(o, help="Tune LoRA adapters of this rank on the run's frozen weights; the tuned run holds only the "
            "adapters (0: tune every weight). Adapters want a higher --lr (about 5x).") if o.name == "lora" else o
    for o in INIT_OPTIONS if o.name in ("lora", "lora_alpha", "lora_targets"))
TUNE_OPTIONS = (*SIGNAL_OPTIONS, *KL_OPTIONS, *TEXT_OPTIONS, *DIFFUSION_OPTIONS, *DPO_OPTIONS, *LOOP_OPTIONS,
                *LORA_OPTIONS)
# The options one method reads and another does not (tune/methods.py TuneMethod.options).
METHOD_OPTIONS = tuple(o.name for o in (*SIGNAL_OPTIONS, *KL_OPTIONS, *TEXT_OPTIONS, *DIFFUSION_OPTIONS, *DPO_OPTIONS))
