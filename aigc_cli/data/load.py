"""One entry point: ``load_dataset(spec, split)`` for a registered name or a path."""

from __future__ import annotations

from pathlib import Path

from aigc_cli.core.errors import DatasetError
from aigc_cli.data import shapes  # noqa: F401  (registers the built-in dataset)
from aigc_cli.data.base import DATASETS, SPLITS, ImageDataset


def load_dataset(spec: str, split: str = "train") -> ImageDataset:
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; use one of: {', '.join(SPLITS)}")
    if spec in DATASETS:
        return DATASETS.get(spec).load(split)
    path = Path(spec).expanduser()
    if not path.exists():
        raise DatasetError(
            f"no dataset {spec!r}: not a built-in name ({', '.join(DATASETS.names())}) "
            "and no such file or folder"
        )
    raise DatasetError(f"cannot read {spec!r} as a dataset yet")
