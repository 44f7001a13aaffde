"""Start or resume a training run: the core behind ``aigc train <family>``."""

from __future__ import annotations

import platform
from typing import Any, Callable

import torch

from aigc_cli import __version__
from aigc_cli.core.errors import ConfigError, RunError
from aigc_cli.core.seeding import seed_everything
from aigc_cli.core.trainer import LoopConfig, ProgressSink, Trainer, check_loop
from aigc_cli.data import load_dataset
from aigc_cli.models.registry import get_family
from aigc_cli.runs.store import Run, create_run, now_iso, resolve_run

TRAIN_DEFAULTS = {"epochs": 20, "batch_size": 64, "seed": 0, "log_every": 20}


def _versions() -> dict[str, str]:
    return {"aigc": __version__, "torch": torch.__version__, "python": platform.python_version()}


def train(
    family: str,
    dataset: str = "shapes",
    split: str = "train",
    *,
    epochs: int | None = None,
    batch_size: int | None = None,
    seed: int | None = None,
    name: str | None = None,
    device: torch.device | str = "cpu",
    progress: ProgressSink | None = None,
    on_run: Callable[[Run], None] | None = None,
    eval_every: int = 0,
    fid_n: int = 2048,
    evaluate_factory: Callable[[Run, Any, Any], Callable[[int], dict]] | None = None,
    dataset_progress: Callable[[str, int, int | None], None] | None = None,
    **options: Any,
) -> Run:
    """Train a new model of ``family``; ``options`` are the family's (arch, loss, lr, ...)."""
    fam = get_family(family)
    loop = LoopConfig(
        epochs=TRAIN_DEFAULTS["epochs"] if epochs is None else epochs,
        batch_size=TRAIN_DEFAULTS["batch_size"] if batch_size is None else batch_size,
        seed=TRAIN_DEFAULTS["seed"] if seed is None else seed,
    )
    if loop.epochs < 1:
        raise ConfigError(f"--epochs must be at least 1, got {loop.epochs}")
    if loop.batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {loop.batch_size}")
    if eval_every < 0:
        raise ConfigError(f"--eval-every must be 0 or more, got {eval_every}")
    if fid_n < 2:
        raise ConfigError(f"--fid-n must be at least 2, got {fid_n}")
    data = load_dataset(dataset, split, progress=dataset_progress)
    check_loop(loop, len(data))  # here, not only in Trainer: before the run folder exists
    info = data.info()
    model_cfg, train_cfg = fam.make_config(options, info)
    train_cfg.update(epochs=loop.epochs, batch_size=loop.batch_size, log_every=loop.log_every)
    config = {
        "format": "aigc-run/1",
        "family": family,
        "model": model_cfg,
        "train": train_cfg,
        "dataset": {k: info[k] for k in ("name", "spec", "size", "shape", "classes", "class_names", "fingerprint")},
        "seed": loop.seed,
        "eval": {"every": eval_every, "fid_n": fid_n},
        "versions": _versions(),
        "created": now_iso(),
    }
    device = torch.device(device)
    run = create_run(family, name=name, epochs=loop.epochs, dataset=info["name"], device=str(device))
    run.write_config(config)
    if on_run:
        on_run(run)
    seed_everything(loop.seed)
    return _fit(run, config, data, loop, device, progress, resume=False, eval_every=eval_every,
                evaluate_factory=evaluate_factory)


def resume(
    run_ref: str,
    *,
    epochs: int | None = None,
    device: torch.device | str = "cpu",
    progress: ProgressSink | None = None,
    family: str | None = None,
    evaluate_factory=None,
    dataset_progress=None,
) -> Run:
    """Continue a run from its checkpoint, to its own epoch count or a new ``epochs``."""
    run = resolve_run(run_ref)
    config = run.read_config()
    if family is not None and config["family"] != family:
        raise RunError(f"{run.id} is a {config['family']} run; resume it with 'aigc train {config['family']} --resume'")
    if not run.checkpoint_path.exists():
        raise RunError(f"{run.id} has no checkpoint to resume from")
    meta = run.read_meta()
    if meta.get("status") == "running":
        raise RunError(f"{run.id} is still running (pid {meta.get('pid')}); stop it before resuming")
    train_cfg = config["train"]
    if epochs is not None:
        if epochs < 1:
            raise ConfigError(f"--epochs must be at least 1, got {epochs}")
        train_cfg["epochs"] = epochs
        run.write_config(config)
    loop = LoopConfig(train_cfg["epochs"], train_cfg["batch_size"], config["seed"], train_cfg.get("log_every", 20))
    spec = config["dataset"]["spec"]
    data = load_dataset(spec["spec"], spec["split"], progress=dataset_progress)
    if data.fingerprint != config["dataset"]["fingerprint"]:
        raise RunError(
            f"the dataset {spec['spec']!r} has changed since {run.id} started (fingerprint differs); "
            "resuming would not continue the same run"
        )
    import os
    import socket

    run.update_meta(pid=os.getpid(), host=socket.gethostname(), epochs=loop.epochs)
    return _fit(run, config, data, loop, torch.device(device), progress, resume=True,
                eval_every=config.get("eval", {}).get("every", 0), evaluate_factory=evaluate_factory)


def _fit(run, config, data, loop, device, progress, resume, eval_every=0, evaluate_factory=None) -> Run:
    fam = get_family(config["family"])
    task = fam.make_task(config, device)
    evaluate = evaluate_factory(run, config, data) if (evaluate_factory and eval_every) else None
    trainer = Trainer(task, data, run, loop, device, progress=progress, evaluate=evaluate, eval_every=eval_every)
    if resume:
        trainer.restore()
        if trainer.epoch >= loop.epochs:
            raise RunError(
                f"{run.id} has already trained {trainer.epoch} epochs; pass a larger --epochs to continue"
            )
    try:
        trainer.fit()
    except (KeyboardInterrupt, SystemExit):
        run.update_meta(status="interrupted")
        raise
    except Exception as e:
        if run.read_meta().get("status") == "running":
            run.update_meta(status="failed", error=str(e).splitlines()[0] if str(e) else type(e).__name__)
        raise
    return run
