"""One entry point: ``load_dataset(spec, split)`` for a registered name or a path.

A path is read by what it is: a folder of images, an IDX file (``.gz`` or raw, sniffed by its
magic number), a ``.npy``/``.npz`` array file, or a single image. ``split`` only applies to
named datasets; a path is one set of images whatever the split.
"""

from __future__ import annotations

from pathlib import Path

from aigc_cli.core.errors import DatasetError
from aigc_cli.core.faults import fault_point
from aigc_cli.core.io import MISSING, probe
from aigc_cli.data import digits, named, shapes  # noqa: F401  (register the named and built-in datasets)
from aigc_cli.data.arrays import load_array_file
from aigc_cli.data.base import DATASETS, SPLITS, ImageDataset, require_regular
from aigc_cli.data.download import Progress
from aigc_cli.data.folder import load_folder, load_image_file
from aigc_cli.data.idx import is_idx, load_idx

IDX_NAMES = (".gz", ".idx", "-ubyte")


def load_dataset(spec: str, split: str = "train", progress: Progress | None = None) -> ImageDataset:
    """``progress(description, done, total)`` hears about downloads and image decoding."""
    fault_point("dataset:load")
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; use one of: {', '.join(SPLITS)}")
    if spec in DATASETS:
        entry = DATASETS.get(spec)
        # Only datasets that download take a progress callback; ``load(split)`` stays the contract.
        return entry.load(split, progress=progress) if entry.needs_download else entry.load(split)
    path = Path(spec).expanduser()
    found, kind = probe(path)
    if kind == MISSING:
        raise DatasetError(
            f"no dataset {spec!r}: not a built-in name ({', '.join(DATASETS.names())}) "
            "and no such file or folder"
        )
    if found is None:  # a link loop, a broken link: said as such, not as "no such file"
        raise DatasetError(f"{spec} is {kind}; pass a dataset name, file or folder")
    try:
        ds = _load_path(path, split, progress)
    except OSError as e:  # permissions, I/O errors: still a one-line message
        raise DatasetError(f"cannot read {spec}: {e.strerror or e}") from None
    if ds is None:
        raise DatasetError(f"not a dataset: {spec} (not an image folder, image, IDX, .npy or .npz file)")
    return ds


def _load_path(path: Path, split: str, progress: Progress | None) -> ImageDataset | None:
    if path.is_dir():
        return load_folder(path, split, progress)
    require_regular(path)  # a FIFO, device or socket is refused before anything opens it
    if path.suffix.lower() in (".npy", ".npz"):
        return load_array_file(path, split)
    if path.name.lower().endswith(IDX_NAMES) or is_idx(path):
        return load_idx(path, split)  # a .gz that is not IDX gets "not an IDX file" from here
    return load_image_file(path, split)
