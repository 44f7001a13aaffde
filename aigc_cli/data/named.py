"""Named datasets downloaded on first use: MNIST, Fashion-MNIST, CIFAR-10.

Checksums are the md5s torchvision lists. ``SOURCES`` is read at call time, so tests can point
it at fake files. CIFAR-10 comes from its binary version (1 label byte + 3072 pixel bytes per
record): the python version is pickles, and a dataset must never run code when loaded.
"""

from __future__ import annotations

import tarfile
from dataclasses import dataclass

import numpy as np
import torch

from aigc_cli.core.errors import DatasetError
from aigc_cli.data.base import ImageDataset, register_dataset
from aigc_cli.data.download import Progress, fetch, missing
from aigc_cli.data.idx import load_idx


@dataclass
class Source:
    mirrors: list[str]  # base URLs, tried in order
    files: dict[str, dict[str, str]]  # split -> {filename: md5}


_MNIST_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
                "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
_CIFAR = "cifar-10-binary.tar.gz"
SOURCES: dict[str, Source] = {
    "mnist": Source(
        ["https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"],
        {
            "train": {"train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                      "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432"},
            "test": {"t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
                     "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c"},
        },
    ),
    "fashion-mnist": Source(
        ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
         "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/"],
        {
            "train": {"train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                      "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe"},
            "test": {"t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
                     "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310"},
        },
    ),
    "cifar10": Source(
        ["https://www.cs.toronto.edu/~kriz/"],
        {s: {_CIFAR: "c32a1d4ab5d03f1284b67883e8d87530"} for s in ("train", "test")},
    ),
}
CLASSES = {
    "mnist": [str(i) for i in range(10)],
    "fashion-mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                      "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"],
    "cifar10": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
}


def _files(name: str, split: str) -> dict[str, str]:
    files = SOURCES[name].files
    if split not in files:
        raise DatasetError(f"unknown split {split!r} for {name}; use one of: {', '.join(files)}")
    return files[split]


def download_status(name: str) -> str | None:
    """'downloaded', 'partial' or 'not downloaded' for a dataset here; None for one we do not know."""
    if name not in SOURCES:
        return None
    all_files = {f: m for split in SOURCES[name].files.values() for f, m in split.items()}
    n = len(missing(name, all_files))
    return "downloaded" if n == 0 else "not downloaded" if n == len(all_files) else "partial"


def _load_mnist_like(name: str, split: str, progress: Progress | None) -> ImageDataset:
    folder = fetch(name, _files(name, split), SOURCES[name].mirrors, progress)
    images, labels = _MNIST_FILES[split]
    ds = load_idx(folder / images, split, labels=folder / labels)
    if ds.labels is None:
        raise DatasetError(f"{name} ({split}): labels and images in {folder} do not match")
    return ImageDataset(ds.images, ds.labels, f"{name} ({split})", {"spec": name, "split": split}, CLASSES[name])


@register_dataset("mnist", "MNIST handwritten digits, 28x28 gray, 10 classes (60k train / 10k test)",
                  needs_download=True)
def load_mnist(split: str, progress: Progress | None = None) -> ImageDataset:
    return _load_mnist_like("mnist", split, progress)


@register_dataset("fashion-mnist", "Fashion-MNIST clothing, 28x28 gray, 10 classes (60k train / 10k test)",
                  needs_download=True)
def load_fashion_mnist(split: str, progress: Progress | None = None) -> ImageDataset:
    return _load_mnist_like("fashion-mnist", split, progress)


CIFAR_RECORD = 1 + 3 * 32 * 32  # label byte, then R, G, B planes of 32x32
CIFAR_BATCHES = {"train": [f"data_batch_{i}.bin" for i in range(1, 6)], "test": ["test_batch.bin"]}


def read_cifar_binary(path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 3, 32, 32) uint8, labels (N,) uint8) from the binary tarball, without extracting it."""
    chunks = {}
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:
                base = member.name.rsplit("/", 1)[-1]
                if member.isfile() and base in CIFAR_BATCHES[split]:
                    chunks[base] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DatasetError(f"cannot read {path}: {e}") from None
    absent = [b for b in CIFAR_BATCHES[split] if b not in chunks]
    if absent or any(len(c) % CIFAR_RECORD for c in chunks.values()):
        raise DatasetError(f"{path} is not the CIFAR-10 binary version (missing or damaged: {', '.join(absent) or 'records'})")
    records = [np.frombuffer(chunks[b], np.uint8).reshape(-1, CIFAR_RECORD) for b in CIFAR_BATCHES[split]]
    images = np.concatenate([r[:, 1:] for r in records]).reshape(-1, 3, 32, 32)  # planes are already C, H, W
    return images, np.concatenate([r[:, 0] for r in records])


@register_dataset("cifar10", "CIFAR-10 photos, 32x32 RGB, 10 classes (50k train / 10k test)", needs_download=True)
def load_cifar10(split: str, progress: Progress | None = None) -> ImageDataset:
    folder = fetch("cifar10", _files("cifar10", split), SOURCES["cifar10"].mirrors, progress)
    images, labels = read_cifar_binary(folder / _CIFAR, split)
    return ImageDataset(
        images=torch.from_numpy(images),
        labels=torch.from_numpy(labels.astype(np.int64)),
        name=f"cifar10 ({split})",
        spec={"spec": "cifar10", "split": split},
        classes=CLASSES["cifar10"],
    )
