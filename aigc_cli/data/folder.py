"""A folder of image files (searched recursively) as a dataset.

Decisions, so every folder loads into one (N, C, H, W) uint8 tensor:
- files Pillow cannot read, and entries that are not regular files (FIFOs, devices, sockets:
  never opened), are skipped and counted in ``skipped`` by reason; hidden files are ignored;
- size: images not of the most common size are scaled to cover it and centre-cropped
  (aspect ratio kept, no padding);
- channels: RGB (3) if any image has colour (any pixel with R != G or G != B), else gray (1);
  transparency is composited on black;
- labels: when every image lies inside an immediate subfolder, the subfolder names (sorted)
  are the classes; otherwise the dataset is unlabelled.
"""

from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from aigc_cli.core.errors import DatasetError
from aigc_cli.core.images import decode_image
from aigc_cli.core.io import open_input, probe
from aigc_cli.data.base import ImageDataset
from aigc_cli.data.download import Progress


def _files(root: Path) -> tuple[list[Path], int]:
    """(regular files, how many other entries were passed over: FIFOs, devices, sockets, broken
    links, link loops). A FIFO would block Image.open."""
    out, other = [], 0
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for path in (Path(folder) / n for n in sorted(names) if not n.startswith(".")):
            if probe(path)[1] == "a regular file":
                out.append(path)
            else:
                other += 1
    return out, other


def _size(path: Path) -> tuple[int, int] | None:
    """(width, height) from the header only, or None when Pillow cannot identify the file."""
    from PIL import Image

    try:
        with open_input(path, "an image file") as f, Image.open(f) as im:
            return im.size
    except Exception:  # not an image, unknown format, damaged header
        return None


def load_folder(root: Path, split: str = "train", progress: Progress | None = None) -> ImageDataset:
    files, not_regular_count = _files(root)
    total = len(files) + not_regular_count
    workers = min(8, (os.cpu_count() or 1) + 2)  # Pillow decodes without the GIL
    with ThreadPoolExecutor(workers) as pool:
        sizes = list(pool.map(_size, files))
        readable = [(f, s) for f, s in zip(files, sizes) if s is not None]
        if not readable:
            raise DatasetError(f"no readable images in {root}" + (f" ({total} files skipped)" if total else ""))
        size = Counter(s for _, s in readable).most_common(1)[0][0]  # ties: the first in path order
        arrays = []
        for i, a in enumerate(pool.map(lambda f: decode_image(f, size), [f for f, _ in readable])):
            arrays.append(a)
            if progress is not None:
                progress("decoding images", i + 1, len(readable))

    kept = [(f, a) for (f, _), a in zip(readable, arrays) if a is not None]
    skipped = total - len(kept)
    why = {k: n for k, n in (("unreadable", len(files) - len(kept)), ("not a regular file", not_regular_count)) if n}
    if not kept:
        raise DatasetError(f"no readable images in {root} ({skipped} files skipped)")
    channels = max(a.shape[-1] for _, a in kept)
    images = np.empty((len(kept), size[1], size[0], channels), np.uint8)  # (N, H, W, C)
    for i, (_, a) in enumerate(kept):
        images[i] = a  # a gray image broadcasts into all three channels
    images = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()  # (N, C, H, W)

    rel = [f.relative_to(root).parts for f, _ in kept]
    labels = classes = None
    if all(len(p) >= 2 for p in rel):  # every image inside a subfolder: subfolders are classes
        classes = sorted({p[0] for p in rel})
        index = {c: i for i, c in enumerate(classes)}
        labels = torch.tensor([index[p[0]] for p in rel], dtype=torch.int64)
    return ImageDataset(
        images=images,
        labels=labels,
        name=root.resolve().name,
        spec={"spec": str(root.resolve()), "split": split},
        classes=classes,
        skipped=skipped,
        skipped_why=why,
        files=total,
    )


def load_image_file(path: Path, split: str = "train") -> ImageDataset | None:
    """A single image file as a one-image dataset; None when it is not an image."""
    a = decode_image(path)
    if a is None:
        return None
    images = torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))[None]  # (1, C, H, W)
    return ImageDataset(images=images, labels=None, name=path.name, spec={"spec": str(path.resolve()), "split": split})
