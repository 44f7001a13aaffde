"""One entry point: ``load_dataset(spec, split)`` for a registered name or a path.

A path is read by what it is: a folder of images, an IDX file (``.gz`` or raw, sniffed by its
magic number), a ``.npy``/``.npz`` array file, or a single image. ``split`` only applies to
named datasets; a path is one set of images whatever the split. ``resolution`` N: every image
scaled so its short side is N and centre-cropped to N x N, whatever the kind (a folder's images as
they are decoded, arrays and named datasets afterwards: ``core.images.resize_images``).

``crop`` "random" (training's ``--crop random``): the images are loaded at ``margin(N)`` instead
(a prepared dataset: at the resolution it was prepared at, which must be larger than N), and the
training loop takes a random N x N window of each per batch (training/loop.py). A cache holds
one shape per dataset, so the windows move in both directions inside a square a ninth larger,
where diffusers' ``--random_crop`` moves along the long side of the unsquared image only.

``caption_column``: the metadata.jsonl field an image folder's captions are read from
(data/captions.py); another than the default is refused for anything but a folder.
"""

from __future__ import annotations

from pathlib import Path

from aigc_cli.core.errors import DatasetError, OptionError
from aigc_cli.core.images import resize_images
from aigc_cli.core.faults import fault_point
from aigc_cli.core.io import MISSING, probe
from aigc_cli.data import digits, named, shapes, shapes_captions  # noqa: F401  (register the named and built-in datasets)
from aigc_cli.data.captions import COLUMN
from aigc_cli.data.arrays import load_array_file
from aigc_cli.data.base import DATASETS, SPLITS, ImageDataset, require_regular
from aigc_cli.data.download import Progress
from aigc_cli.data.folder import load_image_file
from aigc_cli.data.idx import is_idx, load_idx

IDX_NAMES = (".gz", ".idx", "-ubyte")


RESOLUTIONS = (4, 4096)  # the --resolution bounds (training/options.py declares them on the option)
CROPS = ("center", "random")  # --crop (training/options.py)


def margin(resolution: int) -> int:
    """The side of the images ``--crop random`` takes N x N windows of: about 9/8 of N."""
    return resolution + -(-resolution // 8)


def load_dataset(spec: str, split: str = "train", progress: Progress | None = None,
                 resolution: int | None = None, crop: str = "center", caption_column: str = COLUMN) -> ImageDataset:
    """``progress(description, done, total)`` hears about downloads and image decoding."""
    fault_point("dataset:load")
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; use one of: {', '.join(SPLITS)}")
    if resolution is not None and (isinstance(resolution, bool) or not isinstance(resolution, int)
                                   or not RESOLUTIONS[0] <= resolution <= RESOLUTIONS[1]):
        raise OptionError("resolution", f"must be a whole number of pixels from {RESOLUTIONS[0]} to "
                          f"{RESOLUTIONS[1]}, got {resolution!r}")
    if crop not in CROPS:
        raise OptionError("crop", f"{crop!r} is not one of: {', '.join(CROPS)}")
    if not isinstance(caption_column, str) or not caption_column:
        raise OptionError("caption_column", f"must name a metadata.jsonl field, got {caption_column!r}")
    if crop == "center":
        return _load(spec, split, progress, resolution, caption_column)
    if resolution is None:
        raise OptionError("crop", "random needs --resolution N, the size of the windows it takes")
    from aigc_cli.data import cache

    prepared = spec in cache.registry()  # windows of the images as they were prepared
    return random_windows(_load(spec, split, progress, None if prepared else margin(resolution), caption_column),
                          resolution)


def random_windows(ds: ImageDataset, resolution: int) -> ImageDataset:
    """``ds`` for ``--crop random --resolution N``: its square images become ``windows`` and
    ``images`` their centre N x N view (no copy); recorded in the spec, for --resume."""
    _, _, h, w = ds.images.shape
    if h != w or h <= resolution:
        raise DatasetError(f"{ds.name}: its images are {w}x{h}; --crop random --resolution {resolution} takes "
                           f"windows of larger square images (prepare it at --resolution {margin(resolution)})")
    top = (h - resolution) // 2
    ds.windows = ds.images
    ds.images = ds.images[:, :, top : top + resolution, top : top + resolution]
    ds.resolution, ds.spec = resolution, {**ds.spec, "resolution": resolution, "crop": "random"}
    return ds


def _load(spec: str, split: str, progress: Progress | None, resolution: int | None,
          caption_column: str = COLUMN) -> ImageDataset:
    from aigc_cli.data import cache

    if caption_column != COLUMN and (spec in DATASETS or spec in cache.registry() or not Path(spec).expanduser().is_dir()):
        raise OptionError("caption_column", f"applies to image folders (their metadata.jsonl); {spec} is not one"
                          + (" (a prepared dataset keeps the captions it was prepared with)"
                             if spec in cache.registry() else ""))
    if spec in DATASETS:
        entry = DATASETS.get(spec)
        # Only datasets that download take a progress callback; ``load(split)`` stays the contract.
        ds = entry.load(split, progress=progress) if entry.needs_download else entry.load(split)
        return at_resolution(ds, resolution)
    if spec in cache.registry():  # a prepared dataset (aigc datasets prepare --name)
        return cache.load_prepared(spec, split, resolution)
    path = Path(spec).expanduser()
    found, kind = probe(path)
    if kind == MISSING:
        raise DatasetError(
            f"no dataset {spec!r}: not a built-in name ({', '.join(DATASETS.names())}) "
            "and no such file or folder"
        )
    if found is None:  # a link loop, a broken link: said as such, not as "no such file"
        raise DatasetError(f"{spec} is {kind}; pass a dataset name, file or folder")
    try:
        ds = _load_path(path, split, progress, resolution, caption_column)
    except OSError as e:  # permissions, I/O errors: still a one-line message
        raise DatasetError(f"cannot read {spec}: {e.strerror or e}") from None
    if ds is None:
        raise DatasetError(f"not a dataset: {spec} (not an image folder, image, IDX, .npy or .npz file)")
    return ds


def at_resolution(ds: ImageDataset, resolution: int | None) -> ImageDataset:
    """``ds`` with its images scaled and centre-cropped to ``resolution`` (recorded in its spec,
    so that a run resumes on the same pixels); ``ds`` itself when None."""
    if resolution is None:
        return ds
    ds.images, ds.upscaled = resize_images(ds.images, resolution)
    ds.resolution = resolution
    ds.spec = {**ds.spec, "resolution": resolution}
    ds._fingerprint = None
    return ds


def _load_path(path: Path, split: str, progress: Progress | None, resolution: int | None,
               caption_column: str = COLUMN) -> ImageDataset | None:
    if path.is_dir():
        from aigc_cli.data.cache import load_folder_cached

        return load_folder_cached(path, split, progress, resolution, caption_column=caption_column)[0]
    require_regular(path)  # a FIFO, device or socket is refused before anything opens it
    if path.suffix.lower() in (".npy", ".npz"):
        return at_resolution(load_array_file(path, split), resolution)
    if path.name.lower().endswith(IDX_NAMES) or is_idx(path):
        # a .gz that is not IDX gets "not an IDX file" from here
        return at_resolution(load_idx(path, split), resolution)
    return load_image_file(path, split, resolution)
