"""IDX files (the MNIST format), gzipped or raw.

Layout: magic ``00 00 <dtype> <ndim>``, then ``ndim`` big-endian uint32 sizes, then the values
in C order (big-endian for multi-byte types). An images file ``*-images-*`` picks up the labels
file beside it (``t10k-images-idx3-ubyte.gz`` -> ``t10k-labels-idx1-ubyte.gz``).
"""

from __future__ import annotations

import re
import zlib
from pathlib import Path

import numpy as np

from aigc_cli.core.errors import DatasetError
from aigc_cli.data.arrays import images_tensor, labels_tensor
from aigc_cli.data.base import ImageDataset

DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
GZIP_MAGIC = b"\x1f\x8b"


def _read_bytes(path: Path) -> bytes:
    raw = path.read_bytes()
    if not raw.startswith(GZIP_MAGIC):
        return raw
    # decompressobj, not gzip.decompress: a truncated .gz still yields what it holds, so the
    # size check below can say how much is missing instead of a bare EOFError.
    try:
        return zlib.decompressobj(wbits=16 + zlib.MAX_WBITS).decompress(raw)
    except zlib.error as e:
        raise DatasetError(f"corrupt gzip file {path}: {e}") from None


def _header(data: bytes) -> tuple[str, int] | None:
    """(numpy dtype, ndim) when ``data`` starts with an IDX magic number, else None."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in DTYPES or not 1 <= data[3] <= 4:
        return None
    return DTYPES[data[2]], data[3]


def is_idx(path: Path) -> bool:
    """Sniff the magic number (through gzip when compressed) without reading the whole file."""
    with open(path, "rb") as f:
        head = f.read(4096)
    if head.startswith(GZIP_MAGIC):
        try:
            head = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS).decompress(head, 4)
        except zlib.error:
            return False
    return _header(head) is not None


def read_idx(path: Path) -> np.ndarray:
    data = _read_bytes(path)
    header = _header(data)
    if header is None:
        raise DatasetError(f"not an IDX file: {path} (bad magic number)")
    dtype, ndim = header
    start = 4 + 4 * ndim
    if len(data) < start:
        raise DatasetError(f"truncated IDX file {path}: header cut short")
    dims = tuple(int(d) for d in np.frombuffer(data, ">u4", ndim, offset=4))
    expected = int(np.prod(dims)) * np.dtype(dtype).itemsize
    found = len(data) - start
    if found < expected:
        raise DatasetError(f"truncated IDX file {path}: expected {expected} bytes, found {found}")
    if found > expected:
        raise DatasetError(f"bad IDX file {path}: expected {expected} bytes, found {found}")
    return np.frombuffer(data, dtype, offset=start).reshape(dims)


def labels_path(images: Path) -> Path | None:
    """The labels file beside an images file, gzipped or not, if there is one."""
    name = re.sub(r"idx3", "idx1", images.name.replace("images", "labels"))
    if name == images.name:
        return None
    stem = name.removesuffix(".gz")
    for candidate in (stem + ".gz", stem):
        if (images.parent / candidate).is_file():
            return images.parent / candidate
    return None


def load_idx(path: Path, split: str = "train", labels: Path | None = None) -> ImageDataset:
    """Images (N, H, W) or (N, H, W, C) from an IDX file; labels from ``labels`` or the file beside it.

    A labels file whose count differs from the images is ignored (it belongs to something else).
    """
    arr = read_idx(path)
    if arr.ndim == 1:
        raise DatasetError(f"{path} holds labels, not images; pass the images file")
    images = images_tensor(arr, path.name)
    labels = labels or labels_path(path)
    label_tensor = None
    if labels is not None:
        y = read_idx(labels)
        if y.ndim == 1 and len(y) == len(images):
            label_tensor = labels_tensor(y.astype(np.int64), len(images), labels.name)
    return ImageDataset(
        images=images,
        labels=label_tensor,
        name=path.name,
        spec={"spec": str(path.resolve()), "split": split},
    )
