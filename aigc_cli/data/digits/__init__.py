"""The built-in ``digits`` dataset: the 10,000 MNIST test digits, shipped with aigc (1.6 MB; CC
BY-SA 3.0, see LICENSE.md here) so that a first run draws real handwriting with no network.

Split: ``test`` is digits 0..1,999, ``train`` the other 8,000 (the bench digit classifier,
benches/classifier.py, learns from the same 8,000 and keeps the same 2,000 aside).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from aigc_cli.core.errors import DatasetError
from aigc_cli.data.base import ImageDataset, register_dataset
from aigc_cli.data.idx import load_idx

CLASSES = [str(d) for d in range(10)]
HELD_OUT = 2000  # the test split: the first 2,000 digits
SLICES = {"train": slice(HELD_OUT, None), "test": slice(0, HELD_OUT)}


def files() -> tuple[Path, Path]:
    folder = Path(str(resources.files(__name__)))
    return folder / "t10k-images-idx3-ubyte.gz", folder / "t10k-labels-idx1-ubyte.gz"


@register_dataset("digits", "built-in 28x28 gray handwritten digits, 10 classes (8k train / 2k test; "
                  "the MNIST test set); no download")
def load_digits(split: str) -> ImageDataset:
    if split not in SLICES:
        raise DatasetError(f"unknown split {split!r} for digits; use train or test")
    images, labels = files()
    if not images.is_file() or not labels.is_file():
        raise DatasetError(f"the built-in digits are missing from {images.parent}; reinstall aigc")
    full = load_idx(images, split, labels)
    part = SLICES[split]
    return ImageDataset(
        images=full.images[part].clone(),
        labels=full.labels[part].clone(),
        name=f"digits ({split})",
        spec={"spec": "digits", "split": split},
        classes=CLASSES,
    )
