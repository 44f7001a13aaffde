"""The in-memory dataset every loader returns, and the registry of named datasets."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

from aigc_cli.core.errors import DatasetError
from aigc_cli.core.io import check_input
from aigc_cli.core.registry import Registry

SPLITS = ("train", "test")

# The most pixel bytes one dataset file may declare: the whole set lives in memory, and a header
# (IDX dims, .npy shape) or a .gz must not make us allocate or inflate more than this.
MAX_BYTES = 8 << 30

CHUNK = 16 << 20  # bytes of pixels hashed at once


def pixel_digest(shape, chunks: Iterable[bytes], labels: torch.Tensor | None) -> str:
    """A dataset's fingerprint: sha256 of its shape, its uint8 pixels in C order (given in
    ``chunks``), and its labels as int64. One definition for a tensor in memory and a cache file
    read from disk (data/cache.py), which must agree to the byte."""
    h = hashlib.sha256()
    h.update(str(tuple(shape)).encode())
    for chunk in chunks:
        h.update(chunk)
    if labels is not None:
        h.update(labels.to(torch.int64).contiguous().numpy().tobytes())
    return h.hexdigest()


def with_captions(digest: str, captions: list[str] | None) -> str:
    """A pixel digest with the captions folded in (the digest itself when there are none): the
    same pixels captioned otherwise train another model. The decoded cache stores the pixel
    digest and folds in the captions it reads at each load (data/cache.py)."""
    if captions is None:
        return digest
    h = hashlib.sha256(digest.encode())
    for caption in captions:
        h.update(caption.encode("utf-8") + b"\0")
    return h.hexdigest()


def require_regular(path: Path, what: str = "a dataset file or folder") -> int:
    """The size of ``path``, a regular file, found by stat before any open (core.io.check_input:
    opening a FIFO blocks, reading a device never ends); a one-line DatasetError otherwise."""
    return check_input(path, what, error=DatasetError).st_size


def check_declared(path: Path, declared: int, what: str) -> None:
    """Refuse a header that declares more than MAX_BYTES of pixels (Python ints: no overflow)."""
    if declared > MAX_BYTES:
        raise DatasetError(f"{path}: the header declares {what} = {declared:,} bytes, more than the "
                           f"{MAX_BYTES:,}-byte limit of one dataset file")


@dataclass
class ImageDataset:
    """All images as one uint8 tensor, so batches are slices on the training device."""

    images: torch.Tensor  # (N, C, H, W) uint8
    labels: torch.Tensor | None  # (N,) int64, or None when unlabelled
    name: str  # a human name: "mnist (train)", "digits.npz"
    spec: dict[str, Any]  # what load_dataset needs to load it again: {"spec": ..., "split": ...}
    classes: list[str] | None = None
    factors: dict[str, torch.Tensor] | None = None  # known generative factors (built-in shapes)
    skipped: int = 0  # files that could not be read (image folders)
    skipped_why: dict[str, int] = field(default_factory=dict)  # reason -> count ("unreadable": 2)
    files: int = 0  # files looked at (image folders), for the skip summary
    resolution: int | None = None  # --resolution: every image scaled and centre-cropped to N x N
    upscaled: int = 0  # images whose short side was below ``resolution`` (scaled up)
    # --crop random: the (N, C, M, M) images whose random N x N windows train (``images`` is
    # their centre view, what evaluation and previews see); None: ``images`` train as they are
    windows: torch.Tensor | None = None
    mapped: bool = False  # memory-mapped from the decoded cache (data/cache.py): batches read from disk
    # One caption per image ("" for an image without one: trained unconditionally), or None when
    # the dataset has no captions at all (docs/text-to-image.md)
    captions: list[str] | None = None
    # Image folders: each row's file, relative to the folder (posix), which captions are matched to
    sources: list[str] | None = None
    _fingerprint: str | None = field(default=None, repr=False)

    def __post_init__(self):
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError("images must be a (N, C, H, W) uint8 tensor")
        if self.labels is not None and len(self.labels) != len(self.images):
            raise ValueError("labels and images differ in length")
        if self.captions is not None and len(self.captions) != len(self.images):
            raise ValueError("captions and images differ in length")

    def __len__(self) -> int:
        return self.images.shape[0]

    def skip_reasons(self) -> str | None:
        """"skipped 3 of 120 files: 2 unreadable, 1 not a regular file", or None."""
        if not self.skipped:
            return None
        why = ", ".join(f"{n} {reason}" for reason, n in sorted(self.skipped_why.items()))
        return f"skipped {self.skipped} of {self.files} files" + (f": {why}" if why else "")

    def upscaled_note(self) -> str | None:
        """"upscaled 2 images smaller than 64 px", or None."""
        if not self.upscaled:
            return None
        return (f"upscaled {self.upscaled} image{'s' if self.upscaled != 1 else ''} smaller than "
                f"{self.resolution} px on the short side")

    def skip_summary(self) -> str | None:
        """``skip_reasons`` and ``upscaled_note`` headed by the dataset's name, as train prints
        them; or None."""
        parts = [p for p in (self.skip_reasons(), self.upscaled_note()) if p]
        return f"{self.name}: {'; '.join(parts)}" if parts else None

    @property
    def shape(self) -> tuple[int, int, int]:
        c, h, w = self.images.shape[1:]
        return int(c), int(h), int(w)

    @property
    def num_classes(self) -> int | None:
        if self.labels is None:
            return None
        if self.classes is not None:
            return len(self.classes)
        return int(self.labels.max()) + 1 if len(self.labels) else 0

    @property
    def fingerprint(self) -> str:
        """sha256 of the pixels and labels: two datasets with the same content match."""
        if self._fingerprint is None:
            stored = self.windows if self.windows is not None else self.images
            flat = stored.contiguous().numpy().reshape(-1)
            chunks = (flat[i:i + CHUNK].tobytes() for i in range(0, flat.size, CHUNK))  # never a second copy
            self._fingerprint = with_captions(pixel_digest(stored.shape, chunks, self.labels), self.captions)
        return self._fingerprint

    @property
    def captioned(self) -> int:
        """How many images have a non-empty caption (0 when the dataset has none)."""
        return sum(1 for c in self.captions if c) if self.captions is not None else 0

    def info(self) -> dict[str, Any]:
        c, h, w = self.shape
        out = {
            "name": self.name,
            "spec": self.spec,
            "size": len(self),
            "shape": [c, h, w],
            "channels": c,
            "classes": self.num_classes,
            "class_names": self.classes,
            "fingerprint": self.fingerprint,
        }
        if self.skipped:
            out["skipped"] = self.skipped
            out["skipped_why"] = dict(self.skipped_why)
        if self.resolution is not None:
            out["resolution"] = self.resolution
            out["upscaled"] = self.upscaled
        if self.windows is not None:
            out["crop"] = {"kind": "random", "from": list(self.windows.shape[1:])}
        if self.factors:
            out["factors"] = sorted(self.factors)
        if self.captions is not None:
            out["captions"] = self.captioned
        return out


@dataclass(frozen=True)
class NamedDataset:
    name: str
    description: str
    load: Callable[[str], ImageDataset]  # split -> dataset
    needs_download: bool = False


DATASETS: Registry[NamedDataset] = Registry("dataset")


def register_dataset(name: str, description: str, needs_download: bool = False):
    """Decorator for a ``load(split) -> ImageDataset`` function."""

    def deco(fn: Callable[[str], ImageDataset]):
        DATASETS.register(name)(NamedDataset(name, description, fn, needs_download))
        return fn

    return deco


def list_datasets() -> list[str]:
    return DATASETS.names()
