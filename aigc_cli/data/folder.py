"""A folder of image files (searched recursively) as a dataset.

Decisions, so every folder loads into one (N, C, H, W) uint8 tensor:
- files Pillow cannot read (damaged, truncated, over Pillow's decompression-bomb limit), and
  entries that are not regular files (FIFOs, devices, sockets: never opened), are skipped and
  counted in ``skipped`` by reason; hidden files are ignored;
- orientation: a photo's EXIF orientation is honoured (a phone's portrait shot stands upright);
- size: with ``resolution`` N, every image is scaled so its short side is N and centre-cropped
  to N x N (antialiased: a whole-factor reduce, then Lanczos), those smaller than N upscaled and
  counted; without it, images not of the most common size are scaled to cover it and
  centre-cropped (aspect ratio kept, no padding), and a most common size larger than
  LARGE on its short side is refused, suggesting a resolution (no silent 4032x3024 dataset);
- channels: RGB (3) if any image has colour (any pixel with R != G or G != B), else gray (1);
  transparency is composited on black;
- labels: when every image lies inside an immediate subfolder, the subfolder names (sorted)
  are the classes; otherwise the dataset is unlabelled;
- captions: from the root's metadata.jsonl or cat.txt sidecars (data/captions.py); those files
  are not images and are left out of the listing, so an edited caption decodes nothing again.
"""

from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from aigc_cli.core.errors import DatasetError, opt
from aigc_cli.core.images import UNREADABLE, decode_file, failure, stored_size
from aigc_cli.core.io import open_input, probe
from aigc_cli.data import captions as caps
from aigc_cli.data.base import ImageDataset
from aigc_cli.data.download import Progress

LARGE = 256  # px on the short side: a folder of larger images needs a --resolution
AHEAD = 64 << 20  # bytes of decoded images held ahead of the one being written


def _files(root: Path) -> tuple[list[Path], int]:
    """(regular files, how many other entries were passed over: FIFOs, devices, sockets, broken
    links, link loops). A FIFO would block Image.open."""
    out, other = [], 0
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        names = [n for n in names if not n.startswith(".")]
        stems = {Path(n).stem for n in names if Path(n).suffix.lower() != caps.SIDECAR}
        at_root = Path(folder) == root
        for path in (Path(folder) / n for n in sorted(names) if not caps.is_caption_file(n, stems, at_root)):
            if probe(path)[1] == "a regular file":
                out.append(path)
            else:
                other += 1
    return out, other


def _size(path: Path) -> tuple[tuple[int, int] | None, str]:
    """((width, height) as shown, EXIF orientation honoured, from the header only; "") or
    (None, why) when Pillow cannot identify the file or refuses its size."""
    from PIL import Image

    try:
        with open_input(path, "an image file") as f, Image.open(f) as im:
            return stored_size(im), ""
    except Exception as e:  # not an image, unknown format, damaged header, decompression bomb
        return None, failure(e)


def too_large(root: Path, size: tuple[int, int]) -> DatasetError:
    """The one-line error of a folder (or an image file) larger than LARGE px without a resolution."""
    w, h = size
    what, them = ("its images are", "them") if root.is_dir() else ("it is", "it")
    return DatasetError(f"{root}: {what} {w}x{h}, larger than {LARGE} px on the short side; give "
                        f"{opt('resolution')} 64 (or the size to train at) to scale {them} down")


class Pixels:
    """Where a folder's decoded images go, one after another, as (N, 3, H, W) uint8 rows: memory
    (this class), or the dataset cache's file (data/cache.py: a folder larger than memory decodes
    in constant memory). ``finish(channels)``: the (kept, channels, H, W) tensor; a gray folder
    keeps channel 0 of its rows."""

    def __init__(self, n: int, h: int, w: int):
        self.rows = np.empty((n, 3, h, w), np.uint8)
        self.kept = 0

    def add(self, image: np.ndarray) -> None:
        self.rows[self.kept] = image.transpose(2, 0, 1)  # (H, W, C) -> (C, H, W); gray broadcasts
        self.kept += 1

    def finish(self, channels: int) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(self.rows[: self.kept, :channels]))


def load_folder(root: Path, split: str = "train", progress: Progress | None = None,
                resolution: int | None = None, pixels: Callable[[int, int, int], Pixels] = Pixels,
                caption_column: str | None = caps.COLUMN) -> ImageDataset:
    """``pixels(n, h, w)``: where the decoded images go (default: memory). ``caption_column``:
    the metadata.jsonl field of the captions; None: no captions read (a prepared dataset keeps
    its own)."""
    captions = caps.source(root, caption_column) if caption_column is not None else None  # checked before decoding
    files, not_regular_count = _files(root)
    total = len(files) + not_regular_count
    why: Counter = Counter()
    if not_regular_count:
        why["not a regular file"] = not_regular_count
    workers = min(8, (os.cpu_count() or 1) + 2)  # Pillow decodes without the GIL
    with ThreadPoolExecutor(workers) as pool:
        sizes = list(pool.map(_size, files))
        readable = []
        for f, (s, reason) in zip(files, sizes):
            if s is None:
                why[reason] += 1
            else:
                readable.append((f, s))
        if not readable:
            raise DatasetError(f"no readable images in {root}" + (f" ({total} files skipped)" if total else ""))
        size = Counter(s for _, s in readable).most_common(1)[0][0]  # ties: the first in path order
        if resolution is None and min(size) > LARGE:
            raise too_large(root, size)
        if resolution is not None:
            size = (resolution, resolution)
        out = pixels(len(readable), size[1], size[0])
        kept, channels, upscaled = [], 1, 0
        # In path order, each image written as it comes: besides ``out``, at most a window of
        # decoded images is held (Executor.map would run ahead over the whole folder).
        window = max(2 * workers, AHEAD // (3 * size[0] * size[1]))
        decoded = (d for i in range(0, len(readable), window)
                   for d in pool.map(lambda f: decode_file(f, size, resolution),
                                     [f for f, _ in readable[i : i + window]]))
        for i, ((f, _), (a, note)) in enumerate(zip(readable, decoded)):
            if a is None:
                why[note] += 1
            else:
                out.add(a)
                kept.append(f)
                channels = max(channels, a.shape[-1])
                upscaled += note == "upscaled"
            if progress is not None:
                progress("decoding images", i + 1, len(readable))

    skipped = total - len(kept)
    if not kept:
        raise DatasetError(f"no readable images in {root} ({skipped} files skipped)")
    images = out.finish(channels)  # (N, C, H, W)

    rows = [f.relative_to(root).as_posix() for f in kept]
    rel = [f.relative_to(root).parts for f in kept]
    labels = classes = None
    if all(len(p) >= 2 for p in rel):  # every image inside a subfolder: subfolders are classes
        classes = sorted({p[0] for p in rel})
        index = {c: i for i, c in enumerate(classes)}
        labels = torch.tensor([index[p[0]] for p in rel], dtype=torch.int64)
    return ImageDataset(
        images=images,
        labels=labels,
        name=root.resolve().name,
        spec=folder_spec(root, split, resolution, caption_column),
        classes=classes,
        skipped=skipped,
        skipped_why=dict(why),
        files=total,
        resolution=resolution,
        upscaled=upscaled,
        captions=captions.match(rows) if captions is not None else None,
        sources=rows,
    )


def folder_spec(root: Path, split: str, resolution: int | None, caption_column: str | None) -> dict:
    """What load_dataset needs to load the folder again (a run's --resume): the caption column
    only when it is not the default, so that the specs of runs without it stay as they were."""
    spec = {"spec": str(root.resolve()), "split": split}
    if resolution is not None:
        spec["resolution"] = resolution
    if caption_column not in (None, caps.COLUMN):
        spec["caption_column"] = caption_column
    return spec


def load_image_file(path: Path, split: str = "train", resolution: int | None = None) -> ImageDataset | None:
    """A single image file as a one-image dataset; None when it is not an image."""
    a, note = decode_file(path, resolution=resolution)
    if a is None:
        if note != UNREADABLE:
            raise DatasetError(f"{path}: {note}")
        return None
    if resolution is None and min(a.shape[:2]) > LARGE:
        raise too_large(path, (a.shape[1], a.shape[0]))
    images = torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))[None]  # (1, C, H, W)
    spec = {"spec": str(path.resolve()), "split": split}
    if resolution is not None:
        spec["resolution"] = resolution
    return ImageDataset(images=images, labels=None, name=path.name, spec=spec, resolution=resolution,
                        upscaled=int(note == "upscaled"))
