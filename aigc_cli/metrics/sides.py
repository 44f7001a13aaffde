"""What one side of a comparison is: a run, an image folder, a dataset, or a statistics file.

``resolve_side(spec)`` decides, in this order:

1. an existing path:
   - an ``.npz`` holding ``mu`` and ``sigma`` arrays -> a statistics file;
   - a folder holding image files (searched recursively) -> an image folder, decoded exactly as
     pytorch-fid does (PIL, ``convert("RGB")``, native size);
   - any other file or folder -> a dataset, through ``load_dataset`` (npz/npy arrays, IDX...);
   with ``resolution`` N (``--resolution``), a folder of images is read as a dataset too, every
   image scaled so its short side is N and centre-cropped, as ``train --resolution N`` saw it
   (decoded once, through the dataset cache): compare a run with its data at the size it trained;
2. a registered or prepared dataset name (``aigc datasets list``) -> that dataset, ``--split``
   applying;
3. otherwise a run: an id (``run3``, ``3``), a name, or ``last``. A run called like a dataset is
   reached by its id.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch

from aigc_cli.core.errors import AigcError, DatasetError, RunError
from aigc_cli.core.io import MISSING, probe

SUBSET_SEED = 0  # which reference images --ref-n keeps: fixed, so caches and results repeat


def subset_indices(total: int, n: int | None) -> torch.Tensor | None:
    """Sorted indices of a fixed random subset of ``n`` out of ``total``; None for all of them."""
    if n is None or n >= total:
        return None
    g = torch.Generator().manual_seed(SUBSET_SEED)
    return torch.randperm(total, generator=g)[:n].sort().values


@dataclass
class Side:
    spec: str
    kind: str
    label: str
    n: int | None = None  # images used (statistics files: as recorded, maybe unknown)
    fingerprint: str | None = None  # content identity, for the cache (folders and datasets)
    details: dict[str, Any] = field(default_factory=dict)
    # one of these, by kind
    images: torch.Tensor | None = None  # dataset: uint8 (N, C, H, W)
    files: list[Path] | None = None  # folder
    run_ref: str | None = None  # run
    seed: int = 0
    options: dict[str, Any] = field(default_factory=dict)  # run: generation options (None = not given)
    path: Path | None = None  # stats file, folder
    # dataset: its captions (the images' rows); run: the captions to draw, one per image, from a
    # captioned dataset it is compared with (``pair_captions``); None: none
    captions: list[str] | None = None

    @property
    def cacheable(self) -> bool:
        return self.kind in ("dataset", "folder") and self.fingerprint is not None

    def info(self) -> dict[str, Any]:
        out = {"spec": self.spec, "kind": self.kind, "label": self.label, "n": self.n}
        if self.kind == "run":
            out["seed"] = self.seed
            out.update({k: v for k, v in self.options.items() if v is not None})
        out.update(self.details)
        return out


def resolve_side(
    spec: str,
    *,
    split: str = "train",
    n: int = 10000,
    seed: int = 0,
    ref_n: int | None = None,
    options: dict[str, Any] | None = None,
    resolution: int | None = None,
) -> Side:
    """Decide what ``spec`` names. ``n``/``seed``/``options``: samples drawn from a run (its
    family's generation options); ``ref_n``: at most this many images from a folder or dataset
    (a fixed random subset)."""
    from aigc_cli.metrics.stats import is_stats_file

    if not spec or not spec.strip():
        raise AigcError("an empty side was given; use a run, a folder, a dataset or a statistics file")
    path = Path(spec).expanduser()
    found, kind = probe(path)
    if found is None and kind != MISSING:  # a link loop, a broken link: said as such, not "no such file"
        raise AigcError(f"{spec} is {kind}; pass a run, a folder, a dataset or a statistics file")
    if found is not None:
        if path.is_file() and is_stats_file(path):
            return Side(spec, "stats", f"statistics {path.name}", path=path)
        if path.is_dir():
            from aigc_cli.metrics.features import list_images

            files = list_images(path)
            if files and resolution is None:
                return _folder_side(spec, path, files, ref_n)
            if (path / "run.json").is_file():
                raise AigcError(f"{spec} is a run folder; name the run by its id ({path.name}) instead")
        return _dataset_side(spec, split, ref_n, resolution)
    from aigc_cli.data import load as _load  # noqa: F401  (registers the built-in datasets)
    from aigc_cli.data.base import DATASETS

    from aigc_cli.data.cache import registry as prepared

    if spec in DATASETS or spec in prepared():  # built-in, or prepared (aigc datasets prepare --name)
        return _dataset_side(spec, split, ref_n, resolution)
    from aigc_cli.runs.store import resolve_run

    try:
        run = resolve_run(spec)
    except RunError:
        raise AigcError(
            f"{spec!r} is not a file or folder, a dataset ({', '.join(DATASETS.names())}) or a run "
            "(see 'aigc runs list')"
        ) from None
    if n < 1:
        raise AigcError("-n must be at least 1")
    from aigc_cli.models.registry import get_family, require_command

    require_command(get_family(run.read_config()["family"]).spec, "eval fid", run.id)  # before any work
    return Side(spec, "run", f"run {run.id}", n=n, run_ref=run.id, seed=seed, options=dict(options or {}))


def _folder_side(spec: str, path: Path, files: list[Path], ref_n: int | None) -> Side:
    total = len(files)
    idx = subset_indices(total, ref_n)
    if idx is not None:
        files = [files[i] for i in idx.tolist()]
    h = hashlib.sha256(b"aigc-folder/1")
    for f in files:  # names, sizes and times: cheap, and changes whenever a file does
        st = probe(f)[0] or os.stat_result((0,) * 10)  # a broken link: skipped when read, as unreadable
        h.update(f"{f.relative_to(path)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    details = {"path": str(path.resolve()), "available": total}
    return Side(spec, "folder", f"folder {path}", n=len(files), fingerprint=h.hexdigest(), details=details,
                files=files, path=path)  # fmt: skip


def _dataset_side(spec: str, split: str, ref_n: int | None, resolution: int | None = None) -> Side:
    from aigc_cli.data.load import load_dataset

    try:
        ds = load_dataset(spec, split, resolution=resolution)
    except DatasetError:
        raise
    except (OSError, ValueError) as e:
        raise DatasetError(f"cannot read {spec!r} as images: {e}") from None
    total = len(ds)
    if total == 0:
        raise DatasetError(f"dataset {spec!r} has no images")
    images = ds.images
    idx = subset_indices(total, ref_n)
    fingerprint = ds.fingerprint
    if idx is not None:
        images = images[idx]
        fingerprint = f"{fingerprint}|subset{SUBSET_SEED}"
    details = {"split": split, "dataset": ds.name, "available": total}
    if resolution is not None:
        details["resolution"] = resolution
    captions = ds.captions
    if captions is not None and idx is not None:
        captions = [captions[i] for i in idx.tolist()]
    return Side(spec, "dataset", ds.name, n=len(images), fingerprint=fingerprint, details=details, images=images,
                captions=captions)


def pick_captions(captions: list[str], n: int, seed: int) -> list[str]:
    """``n`` of a dataset's non-empty captions, picked by ``seed`` (with repeats past their count):
    the prompts a captioned run is sampled with to be compared with that dataset."""
    named = [c for c in captions if c]
    g = torch.Generator().manual_seed(seed)
    rows = torch.randint(len(named), (n,), generator=g) if n > len(named) else torch.randperm(len(named), generator=g)[:n]
    return [named[i] for i in rows.tolist()]


def pair_captions(sides: list[Side]) -> None:
    """A captioned run compared with a captioned dataset draws from the dataset's captions: its
    ``n`` images are the captions of ``n`` dataset rows picked by the run side's seed (with
    repeats when it asks for more than the dataset holds). Other runs draw as they always do."""
    captions = next((c for c in map(_side_captions, sides) if c), None)
    if captions is None:
        return
    for side in sides:
        if side.kind == "run" and side.options.get("prompt") is None and _captioned(side.run_ref):
            side.captions = pick_captions(captions, side.n, side.seed)
            side.details["prompts"] = "the captions of the dataset side"


def _side_captions(side: Side) -> list[str] | None:
    """The non-empty captions of a dataset side, or of a folder side (its metadata.jsonl or .txt
    captions, data/captions.py); None for other sides and for sides without any."""
    captions = side.captions
    if side.kind == "folder" and side.path is not None:
        from aigc_cli.data.captions import source

        rows = [f.relative_to(side.path).as_posix() for f in side.files]
        captions = source(side.path).match(rows)
    named = [c for c in captions or [] if c]
    return named or None


def _captioned(run_ref: str) -> bool:
    from aigc_cli.models.registry import load_config
    from aigc_cli.runs.store import resolve_run

    return bool(load_config(resolve_run(run_ref))["model"].get("text"))


def sample_run(side: Side, device, batch_size: int = 256) -> torch.Tensor:
    """Draw ``side.n`` images from the run, quantised to uint8 exactly as saved to PNG."""
    from aigc_cli.generation import load_generator

    gen = load_generator(side.run_ref, device, command="eval fid")  # the image metrics apply together
    # a captioned run compared with a captioned dataset: each image drawn from one of its captions
    images = gen.sample_uint8(side.n, side.seed, batch_size=batch_size, prompts=side.captions,
                              **gen.options(side.options))
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise AigcError(f"run {side.run_ref} produced {tuple(images.shape)} {images.dtype}, not uint8 images")
    return images.cpu()


def iter_side_batches(side: Side, batch_size: int) -> Iterator[torch.Tensor]:
    from aigc_cli.metrics.features import FolderReader, tensor_batches

    if side.kind == "folder":
        reader = FolderReader(side.files, batch_size=batch_size)
        yield from reader
        side.details["skipped"] = reader.skipped
        side.n = len(side.files) - reader.skipped
    elif side.kind == "dataset":
        yield from tensor_batches(side.images, batch_size)
    else:  # pragma: no cover - runs are sampled first, statistics have no images
        raise RunError(f"side {side.spec} has no images to read")

