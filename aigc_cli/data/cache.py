"""The decoded cache: an image folder decoded once into a uint8 .npy in ``cache_dir()/datasets/``,
memory-mapped by later loads, and prepared datasets (``aigc datasets prepare --name``).

Key: sha256 of CACHE_VERSION, Pillow's version, the resolution, and the folder's listing (every
file ``load_folder`` looks at: relative path, size, mtime in ns; and the count of other entries
it passes over). Listing costs one stat per file; nothing is opened. A file added, removed,
touched or rewritten changes the key, so the folder is decoded again (into a new entry).

An entry is ``<key>.npy`` (the (N, C, H, W) pixels) and ``<key>.json`` (the header: shape,
classes, labels, skip counts, the file of each row, the key's inputs, the pixels' fingerprint,
and a sha256 of the header itself). Both are written atomically (temp + fsync + os.replace),
the header last: an entry without a header is never read. On load: the header's own checksum, the .npy's shape and
dtype, and the file's size against the header are checked; pixels of entries up to VERIFY_BYTES
are hashed again and compared with the fingerprint (a byte edited by hand is caught there;
above that size an edit that keeps the size is not, for a load must not read 20 GB). Whatever
fails: the entry is decoded again, never trained on.

Captions are not in an entry: a folder's are read at every load (data/captions.py) and matched
to the header's ``rows``, so that an edited metadata.jsonl or sidecar takes effect without a
decode (caption files are not in the listing). A prepared name keeps the captions it was
prepared with in ``<name>.captions.json`` beside the registry: it loads without its folder.

Stale entries: a folder decoded again (it changed) replaces the entries of the same folder and
resolution that no prepared name holds; ``prune()`` (``aigc datasets prune``) removes every entry
no prepared name holds, and the temporary files of writes killed midway (older than an hour: a
younger one may be a write under way).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import mmap
import os
import re
import struct
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from aigc_cli.core.errors import DatasetError
from aigc_cli.core.io import atomic_path, atomic_write_json, probe
from aigc_cli.core.paths import cache_dir
from aigc_cli.data import captions as caps
from aigc_cli.data.base import CHUNK, ImageDataset, pixel_digest, with_captions
from aigc_cli.data.download import Progress
from aigc_cli.data.folder import Pixels, folder_spec

CACHE_VERSION = 1  # bump when the decoder's output changes
VERIFY_BYTES = 256 << 20  # entries up to this size have their pixels hashed on every load
REGISTRY = "prepared.json"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def root() -> Path:
    return cache_dir() / "datasets"


def listing(folder: Path) -> list:
    """[[relative path, size, mtime_ns], ...] and a final [other entries] for what load_folder
    reads (folder._files: hidden names skipped, sorted)."""
    from aigc_cli.data.folder import _files

    files, other = _files(folder)
    out: list = []
    for f in files:
        st, _ = probe(f)
        if st is not None:
            out.append([f.relative_to(folder).as_posix(), st.st_size, st.st_mtime_ns])
    out.append([other])
    return out


def key_inputs(folder: Path, resolution: int | None) -> dict[str, Any]:
    import PIL

    return {"version": CACHE_VERSION, "pillow": PIL.__version__, "resolution": resolution,
            "listing": listing(folder)}


def key_of(inputs: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:32]


def _checksum(header: dict[str, Any]) -> str:
    body = {k: v for k, v in header.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def file_hash(npy: Path, offset: int, shape: tuple[int, ...], labels) -> str:
    """ImageDataset.fingerprint of an entry (the same bytes in the same order), read in chunks
    through the file, not its memory map: the pages a check
    reads stay in the page cache, not in every rank's resident memory (each rank maps the entry
    and touches only its slices of the batches, training/loop.py)."""
    with open(npy, "rb") as f:
        f.seek(offset)
        return pixel_digest(shape, iter(lambda: f.read(CHUNK), b""), labels)


def _write_pixels(f, flat: np.ndarray) -> None:
    """Write the pixels in chunks (tests make this fail midway, as a full disk would)."""
    for i in range(0, flat.size, CHUNK):
        f.write(flat[i:i + CHUNK].tobytes())


class CacheWriteError(DatasetError):
    """The cache could not be written (a full disk, a read-only folder): fatal to ``prepare``
    alone; a folder given to ``train`` is decoded into memory instead."""


HEADER = 128  # bytes of an entry's .npy header: room for any shape, rewritten in place at the end


def npy_header(shape: tuple[int, ...]) -> bytes:
    """A version 1.0 .npy header of uint8 ``shape``, HEADER bytes long (np.load reads any
    padding): a file streamed before its row count is known gets its header last, in place."""
    body = f"{{'descr': '|u1', 'fortran_order': False, 'shape': {tuple(shape)!r}, }}".encode("latin1")
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", HEADER - 10) + body.ljust(HEADER - 11) + b"\n"


class EntryFile(Pixels):
    """A folder's images decoded straight into an entry's .npy (load_folder's ``pixels``): rows
    of 3 channels appended as they come; at the end a gray folder's rows are compacted in place
    to channel 0 (each row moves to an offset before the one it is read from), the file cut to
    size and the header written. A full disk is an OSError of a write, never a SIGBUS of a map."""

    def __init__(self, f, n: int, h: int, w: int):
        self.f, self.h, self.w, self.kept = f, h, w, 0
        f.write(b"\0" * HEADER)

    def add(self, image: np.ndarray) -> None:
        rows = np.broadcast_to(image.transpose(2, 0, 1), (3, self.h, self.w))  # (C, H, W); gray broadcasts
        _write_pixels(self.f, np.ascontiguousarray(rows).reshape(-1))
        self.kept += 1

    def finish(self, channels: int) -> torch.Tensor:
        f, plane, step = self.f, self.h * self.w, max(1, CHUNK // (3 * self.h * self.w))
        if channels == 1:
            for i in range(0, self.kept, step):  # rows i.. read whole before their first plane is written
                m = min(step, self.kept - i)
                f.seek(HEADER + i * 3 * plane)
                rows = np.frombuffer(f.read(m * 3 * plane), np.uint8).reshape(m, 3, plane)
                f.seek(HEADER + i * plane)
                f.write(np.ascontiguousarray(rows[:, 0]).tobytes())
        f.truncate(HEADER + self.kept * channels * plane)
        f.seek(0)
        f.write(npy_header((self.kept, channels, self.h, self.w)))
        f.flush()
        return torch.from_numpy(map_npy(Path(f.name))[0])


def map_npy(npy: Path) -> tuple[np.ndarray, int]:
    """(the .npy's array memory-mapped copy-on-write, its data's offset in the file).

    Copy-on-write: torch gets a writable array (no warning) and nothing reaches the file. Advised
    MADV_RANDOM: training takes batches of random rows, and the kernel's default read-around
    (8 MB a fault on this machine's virtio disk) read 500 times the bytes a batch used once the
    set outgrew the page cache: 103 images/s against 554 with the advice, a 6 GB set under a 2 GB
    limit (docs/benchmarks/datasets.md). A sequential reader of a cold file pays a fault a page."""
    with open(npy, "rb") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f"{npy}: .npy version {version}")
        offset = f.tell()
        if fortran or dtype != np.uint8:
            raise ValueError(f"{npy}: not a C-ordered uint8 array")
        size = math.prod(shape)
        if os.fstat(f.fileno()).st_size < offset + size:
            raise ValueError(f"{npy}: shorter than its header says")
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)  # the mapping outlives the file object
    if hasattr(mmap, "MADV_RANDOM"):  # Linux and macOS; elsewhere the kernel's default
        mm.madvise(mmap.MADV_RANDOM)
    return np.ndarray(shape, np.uint8, buffer=mm, offset=offset), offset


def write_entry(key: str, inputs: dict[str, Any], fill: Callable[[Any], ImageDataset]) -> ImageDataset:
    """Write the entry ``key``: ``fill(f)`` writes the .npy into the open file ``f`` (a temporary
    one) and returns its dataset; then the header, last. A one-line DatasetError, and nothing
    left, on failure; the dataset, mapped from the entry, on success."""
    folder = root()
    npy, head = folder / f"{key}.npy", folder / f"{key}.json"
    try:
        with atomic_path(npy, parents=True) as tmp, open(tmp, "r+b") as f:
            ds = fill(f)
            f.flush()
            a, offset = map_npy(tmp)
            shape = a.shape
            del a
            fingerprint = file_hash(tmp, offset, shape, ds.labels)  # through the file: see file_hash
        header = {
            "shape": list(shape), "dtype": "uint8", "bytes": npy.stat().st_size,
            "labels": ds.labels.tolist() if ds.labels is not None else None,
            "classes": len(ds.classes) if ds.classes is not None else None, "class_names": ds.classes,
            "fingerprint": fingerprint, "skipped": ds.skipped, "skipped_why": ds.skipped_why,
            "files": ds.files, "upscaled": ds.upscaled, "resolution": ds.resolution, "key": inputs,
            "rows": ds.sources,
            "source": ds.spec.get("spec"),
        }
        header["checksum"] = _checksum(header)
        atomic_write_json(head, header)
    except OSError as e:
        with contextlib.suppress(OSError):
            npy.unlink()
        hint = f"; free space in {folder}" if e.errno == errno.ENOSPC else ""
        raise CacheWriteError(f"cannot write the dataset cache {npy}: {e.strerror or e}{hint}") from None
    found = read_entry(key)
    if found is None:
        raise CacheWriteError(f"the dataset cache {npy} did not read back as written; is {folder} shared?")
    return dataset_from(found[0], found[1], ds.name, ds.spec, ds.captions)


def write_dataset(key: str, ds: ImageDataset, inputs: dict[str, Any]) -> ImageDataset:
    """``ds`` (in memory) as the entry ``key`` (write_entry)."""
    a = ds.images.contiguous().numpy()

    def fill(f) -> ImageDataset:
        f.write(npy_header(a.shape))
        _write_pixels(f, a.reshape(-1))
        return ds

    return write_entry(key, inputs, fill)


def read_entry(key: str) -> tuple[dict[str, Any], torch.Tensor] | None:
    """(header, memory-mapped pixels) of a sound entry; None when it is absent or damaged."""
    npy, head = root() / f"{key}.npy", root() / f"{key}.json"
    try:
        header = json.loads(head.read_text())
        if not isinstance(header, dict) or header.get("checksum") != _checksum(header):
            return None
        if npy.stat().st_size != header["bytes"]:
            return None
        a, offset = map_npy(npy)
        if a.dtype != np.uint8 or list(a.shape) != header["shape"] or offset + a.nbytes != header["bytes"]:
            return None
        images = torch.from_numpy(a)
        labels = header["labels"]
        labels = torch.tensor(labels, dtype=torch.int64) if labels is not None else None
        if labels is not None and len(labels) != len(images):
            return None
        if header["bytes"] <= VERIFY_BYTES and file_hash(npy, offset, a.shape, labels) != header["fingerprint"]:
            return None
        return header, images
    except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError):
        return None


def remove_entry(key: str) -> None:
    for suffix in (".json", ".npy"):  # the header first: a half-removed entry is never read
        with contextlib.suppress(OSError):  # gone already, or a cache we may not write: only a cache
            (root() / f"{key}{suffix}").unlink()


def dataset_from(header: dict[str, Any], images: torch.Tensor, name: str, spec: dict[str, Any],
                 captions: list[str] | None = None) -> ImageDataset:
    labels = header["labels"]
    ds = ImageDataset(
        images=images, labels=torch.tensor(labels, dtype=torch.int64) if labels is not None else None,
        name=name, spec=spec, classes=header["class_names"], skipped=header["skipped"],
        skipped_why=dict(header["skipped_why"]), files=header["files"], resolution=header["resolution"],
        upscaled=header["upscaled"], mapped=True, captions=captions, sources=rows_of(header))
    ds._fingerprint = with_captions(header["fingerprint"], captions)  # the header's is the pixels' alone
    return ds


def rows_of(header: dict[str, Any]) -> list[str] | None:
    """The file of each row of an entry; None for an entry written before captions (no rows)."""
    rows = header.get("rows")
    ok = isinstance(rows, list) and len(rows) == header["shape"][0] and all(isinstance(r, str) for r in rows)
    return rows if ok else None


def load_folder_cached(path: Path, split: str = "train", progress: Progress | None = None,
                       resolution: int | None = None, strict: bool = False,
                       caption_column: str | None = caps.COLUMN) -> tuple[ImageDataset, str]:
    """(the folder's dataset, its cache key): memory-mapped from a sound entry, or decoded and
    written. A failed write is an error where ``strict`` (prepare), else the decoded set is used.
    Captions (``caption_column``: folder.load_folder's) are read from the folder either way."""
    from aigc_cli.data import folder as folder_mod

    inputs = key_inputs(path, resolution)
    key = key_of(inputs)
    spec = folder_spec(path, split, resolution, caption_column)
    found = read_entry(key)
    if found is not None and rows_of(found[0]) is not None:  # an entry without rows decodes again
        source = caps.source(path, caption_column) if caption_column is not None else None
        captions = source.match(rows_of(found[0])) if source is not None else None
        return dataset_from(found[0], found[1], path.resolve().name, spec, captions), key
    remove_entry(key)
    try:  # decoded straight into the entry: a folder larger than memory prepares in constant memory
        ds = write_entry(key, inputs, lambda f: folder_mod.load_folder(
            path, split, progress, resolution, pixels=lambda n, h, w: EntryFile(f, n, h, w),
            caption_column=caption_column))
    except CacheWriteError:
        if strict:
            raise
        # the cache is only a cache
        return folder_mod.load_folder(path, split, progress, resolution, caption_column=caption_column), key
    _supersede(key, spec["spec"], resolution)
    return ds, key


def _headers() -> dict[str, dict[str, Any]]:
    """key -> header of every entry whose header reads (damaged ones are left to read_entry)."""
    out = {}
    for head in root().glob("*.json"):
        if re.fullmatch(r"[0-9a-f]{32}", head.stem):  # not the registry, nor a name's captions
            with contextlib.suppress(OSError, ValueError):
                header = json.loads(head.read_text())
                if isinstance(header, dict):
                    out[head.stem] = header
    return out


def _supersede(key: str, source: str, resolution: int | None) -> None:
    """Remove the other entries of ``source`` at ``resolution`` (older listings of the folder)
    that no prepared name holds. A run training from one keeps its mapping (the file's data
    lives until it is unmapped); its --resume would meet a changed fingerprint anyway."""
    held = {e.get("key") for e in registry().values()}
    for k, header in _headers().items():
        if k != key and k not in held and header.get("source") == source and header.get("resolution") == resolution:
            remove_entry(k)


def prune() -> tuple[int, int]:
    """Remove every entry no prepared name holds, and stale temporary files: (entries, bytes)."""
    reg = registry()
    held = {e.get("key") for e in reg.values()}
    kept = {REGISTRY, *(captions_path(n).name for n in reg)}
    entries, freed = set(), 0
    for path in root().iterdir() if root().is_dir() else ():
        entry = path.suffix in (".npy", ".json") and re.fullmatch(r"[0-9a-f]{32}", path.stem) is not None
        if path.name in kept or (entry and path.stem in held):
            continue
        st, kind = probe(path)
        if st is None or kind != "a regular file":
            continue
        if entry:
            entries.add(path.stem)  # removed below, the header first
        elif time.time() - st.st_mtime < 3600:
            continue  # a temporary file of a write that may be under way
        else:
            with contextlib.suppress(OSError):
                path.unlink()
        freed += st.st_size
    for k in entries:
        remove_entry(k)
    return len(entries), freed


# -- prepared datasets: names -> entries ---------------------------------------------------------

def registry() -> dict[str, dict[str, Any]]:
    try:
        data = json.loads((root() / REGISTRY).read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def check_name(name: str) -> None:
    from aigc_cli.data.base import DATASETS
    from aigc_cli.data.text import CORPORA

    if name in DATASETS or name in CORPORA:
        raise DatasetError(f"{name!r} is a built-in dataset name; pick another --name")
    if not NAME.fullmatch(name):
        raise DatasetError(f"bad dataset name {name!r}: use letters, digits, '.', '_' and '-' (up to 64), "
                           "starting with a letter or digit")


def captions_path(name: str) -> Path:
    """Where the prepared dataset ``name`` keeps its captions (names hold no '/': check_name)."""
    return root() / f"{name}.captions.json"


def _save_captions(name: str, ds: ImageDataset, column: str | None) -> None:
    """The captions ``name`` was prepared with, or none (a stale file of the name removed)."""
    path = captions_path(name)
    try:
        if ds.captions is None:
            path.unlink(missing_ok=True)
        else:
            atomic_write_json(path, {"column": column, "rows": ds.sources, "captions": ds.captions})
    except OSError as e:
        raise DatasetError(f"cannot write {path}: {e.strerror or e}") from None


def _prepared_captions(name: str, entry: dict[str, Any], header: dict[str, Any]) -> list[str] | None:
    """The captions of the prepared ``name``, checked against the rows of its entry."""
    if not entry.get("captions"):
        return None
    path = captions_path(name)
    try:
        data = json.loads(path.read_text())
        captions = data["captions"]
        ok = (isinstance(captions, list) and all(isinstance(c, str) for c in captions)
              and len(captions) == header["shape"][0] and data.get("rows") in (None, rows_of(header)))
    except (OSError, ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        raise DatasetError(f"the captions of the prepared dataset {name} ({path}) are damaged, gone or of other "
                           f"images; prepare it again: aigc datasets prepare {entry.get('source')} --name {name}")
    return captions


def prepare(folder: Path, name: str, resolution: int | None, progress: Progress | None = None,
            caption_column: str = caps.COLUMN) -> ImageDataset:
    check_name(name)
    st, kind = probe(folder)
    if st is None or kind != "a folder":
        raise DatasetError(f"{folder} is {'missing' if st is None and kind == 'missing' else kind}; "
                           "prepare takes a folder of images")
    ds, key = load_folder_cached(folder, "train", progress, resolution, strict=True, caption_column=caption_column)
    _save_captions(name, ds, caption_column)  # before the registry names them
    reg = registry()
    old = reg.get(name, {}).get("key")
    reg[name] = {"key": key, "source": str(folder.resolve()), "resolution": resolution,
                 "captions": ds.captions is not None}
    try:
        atomic_write_json(root() / REGISTRY, reg)
    except OSError as e:
        raise DatasetError(f"cannot write {root() / REGISTRY}: {e.strerror or e}") from None
    if old and old != key and not any(e.get("key") == old for e in reg.values()):
        remove_entry(old)  # the name prepared again from other content: its old pixels go
    return load_prepared(name, "train", resolution)


def load_prepared(name: str, split: str = "train", resolution: int | None = None) -> ImageDataset:
    entry = registry()[name]
    if resolution is not None and resolution != entry.get("resolution"):
        have = entry.get("resolution")
        raise DatasetError(f"{name} was prepared at --resolution {have if have is not None else '(none)'}, "
                           f"not {resolution}; prepare it again at {resolution} under another name")
    found = read_entry(entry["key"])
    spec = {"spec": name, "split": split}
    if entry.get("resolution") is not None:
        spec["resolution"] = entry["resolution"]
    source = Path(entry.get("source") or "")
    if found is None and entry.get("source") and probe(source)[1] == "a folder":  # decoded again
        # its captions are those it was prepared with, not the folder's today
        ds, key = load_folder_cached(source, split, None, entry.get("resolution"), strict=True, caption_column=None)
        reg = registry()
        reg[name] = {**entry, "key": key}
        with contextlib.suppress(OSError):
            atomic_write_json(root() / REGISTRY, reg)
        found = read_entry(key)
    if found is None:
        raise DatasetError(f"the cache of the prepared dataset {name} is damaged or gone; prepare it again: "
                           f"aigc datasets prepare {entry.get('source')} --name {name}")
    return dataset_from(found[0], found[1], name, spec, _prepared_captions(name, entry, found[0]))


def remove_prepared(name: str) -> None:
    reg = registry()
    if name not in reg:
        raise DatasetError(f"no prepared dataset {name!r}" + (f"; prepared: {', '.join(sorted(reg))}" if reg else ""))
    entry = reg.pop(name)
    atomic_write_json(root() / REGISTRY, reg)
    with contextlib.suppress(OSError):
        captions_path(name).unlink(missing_ok=True)
    if not any(e.get("key") == entry["key"] for e in reg.values()):
        remove_entry(entry["key"])


def cache_size() -> int:
    """Bytes under the datasets cache folder."""
    total = 0
    for dirpath, _, names in os.walk(root()):
        for n in names:
            with contextlib.suppress(OSError):
                total += os.stat(os.path.join(dirpath, n)).st_size
    return total
