"""IDX files (the MNIST format), gzipped or raw.

Layout: magic ``00 00 <dtype> <ndim>``, then ``ndim`` big-endian uint32 sizes, then the values
in C order (big-endian for multi-byte types). An images file ``*-images-*`` picks up the labels
file beside it (``t10k-images-idx3-ubyte.gz`` -> ``t10k-labels-idx1-ubyte.gz``).
"""

from __future__ import annotations

import math
import re
import struct
import zlib
from pathlib import Path

import numpy as np

from aigc_cli.core.errors import DatasetError
from aigc_cli.data.arrays import images_tensor, labels_tensor
from aigc_cli.data.base import ImageDataset, check_declared, require_regular

DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
GZIP_MAGIC = b"\x1f\x8b"


class _Inflater:
    """``read(n)`` on a gzip stream that inflates only what is asked for: a .gz that expands
    beyond its header's promise is caught after one byte too many, not after filling memory.
    A truncated stream yields what it holds (the size check then says how much is missing)."""

    def __init__(self, f):
        self.f, self.tail = f, b""
        self.d = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)

    def read(self, n: int) -> bytes:
        out, got = [], 0
        while got < n and not self.d.eof:
            data = self.tail or self.f.read(1 << 16)
            if not data:
                break
            chunk = self.d.decompress(data, n - got)
            self.tail = self.d.unconsumed_tail
            out.append(chunk)
            got += len(chunk)
        return b"".join(out)


def _header(data: bytes) -> tuple[str, int] | None:
    """(numpy dtype, ndim) when ``data`` starts with an IDX magic number, else None."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in DTYPES or not 1 <= data[3] <= 4:
        return None
    return DTYPES[data[2]], data[3]


def is_idx(path: Path) -> bool:
    """Sniff the magic number (through gzip when compressed) without reading the whole file."""
    require_regular(path)
    with open(path, "rb") as f:
        head = f.read(4096)
    if head.startswith(GZIP_MAGIC):
        try:
            head = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS).decompress(head, 4)
        except zlib.error:
            return False
    return _header(head) is not None


def read_idx(path: Path) -> np.ndarray:
    size = require_regular(path)  # before open: a FIFO or a device is never read
    with open(path, "rb") as f:
        gz = f.read(2) == GZIP_MAGIC
        f.seek(0)
        src = _Inflater(f) if gz else f
        try:
            return _read_idx(path, src, None if gz else size)
        except zlib.error as e:
            raise DatasetError(f"corrupt gzip file {path}: {e}") from None


def _read_idx(path: Path, src, size: int | None) -> np.ndarray:
    """``size``: the raw file's size (None for .gz, whose size is known only by inflating)."""
    header = _header(src.read(4))
    if header is None:
        raise DatasetError(f"not an IDX file: {path} (bad magic number)")
    dtype, ndim = header
    start = 4 + 4 * ndim
    raw_dims = src.read(4 * ndim)
    if len(raw_dims) < 4 * ndim:
        raise DatasetError(f"truncated IDX file {path}: header cut short")
    dims = struct.unpack(f">{ndim}I", raw_dims)
    expected = math.prod(dims) * np.dtype(dtype).itemsize  # Python ints: no int64 overflow
    check_declared(path, expected, f"{' x '.join(map(str, dims))} values of {np.dtype(dtype).name}")
    if size is not None and size - start != expected:  # raw: judged before reading anything
        found = size - start
        raise DatasetError(f"{'truncated' if found < expected else 'bad'} IDX file {path}: "
                           f"expected {expected} bytes, found {found}")
    data = src.read(expected + 1)  # one byte more tells a .gz that expands too far
    found = len(data)
    if found < expected:
        raise DatasetError(f"truncated IDX file {path}: expected {expected} bytes, found {found}")
    if found > expected:
        raise DatasetError(f"bad IDX file {path}: expected {expected} bytes, found more (the rest not inflated)")
    return np.frombuffer(data, dtype).reshape(dims)


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
