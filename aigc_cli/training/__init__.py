"""Training: start or resume a run, the loop every family shares, and evaluation during training.

- ``train(family, dataset, **options)`` and ``resume(run)``: the Python API behind ``aigc train``
  (``run.py``); both return the Run;
- ``options.py``: the loop's options and defaults (epochs, batch size, seed, ...), light to import;
- ``loop.py``: the Trainer (data order, logging, previews, checkpoints, signals, resume);
- ``evaluation.py``: FID during training (``eval_every``).

Light to import: torch loads when ``train`` or ``resume`` is first used.
"""

from __future__ import annotations

from typing import Any

__all__ = ["resume", "train"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from aigc_cli.training import run

        return getattr(run, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
