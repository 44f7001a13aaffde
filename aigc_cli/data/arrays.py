"""NumPy arrays as datasets: ``.npy`` (images only) and ``.npz`` (images plus optional labels).

Also the array helpers the other loaders share: any pixel array -> uint8 (N, C, H, W).
"""

from __future__ import annotations

import math
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch

from aigc_cli.core.errors import DatasetError
from aigc_cli.data.base import MAX_BYTES, ImageDataset, check_declared, require_regular

IMAGE_KEYS = ("images", "x", "x_train", "arr_0")
LABEL_KEYS = ("labels", "y", "y_train")


def to_uint8(arr: np.ndarray, source: str) -> np.ndarray:
    """uint8 pixels from uint8, integers in [0, 255], or floats in [0, 1] (scaled) or [0, 255]."""
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype.kind not in "iuf" or arr.size == 0:
        raise DatasetError(f"{source}: pixels must be numbers, not {arr.dtype}")
    lo, hi = float(arr.min()), float(arr.max())
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0 or hi > 255:
        raise DatasetError(f"{source}: pixel values must lie in [0, 1] or [0, 255], found [{lo:g}, {hi:g}]")
    if arr.dtype.kind == "f":
        if hi <= 1.0:  # [0, 1] floats: the usual normalised images
            arr = arr * 255.0
        arr = np.rint(arr)
    return arr.astype(np.uint8)


def to_nchw(arr: np.ndarray, source: str) -> np.ndarray:
    """(N, H, W), (N, H, W, C) or (N, C, H, W) with C in 1, 3 (4 = RGBA, last axis) -> (N, C, H, W).

    Channels-last wins when the last axis is 1, 3 or 4 (how image libraries store pixels);
    otherwise axis 1 must be 1 or 3.
    """
    if arr.ndim == 3:
        return arr[:, None]
    if arr.ndim != 4:
        raise DatasetError(f"{source}: expected images shaped (N, H, W) or (N, H, W, C), got {arr.shape}")
    if arr.shape[-1] == 4:  # RGBA: composite on black, as image folders do
        rgb, alpha = arr[..., :3].astype(np.uint16), arr[..., 3:].astype(np.uint16)
        arr = ((rgb * alpha + 127) // 255).astype(np.uint8)
    if arr.shape[-1] in (1, 3):
        return arr.transpose(0, 3, 1, 2)
    if arr.shape[1] in (1, 3):
        return arr
    raise DatasetError(f"{source}: cannot tell the channel axis of shape {arr.shape}; use 1 or 3 channels")


def images_tensor(arr: np.ndarray, source: str) -> torch.Tensor:
    """Any supported pixel array -> contiguous uint8 tensor (N, C, H, W)."""
    if arr.ndim not in (3, 4):  # checked before to_uint8, so the message names the real problem
        raise DatasetError(f"{source}: expected images shaped (N, H, W) or (N, H, W, C), got {arr.shape}")
    out = np.ascontiguousarray(to_nchw(to_uint8(arr, source), source))
    return torch.from_numpy(out if out.flags.writeable else out.copy())  # torch wants writable memory


def labels_tensor(arr: np.ndarray, n: int, source: str) -> torch.Tensor:
    """(N,) non-negative integer labels -> int64 tensor."""
    if arr.ndim != 1 or len(arr) != n:
        raise DatasetError(f"{source}: labels must have shape ({n},), got {arr.shape}")
    if arr.dtype.kind not in "iu" or (n and arr.min() < 0):
        raise DatasetError(f"{source}: labels must be non-negative integers")
    return torch.from_numpy(arr.astype(np.int64))


def _declared_bytes(f, path: Path, what: str) -> int:
    """The pixel bytes an .npy header declares (Python ints: no overflow), read without the data."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(f)
        shape, _, dtype = (fmt.read_array_header_1_0(f) if version == (1, 0) else fmt.read_array_header_2_0(f))
    except (ValueError, EOFError) as e:
        raise DatasetError(f"cannot read {what} as a NumPy array ({e})") from None
    declared = math.prod(shape) * dtype.itemsize
    check_declared(path, declared, f"{what}: shape {shape} of {dtype}")
    return declared


def _check_sizes(path: Path, size: int) -> None:
    """Each array's declared size against the limit and against the bytes that hold it, before
    numpy allocates it: a lying header costs nothing."""
    with open(path, "rb") as f:
        magic = f.read(6)
        if magic == b"\x93NUMPY":
            f.seek(0)
            declared = _declared_bytes(f, path, path.name)
            if declared > size - f.tell():
                raise DatasetError(f"truncated {path}: its header declares {declared:,} bytes of pixels, "
                                   f"the file holds {size - f.tell():,}")
            return
    if not magic.startswith(b"PK"):
        return  # neither: np.load says what it is not
    try:
        with zipfile.ZipFile(path) as z:
            for member in z.infolist():
                if member.file_size > MAX_BYTES:
                    raise DatasetError(f"{path}: {member.filename} inflates to {member.file_size:,} bytes, "
                                       f"more than the {MAX_BYTES:,}-byte limit of one dataset file")
                if member.filename.endswith(".npy"):
                    with z.open(member) as f:
                        declared = _declared_bytes(f, path, f"{path.name}[{member.filename[:-4]}]")
                    if declared > member.file_size:
                        raise DatasetError(f"{path}: {member.filename} declares {declared:,} bytes of pixels "
                                           f"in a {member.file_size:,}-byte member")
    except (zipfile.BadZipFile, zlib.error) as e:
        raise DatasetError(f"cannot read {path} as a .npz archive ({e})") from None


def load_array_file(path: Path, split: str = "train") -> ImageDataset:
    source = path.name
    _check_sizes(path, require_regular(path))
    try:
        data = np.load(path, allow_pickle=False)  # never unpickle: a dataset file must not run code
    except ValueError as e:  # object arrays, or not an array file at all
        raise DatasetError(f"cannot read {path} as a NumPy array ({e})") from None
    except OSError as e:
        raise DatasetError(f"cannot read {path}: {e}") from None
    labels = None
    if isinstance(data, np.lib.npyio.NpzFile):
        with data:
            keys = set(data.files)
            image_key = next((k for k in IMAGE_KEYS if k in keys), None)
            if image_key is None:
                raise DatasetError(
                    f"{source}: no images array; name it one of {', '.join(IMAGE_KEYS)} "
                    f"(found: {', '.join(sorted(keys)) or 'nothing'})"
                )
            label_key = next((k for k in LABEL_KEYS if k in keys), None)
            try:
                images = images_tensor(data[image_key], f"{source}[{image_key}]")
                if label_key is not None:
                    labels = labels_tensor(data[label_key], len(images), f"{source}[{label_key}]")
            except ValueError as e:  # object arrays inside the archive
                raise DatasetError(f"cannot read {path} ({e})") from None
    else:
        images = images_tensor(data, source)
    return ImageDataset(
        images=images,
        labels=labels,
        name=source,
        spec={"spec": str(path.resolve()), "split": split},
    )
