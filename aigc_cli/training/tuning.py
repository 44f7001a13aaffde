"""Tune a trained run against a reward: the Python API behind ``aigc tune``.

```python
from aigc_cli.training import tune

run = tune("text3", reward="avoid:e", epochs=2, kl=0.05)
```

A tuned run is an ordinary run of its parent's family (the same architecture and tokenizer; the
parent's weights to start from, recorded in its config's ``parent``) with a ``tune`` section:
the method (tune/methods.py) and what it learns from: the reward and the prompts (kept in the
config: a resume needs no file), or the preference file (its path and digest) and its options. The training loop drives it as it drives training: ``--time``,
Ctrl-C, ``--resume``, checkpoints, metrics.jsonl (reward, KL to the parent, entropy per step)
and previews. Its parent must stay (its weights are the reference every start loads); ``aigc
runs rm`` of the parent is refused while a LoRA-tuned run needs it, as for any LoRA run.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from aigc_cli.core import distributed
from aigc_cli.core.errors import ConfigError, OptionError, RunError
from aigc_cli.core.options import resolve
from aigc_cli.models.protocol import TrainingData
from aigc_cli.models.registry import RUN_FORMAT, get_family, load_config
from aigc_cli.runs.lineage import parent_record
from aigc_cli.runs.store import Run, now_iso, resolve_run
from aigc_cli.training.loop import LoopConfig, ProgressSink, check_loop
from aigc_cli.training.options import time_budget
from aigc_cli.training.preflight import check_not_broken
from aigc_cli.tune.methods import get_method, method_for
from aigc_cli.training.tune_options import METHOD_OPTIONS, TUNE_OPTIONS


def tune(run_ref: str | Run, *, device: torch.device | str = "cpu", progress: ProgressSink | None = None,
         on_run: Callable[[Run], None] | None = None, **options: Any) -> Run:
    """A new run tuned from ``run_ref`` against a reward; ``options`` are training/tune_options.py's."""
    from aigc_cli.training.run import _versions, create_and_fit

    device = torch.device(device)
    config, loop, items, name = distributed.main_first(lambda: _prepare(run_ref, options), "checking the options")
    config["versions"] = _versions()
    return create_and_fit(config, loop, None, items, device, progress, on_run, name, dataset=None,
                          tuned=config["parent"]["run"])


def check_new(run_ref: str | Run, options: dict[str, Any], world: int) -> None:
    """Every check of a new tuned run, on ``world`` processes, before any starts (--nproc)."""
    _, loop, items, _ = _prepare(run_ref, options)
    check_loop(loop, len(items) if items.items is not None else None, world)


def _prepare(run_ref: str | Run, options: dict[str, Any]) -> tuple[dict, LoopConfig, TrainingData, str | None]:
    """(config, LoopConfig, TrainingData, name) of a new tuned run, every input checked."""
    from aigc_cli.training.run import _adapters

    values = resolve(TUNE_OPTIONS, options, "aigc tune")
    parent = run_ref if isinstance(run_ref, Run) else resolve_run(run_ref)
    check_not_broken(parent)
    parent_config = load_config(parent)
    family = get_family(parent_config["family"])
    if values["preferences"] is None and values["reward"] is None and values["reward_cmd"] is None:
        raise ConfigError("give what the run learns from: --reward FILE.py:FUNCTION or a built-in name (aigc tune "
                          "--list-rewards), --reward-cmd 'PROGRAM ARGS', or --preferences FILE.jsonl")
    if values["preferences"] is not None and (values["reward"] is not None or values["reward_cmd"] is not None):
        raise ConfigError("give a reward (--reward, --reward-cmd) or --preferences, not both")
    method = method_for(family.name, family.spec.produces, "reward" if values["preferences"] is None else "preferences")
    stray = [k for k in METHOD_OPTIONS if options.get(k) is not None and k not in method.options]
    if stray:
        raise OptionError(stray[0], f"does not apply to {method.name} ({method.description})")
    if values["lora"] == 0 and (values["lora_alpha"] is not None or values["lora_targets"] is not None):
        raise OptionError("lora_alpha" if values["lora_alpha"] is not None else "lora_targets",
                          "applies to LoRA adapters: give --lora RANK too")
    loop = LoopConfig(epochs=values["epochs"], batch_size=values["batch_size"], seed=values["seed"],
                      log_every=values["log_every"], time_budget=time_budget(values["time"]))
    tune_cfg = {"method": method.name, **method.configure(values, family.spec.produces)}
    train = {**parent_config["train"], "lr": values["lr"], "warmup": 0, "ema_decay": 0.0, "epochs": loop.epochs,
             "batch_size": loop.batch_size, "log_every": loop.log_every}
    config = {
        "format": f"aigc-run/{RUN_FORMAT}", "family": family.name, "model": parent_config["model"], "train": train,
        "dataset": None, "seed": loop.seed, "eval": {"every": 0, "fid_n": None}, "tune": tune_cfg,
        "created": now_iso(), "parent": parent_record(parent),
    }
    if values["lora"]:
        config["adapters"] = _adapters(family, config, values)
    method.check(config)  # what the family's network cannot do (a prompt beyond a GPT's context)
    items = tune_items(config)
    train["items"] = len(items)  # what an epoch steps through (0: the task makes its batches)
    check_loop(loop, len(items) if items.items is not None else None, distributed.world())
    return config, loop, items, values["name"]


def tune_items(config: dict[str, Any]) -> TrainingData:
    """What the loop steps through for a tuned run: its method's (samples it makes, or pairs)."""
    return get_method(config["tune"]["method"]).items(config)


def tuned_run(run: Run) -> Run:
    """``run``, which must be a tuned run (for ``aigc tune --resume``)."""
    config = load_config(run)
    if config.get("tune") is None:
        raise RunError(f"{run.id} was trained, not tuned; resume it with 'aigc train {config['family']} --resume "
                       f"{run.id}'")
    return run
