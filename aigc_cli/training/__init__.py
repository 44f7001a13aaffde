"""Training: start or resume a run, the loop every family shares, and evaluation during training.

- ``train(family, dataset, **options)`` and ``resume(run)``: the Python API behind ``aigc train``
  (``run.py``); both return the Run;
- ``tune(run, reward=..., **options)``: the Python API behind ``aigc tune`` (``tuning.py``): a new
  run tuned from a trained one against a reward;
- ``options.py``: the loop's options and defaults (epochs, batch size, seed, ...), light to import;
- ``loop.py``: the Trainer (data order, logging, previews, checkpoints, signals, resume);
- ``evaluation.py``: FID during training (``eval_every``).

Light to import: torch loads when ``train`` or ``resume`` is first used.
"""

from __future__ import annotations

from typing import Any

__all__ = ["resume", "train", "tune"]


def __getattr__(name: str) -> Any:
    if name == "tune":
        from aigc_cli.training import tuning

        return tuning.tune
    if name in __all__:
        from aigc_cli.training import run

        return getattr(run, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
