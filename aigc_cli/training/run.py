"""Start or resume a training run: the Python API behind ``aigc train <family>``.

```python
from aigc_cli.training import train, resume

run = train("gan", "shapes", arch="dcgan", epochs=5, seed=0, eval_every=5)
run = resume(run.id, epochs=10)
```

Options are the loop's (training/options.py) and the family's (its spec); a keyword that is
neither is an error, and an option not given takes its declared default.
"""

from __future__ import annotations

import os
import platform
import socket
from typing import Any, Callable

import torch

from aigc_cli import __version__
from aigc_cli.core import distributed, signals
from aigc_cli.core.errors import ConfigError, OptionError, RunError, first_line, opt
from aigc_cli.core.options import resolve
from aigc_cli.core.schema import check_fields
from aigc_cli.core.seeding import seed_everything
from aigc_cli.data import load_data
from aigc_cli.models.adapters import add_adapters, resolve_layers
from aigc_cli.models.inherit import inherit_model, start_from
from aigc_cli.models.protocol import TrainingData
from aigc_cli.models.registry import RUN_FORMAT, get_family, load_config
from aigc_cli.runs.lineage import check_parent, parent_record
from aigc_cli.models.sizing import sizing_for
from aigc_cli.runs.store import Run, create_run, lock_run, now_iso, resolve_run
from aigc_cli.training.evaluation import make_evaluator
from aigc_cli.training.loop import LoopConfig, NoProgress, ProgressSink, Trainer, check_loop
from aigc_cli.training.options import LOOP_FIELDS, loop_options, loop_section, time_budget, train_options
from aigc_cli.training.text_encoders import source_weights
from aigc_cli.training.preflight import check_init, check_not_broken, check_not_imported, check_resume_options

DatasetProgress = Callable[[str, int, "int | None"], None]


def _versions() -> dict[str, str]:
    return {"aigc": __version__, "torch": torch.__version__, "python": platform.python_version()}


def train(
    family: str,
    dataset: str | None = None,
    split: str | None = None,
    *,
    device: torch.device | str = "cpu",
    progress: ProgressSink | None = None,
    on_run: Callable[[Run], None] | None = None,
    dataset_progress: DatasetProgress | None = None,
    parent: Run | None = None,
    **options: Any,
) -> Run:
    """Train a new model of ``family``; ``options`` are the loop's (epochs, batch_size, seed, name,
    eval_every, fid_n) and the family's (arch, loss, lr, ...). ``on_run`` hears of the run as soon
    as it exists; ``progress`` receives the training's progress and messages. ``parent``: the
    run this one descends from, recorded in its config.json (its id and weights' digest)."""
    # Several ranks: rank 0 checks and loads first (a bad option is said once, a download happens
    # once), then the others do the same work, which then succeeds for them too.
    device = torch.device(device)
    values, loop, data, items, config = distributed.main_first(
        lambda: _prepare(family, dataset, split, options, progress, dataset_progress, device, parent),
        "checking the options and data")
    info = data.info() if data is not None else {"name": None}
    return create_and_fit(config, loop, data, items, device, progress, on_run, values["name"], dataset=info["name"])


def create_and_fit(config: dict, loop: LoopConfig, data, items: TrainingData, device: torch.device,
                   progress: ProgressSink | None, on_run: Callable[[Run], None] | None, name: str | None,
                   **meta: Any) -> Run:
    """A new run of ``config`` (``meta``: run.json's fields), trained from step 0."""
    # The run appears whole (run.json + config.json) and locked: nobody else writes it from here.
    # Several ranks: rank 0 creates it, the others follow its id.
    created: list[Run] = []

    def create() -> str:
        created.append(create_run(config["family"], name=name, config=config, epochs=loop.epochs, device=str(device),
                                  **meta))
        return created[0].id

    run_id = distributed.from_main(create, "creating the run")
    run = created[0] if created else _follow(run_id)
    try:
        if on_run:
            on_run(run)
        seed_everything(loop.seed)
        return _fit(run, config, data, items, loop, device, progress or NoProgress(), restore=False)
    finally:
        run.release()


def _prepare(family, dataset, split, options, progress, dataset_progress, device, parent=None):
    """(loop values, LoopConfig, dataset, its TrainingData, config) of a new run, every input checked."""
    fam = get_family(family)
    train_options(fam.spec)  # a family option may not shadow a loop option
    options = dict(options)
    loop_opts = loop_options(fam.spec.trains_on)
    loop_given = {o.name: options.pop(o.name, None) for o in loop_opts}
    if fam.spec.trains_on != "none":
        loop_given.update(dataset=dataset, split=split)
    elif dataset is not None:
        raise ConfigError(f"the {family} family makes its own training data; it takes no dataset")
    values = resolve(loop_opts, loop_given, "training")
    resolve(fam.spec.options, options, f"the {family} family")  # bad options fail before the data loads
    init = check_init(values)
    if init is not None and parent is not None:
        raise ConfigError("give the run to start from once: --init or parent=, not both")
    folder = None
    if isinstance(init, str):  # a model folder: imported as a run of its own, the parent, once all else is checked
        from aigc_cli.hub.importer import prepare_import

        if distributed.world() > 1:
            raise ConfigError(f"--init with a folder on several processes: import it first (aigc import {init} "
                              "--name base), then give --init base")
        folder = prepare_import(init)
        parent_config = folder.config
        if parent_config["family"] != family:
            raise ConfigError(f"{init} holds a {parent_config['family']} model; start from it with "
                              f"'aigc train {parent_config['family']} --init {init}'")
    parent = parent if parent is not None else init if folder is None else None
    if parent is not None:
        parent_config = _parent_config(family, parent)
    parent_id = parent.id if parent is not None else values["init"] if folder is not None else None
    loop = LoopConfig(epochs=values["epochs"], batch_size=values["batch_size"], seed=values["seed"],
                      log_every=values["log_every"], time_budget=time_budget(values["time"]),
                      flip=bool(values.get("flip")))
    data = None
    if fam.spec.trains_on != "none":
        data = load_data(fam.spec.trains_on, values["dataset"], values["split"], progress=dataset_progress,
                         resolution=values.get("resolution"), crop=values.get("crop") or "center",
                         caption_column=values.get("caption_column") or "text")
        _say_skipped(data, progress)
    info = data.info() if data is not None else {}
    # The networks are sized for this device and one process's batch (models/sizing.py).
    with sizing_for(device, min(loop.batch_size, info.get("size", loop.batch_size)) // distributed.world()):
        model_cfg, train_cfg = fam.make_config(options, info, data)
    if parent_id is not None:
        model_cfg, notes = inherit_model(fam.impl, fam.spec.options, options, parent_config["model"], model_cfg,
                                         parent_id)
        for note in notes:
            if progress is not None:
                progress.message(note)
    train_cfg.update(epochs=loop.epochs, batch_size=loop.batch_size, log_every=loop.log_every)
    if "flip" in values:  # image families: --resume keeps it
        train_cfg["flip"] = loop.flip
    items = fam.training_data(data, {"model": model_cfg, "train": train_cfg, "seed": loop.seed})
    if progress is not None:
        for note in fam.impl.data_notes(data, {"model": model_cfg, "train": train_cfg}):
            progress.message(note)
    train_cfg["items"] = len(items)  # what an epoch steps through (0: the task makes its batches)
    # before the run folder exists: bad input leaves nothing behind
    check_loop(loop, len(items) if items.items is not None else None, distributed.world())
    config = {
        "format": f"aigc-run/{RUN_FORMAT}",
        "family": family,
        "model": model_cfg,
        "train": train_cfg,
        "dataset": {k: info[k] for k in ("name", "spec", "size", "shape", "classes", "class_names", "fingerprint")}
        if data is not None else None,
        "seed": loop.seed,
        "eval": {"every": values.get("eval_every", 0), "fid_n": values.get("fid_n")},
        "versions": _versions(),
        "created": now_iso(),
    }
    if values["lora"]:
        config["adapters"] = _adapters(fam, config, values)
    if folder is not None:  # every check passed: the imported model becomes the parent run
        from aigc_cli.hub.importer import write_import

        parent = write_import(folder)
        if progress is not None:
            progress.message(f"imported {values['init']} as {parent.id}")
    if parent is not None:
        config["parent"] = parent_record(parent)
    return values, loop, data, items, config


def _parent_config(family: str, parent: Run) -> dict[str, Any]:
    """The config of the run a new one starts from, which must be of the same family and whole."""
    config = load_config(parent)
    if config["family"] != family:
        raise ConfigError(f"{parent.id} is a {config['family']} run; start from it with "
                          f"'aigc train {config['family']} --init {parent.id}'")
    check_parent(config, f"{parent.id}'s config.json")  # an adapter run's own base must be intact
    return config


def _adapters(fam, config: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """config.json's 'adapters' of a LoRA run: the rank, the scale, and the layers adapted in
    each inference module (resolved here, on a network without memory, so that the run records
    exactly what it trains)."""
    rank = values["lora"]
    targets = None if values["lora_targets"] is None else [t.strip() for t in values["lora_targets"].split(",") if t.strip()]
    if targets == []:
        raise OptionError("lora_targets", "names no layer; give comma-separated glob patterns such as 'blocks.*.fc'")
    with torch.device("meta"):
        modules = fam.impl.build(config)
    layers = resolve_layers(modules, fam.impl.lora_targets(config), targets, fam.name)
    return {"kind": "lora", "rank": rank, "alpha": float(values["lora_alpha"] or rank),
            "targets": targets, "layers": layers}


def resume(
    run_ref: str | Run,
    *,
    epochs: int | None = None,
    time: str | None = None,
    device: torch.device | str = "cpu",
    progress: ProgressSink | None = None,
    dataset_progress: DatasetProgress | None = None,
) -> Run:
    """Continue a run from its checkpoint, to its own epoch count or a new ``epochs``, within a new
    wall-clock budget ``time`` if given (a budget is per call: a resume without one trains on to
    the epoch count). A run killed before its first checkpoint starts over from step 0."""
    run = run_ref if isinstance(run_ref, Run) else resolve_run(run_ref)
    budget = check_resume_options(epochs, time)
    # One writer: a second resume, or a run still training, stops here (rank 0 holds the lock).
    locked: list[Run] = []
    distributed.from_main(lambda: locked.append(lock_run(run)), "locking the run")
    run = locked[0] if locked else _follow(run.id)
    try:
        config, loop, data, items = distributed.main_first(
            lambda: _prepare_resume(run, epochs, budget, progress, dataset_progress), "checking the run and its data")
        restore = run.checkpoint_path.exists()
        if not restore:
            seed_everything(loop.seed)
        return _fit(run, config, data, items, loop, torch.device(device), progress or NoProgress(), restore=restore,
                    new_epochs=epochs is not None)
    finally:
        run.release()


def _prepare_resume(run: Run, epochs, budget, progress, dataset_progress):
    """(config, LoopConfig, dataset, its TrainingData) to continue ``run`` with, every input checked."""
    check_not_broken(run)
    check_not_imported(run)
    config = load_config(run)
    where = f"{run.id}'s config.json"
    train_cfg = loop_section(config["train"])
    check_fields(train_cfg, LOOP_FIELDS, f"{where} 'train'")
    if epochs is not None:
        train_cfg["epochs"] = epochs
    loop = LoopConfig(train_cfg["epochs"], train_cfg["batch_size"], config["seed"], train_cfg["log_every"],
                      time_budget=budget, flip=train_cfg.get("flip", False))
    family = get_family(config["family"])
    data = None
    if config.get("tune") is not None:  # a tuned run makes its own batches (its samples)
        from aigc_cli.tune.methods import get_method

        check_parent(config, where)
        return {**config, "train": train_cfg}, loop, None, get_method(config["tune"]["method"]).items(config)
    if family.spec.trains_on != "none":
        try:
            spec = config["dataset"]["spec"]
            spec_name, split, resolution = spec["spec"], spec["split"], spec.get("resolution")
            crop, caption_column = spec.get("crop", "center"), spec.get("caption_column", "text")
        except (KeyError, TypeError, AttributeError) as e:
            raise RunError(f"{where} lacks the dataset's {e}; it cannot be resumed") from None
        data = load_data(family.spec.trains_on, spec_name, split, progress=dataset_progress, resolution=resolution,
                         crop=crop, caption_column=caption_column)
        _say_skipped(data, progress)
    items = family.training_data(data, config)
    check_loop(loop, len(items) if items.items is not None else None, distributed.world())
    if data is not None and data.fingerprint != config["dataset"].get("fingerprint"):
        raise RunError(
            f"the dataset {spec_name!r} has changed since {run.id} started (fingerprint differs); "
            "resuming would not continue the same run"
        )
    check_parent(config, where)
    config = {**config, "train": train_cfg}  # written once the checkpoint has proved usable
    return config, loop, data, items


def _follow(run_id: str) -> Run:
    """The run rank 0 created, as another rank sees it (read-only: it never writes it)."""
    try:
        return resolve_run(run_id)
    except RunError:
        raise distributed.own_error(RunError(
            f"cannot see run {run_id} that rank 0 created, on {socket.gethostname()}: "
            "every node needs the same run store (AIGC_HOME on a shared filesystem, docs/distributed.md)"
        )) from None


def _say_skipped(data, progress: ProgressSink | None) -> None:
    summary = data.skip_summary() if data is not None else None  # "bars: skipped 3 of 120 files: 2 unreadable, ..."
    if summary and progress is not None:
        progress.message(summary)


def _start(task, config: dict, restore: bool, progress: ProgressSink):
    """Before the optimizers exist: a run with a parent starts from its weights (a LoRA run's
    frozen base, on every resume too), a tuned run keeps them as its reference (every start),
    and a LoRA run gains its adapters. Returns what to freeze."""
    from aigc_cli.tune.methods import TuneTask

    adapters = config.get("adapters")
    tuned = isinstance(task, TuneTask)
    text = config["model"].get("text")
    if text and not restore and config.get("parent") is None:
        # A captioned run's frozen encoder starts from its source (a text run, a CLIP model); from
        # then on the run's own checkpoints hold it.
        weights = source_weights(text)
        if weights is not None:
            task.modules["text"].load_state_dict(weights)
    if config.get("parent") is not None and (adapters or not restore or tuned):
        from aigc_cli.generation import load_modules

        parent = check_parent(config, "this run's config.json")
        parent_config = load_config(parent)
        weights = {name: m.state_dict() for name, m in load_modules(parent, config=parent_config).items()}
        parent_model = parent_config["model"]
        family = get_family(config["family"])
        # Fields the run decided from its own data (its classes): tensors sized by them start afresh.
        changed = any(parent_model.get(k) != config["model"].get(k) for k in family.impl.init_free)
        if adapters or not restore:
            fresh = start_from(task, weights, parent.id, changed)
            if fresh and not restore:
                progress.message(f"{', '.join(fresh)} start{'s' if len(fresh) == 1 else ''} from random weights: "
                                 f"{parent.id}'s model.safetensors holds {', '.join(weights)}")
        if tuned:
            task.load_reference(weights)
    return add_adapters(task, adapters) if adapters else None


def _fit(run: Run, config: dict, data, items: TrainingData, loop: LoopConfig, device: torch.device,
         progress: ProgressSink, restore: bool, new_epochs: bool = False) -> Run:
    """Train ``items`` (the family's TrainingData of ``data``, made once by _prepare/_prepare_resume);
    ``data`` itself serves FID during training."""
    family = get_family(config["family"])
    wrap = None
    if config.get("tune") is not None:  # aigc tune: another objective over the family's modules
        from aigc_cli.tune.methods import wrap as tune_wrap

        wrap = tune_wrap(config, family.impl, device)
    task = family.training_task(config, device, prepare=lambda t: _start(t, config, restore, progress), wrap=wrap)
    eval_every = config.get("eval", {}).get("every", 0)
    evaluate = make_evaluator(run, config, data, device, say=progress.message) if eval_every else None
    trainer = Trainer(task, items, run, loop, device, progress=progress, evaluate=evaluate, eval_every=eval_every)
    main = distributed.is_main()  # rank 0 alone writes the run's files
    if restore:
        trainer.restore()
        if trainer.epoch >= loop.epochs:
            if run.read_meta().get("status") != "completed" and not new_epochs:
                # Killed after its last save: nothing left to train, only the status to say.
                trainer.update_meta(status="completed", epoch=trainer.epoch, step=trainer.step, pid=os.getpid(),
                                    host=socket.gethostname())
                return run
            raise RunError(f"{run.id} has already trained {trainer.epoch} epochs; pass a larger {opt('epochs')} to continue")
    elif run.metrics_path.exists() and main:
        trainer.truncate_metrics()  # a resume from step 0: rows of the lost attempt go
    if new_epochs and main:
        run.write_config(config)
    trainer.update_meta(pid=os.getpid(), host=socket.gethostname(), epochs=loop.epochs)
    try:
        trainer.fit()  # records the world size with the status
    except (KeyboardInterrupt, SystemExit, signals.Signalled):
        trainer.update_meta(status="interrupted")
        raise
    except Exception as e:
        if main and run.read_meta().get("status") == "running":
            trainer.update_meta(status="failed", error=first_line(e))
        raise
    finally:
        if trainer.parallel is not None:
            trainer.parallel.close()
    return run
