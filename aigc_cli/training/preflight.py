"""What can be checked of a training before anything slow: importing torch, loading the data,
starting ranks. ``aigc train`` calls these first (and ``--nproc`` before it starts a single
rank), so that a bad command is refused in a fraction of a second; ``train()`` and ``resume()``
make every check again, with those that need the data (the batch against the dataset's size).

Light to import: no torch, until the dataset is looked up (``check_dataset``, the last check).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aigc_cli.core.errors import OptionError, RunError
from aigc_cli.core.options import resolve
from aigc_cli.models.registry import get_family
from aigc_cli.runs.store import Run, check_name_free, check_not_written, resolve_run, validate_name
from aigc_cli.training.options import loop_options, time_budget


def check_new(family: str, given: dict[str, Any], world: int = 1) -> dict[str, Any]:
    """The loop's values of a new run of ``family``, ``given`` checked (None: not given) for
    ``world`` ranks: every option's type, bounds and choices, the time budget, the batch split
    over the ranks, the run's name, and that the dataset is a name or a path there is."""
    spec = get_family(family).spec
    options = dict(given)
    loop_opts = loop_options(spec.trains_on)
    values = resolve(loop_opts, {o.name: options.pop(o.name, None) for o in loop_opts}, "training")
    resolve(spec.options, options, f"the {family} family")
    time_budget(values["time"])
    check_split(values["batch_size"], world)
    if values["name"] is not None:
        validate_name(values["name"])
        check_name_free(values["name"])
    check_init(values)
    if spec.trains_on != "none":  # a task that makes its own batches has no dataset to look up
        check_dataset(spec.trains_on, values["dataset"], values["split"])
    return values


def check_init(values: dict[str, Any]) -> Run | str | None:
    """--init and the LoRA options agree: the run to start from (or the folder to import
    first), None for random weights. Adapters need a base to adapt."""
    if values["lora"] == 0:
        for name in ("lora_alpha", "lora_targets"):
            if values[name] is not None:
                raise OptionError(name, "applies to LoRA adapters: give --lora RANK too")
    if values["init"] is None:
        if values["lora"]:
            raise OptionError("lora", "adapts another run's weights: give --init RUN (a run, or a folder to import)")
        return None
    ref = values["init"]
    if Path(ref).expanduser().is_dir():
        return ref  # a model folder: aigc import reads it first
    return resolve_run(ref)


def check_resume(run: Run, epochs: int | None = None, time: str | None = None, world: int = 1) -> None:
    """``run`` can be continued on ``world`` ranks: the new epoch count and budget are valid, it is
    not broken, its batch splits over the ranks, and nobody is writing it (its lock is free)."""
    check_resume_options(epochs, time)
    check_not_broken(run)
    check_not_imported(run)
    batch_size = run.read_config()["train"].get("batch_size")
    if isinstance(batch_size, int) and not isinstance(batch_size, bool):
        check_split(batch_size, world)
    check_not_written(run)


def check_resume_options(epochs: int | None, time: str | None) -> float | None:
    """The seconds of ``time`` (None: no budget), with ``epochs`` checked."""
    if epochs is not None and epochs < 1:
        raise OptionError("epochs", f"must be at least 1, got {epochs}")
    return time_budget(time)


def check_not_broken(run: Run) -> None:
    meta = run.read_meta()
    if meta["status"] == "broken":
        raise RunError(f"{run.id} is broken ({meta['error']}); it cannot be resumed, remove it with 'aigc runs rm {run.id}'")


def check_not_imported(run: Run) -> None:
    if run.read_meta().get("imported") is not None:
        raise RunError(f"{run.id} was imported, not trained here: there is nothing to resume; fine-tune it in a new "
                       f"run with --init {run.id}")


def check_split(batch_size: int, world: int) -> None:
    """The global batch splits evenly over the ranks (training/loop.py's check_loop says the same
    once the data is loaded)."""
    if world > 1 and batch_size % world:
        raise OptionError("batch_size", f"{batch_size} does not split evenly over {world} processes; "
                          f"use a multiple of {world}")


def check_dataset(trains_on: str, spec: str, split: str) -> None:
    """``spec`` is a built-in name or a path that exists, and ``split`` a split; what is in a path
    is its loader's to judge, in train(). Anything else gets the loader's own one-line error,
    which it raises before it reads anything. The names are registered beside their loaders,
    which import torch: the last check made, so that the others are said before it loads."""
    from aigc_cli.data import CORPORA, DATASETS, load_data
    from aigc_cli.data.base import SPLITS

    names = CORPORA if trains_on == "text" else DATASETS
    if trains_on != "text" and split in SPLITS:
        from aigc_cli.data.cache import registry

        if spec in registry():  # a prepared dataset (aigc datasets prepare --name)
            return
    if split not in SPLITS or (spec not in names and not Path(spec).expanduser().exists()):
        load_data(trains_on, spec, split)  # raises: no such split, name or path
