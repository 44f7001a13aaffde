"""Tune a trained run against a reward: the Python API behind ``aigc tune``.

```python
from aigc_cli.training import tune

run = tune("text3", reward="avoid:e", epochs=2, kl=0.05)
```

A tuned run is an ordinary run of its parent's family (the same architecture and tokenizer; the
parent's weights to start from, recorded in its config's ``parent``) with a ``tune`` section:
the method (tune/methods.py), the reward, the prompts (kept in the config: a resume needs no
file) and the method's options. The training loop drives it as it drives training: ``--time``,
Ctrl-C, ``--resume``, checkpoints, metrics.jsonl (reward, KL to the parent, entropy per step)
and previews. Its parent must stay (its weights are the reference every start loads); ``aigc
runs rm`` of the parent is refused while a LoRA-tuned run needs it, as for any LoRA run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch

from aigc_cli.core import distributed
from aigc_cli.core.errors import ConfigError, OptionError, RunError
from aigc_cli.core.io import check_input
from aigc_cli.core.options import resolve
from aigc_cli.core.seeding import seed_everything
from aigc_cli.models.protocol import TrainingData
from aigc_cli.models.registry import RUN_FORMAT, get_family, load_config
from aigc_cli.runs.lineage import parent_record
from aigc_cli.runs.store import Run, create_run, now_iso, resolve_run
from aigc_cli.training.loop import LoopConfig, NoProgress, ProgressSink, check_loop
from aigc_cli.training.options import time_budget
from aigc_cli.training.preflight import check_not_broken
from aigc_cli.tune.methods import get_method, method_for
from aigc_cli.tune.options import TUNE_OPTIONS

MAX_PROMPTS_BYTES = 1 << 20  # prompts travel inside config.json


def tune(run_ref: str | Run, *, device: torch.device | str = "cpu", progress: ProgressSink | None = None,
         on_run: Callable[[Run], None] | None = None, **options: Any) -> Run:
    """A new run tuned from ``run_ref`` against a reward; ``options`` are tune/options.py's."""
    from aigc_cli.training.run import _fit, _versions

    device = torch.device(device)
    config, loop, items, name = distributed.main_first(lambda: _prepare(run_ref, options), "checking the options")
    config["versions"] = _versions()
    created: list[Run] = []

    def create() -> str:
        created.append(create_run(config["family"], name=name, config=config, epochs=loop.epochs,
                                  dataset=None, device=str(device), tuned=config["parent"]["run"]))
        return created[0].id

    run_id = distributed.from_main(create, "creating the run")
    run = created[0] if created else resolve_run(run_id)
    try:
        if on_run:
            on_run(run)
        seed_everything(loop.seed)
        return _fit(run, config, None, items, loop, device, progress or NoProgress(), restore=False)
    finally:
        run.release()


def _prepare(run_ref: str | Run, options: dict[str, Any]) -> tuple[dict, LoopConfig, TrainingData, str | None]:
    """(config, LoopConfig, TrainingData, name) of a new tuned run, every input checked."""
    from aigc_cli.training.run import _adapters

    values = resolve(TUNE_OPTIONS, options, "aigc tune")
    parent = run_ref if isinstance(run_ref, Run) else resolve_run(run_ref)
    check_not_broken(parent)
    parent_config = load_config(parent)
    family = get_family(parent_config["family"])
    method = method_for(family.spec.produces, "reward")
    reward = _reward(values, family.spec.produces)
    if values["lora"] == 0 and (values["lora_alpha"] is not None or values["lora_targets"] is not None):
        raise OptionError("lora_alpha" if values["lora_alpha"] is not None else "lora_targets",
                          "applies to LoRA adapters: give --lora RANK too")
    loop = LoopConfig(epochs=values["epochs"], batch_size=values["batch_size"], seed=values["seed"],
                      log_every=values["log_every"], time_budget=time_budget(values["time"]))
    tune_cfg = {"method": method.name, "reward": reward, "prompts": read_prompts(values["prompts"]),
                **{k: values[k] for k in ("group", "length", "temperature", "kl")}}
    train = {**parent_config["train"], "lr": values["lr"], "warmup": 0, "ema_decay": 0.0, "epochs": loop.epochs,
             "batch_size": loop.batch_size, "log_every": loop.log_every, "items": 0}
    config = {
        "format": f"aigc-run/{RUN_FORMAT}", "family": family.name, "model": parent_config["model"], "train": train,
        "dataset": None, "seed": loop.seed, "eval": {"every": 0, "fid_n": None}, "tune": tune_cfg,
        "created": now_iso(), "parent": parent_record(parent),
    }
    if values["lora"]:
        config["adapters"] = _adapters(family, config, values)
    method.check(config)  # what the family's network cannot do (a prompt beyond a GPT's context)
    items = tune_items(config)
    check_loop(loop, None, distributed.world())
    return config, loop, items, values["name"]


def tune_items(config: dict[str, Any]) -> TrainingData:
    """What the loop steps through for a tuned run: batches its task makes (its samples)."""
    tune = config["tune"]
    method = get_method(tune["method"])
    steps = method.steps_per_epoch(tune, config["train"]["batch_size"])
    return TrainingData(None, unit="samples", per_item=tune["group"], steps_per_epoch=steps)


def _reward(values: dict[str, Any], produces: str) -> dict[str, Any]:
    """config.json's record of the reward, loaded once here so that a bad one fails before a run exists."""
    from aigc_cli.tune.rewards import load_reward

    spec, command, timeout = values["reward"], values["reward_cmd"], values["reward_timeout"]
    if (spec is None) == (command is None):
        raise ConfigError("give the reward once: --reward FILE.py:FUNCTION or a built-in name, or --reward-cmd "
                          "'PROGRAM ARGS'")
    if spec is not None and ":" in spec and Path(spec.rpartition(":")[0]).expanduser().suffix == ".py":
        spec = f"{Path(spec.rpartition(':')[0]).expanduser().resolve()}:{spec.rpartition(':')[2]}"  # a resume may run elsewhere
    load_reward(spec, command, produces, timeout).close()
    return {"spec": spec, "command": command, "timeout": timeout}


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
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path} is not UTF-8 text (byte {e.start}); save the prompts as UTF-8") from None
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror or e}") from None
    prompts = text.split("\n")
    if prompts and prompts[-1] == "":
        prompts.pop()  # the newline that ends the last line
    if not prompts:
        raise ConfigError(f"{path} holds no prompts; give one a line (an empty line is the empty prompt)")
    return prompts


def tuned_run(run: Run) -> Run:
    """``run``, which must be a tuned run (for ``aigc tune --resume``)."""
    if load_config(run).get("tune") is None:
        family = run.read_config().get("family")
        raise RunError(f"{run.id} was trained, not tuned; resume it with 'aigc train {family} --resume {run.id}'")
    return run
