"""Image I/O in one place: image files in (decoded, resized, converted to a run's shape),
tensors out (quantised, gridded, PNG with text chunks, animated GIF).

Everything that reads or writes an image goes through here: datasets, ``aigc reconstruct`` and
``interpolate --between`` (files in), samples, previews and interpolations (files out).
"""

from __future__ import annotations

import io
import math
import stat
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from aigc_cli.core.errors import ConfigError, OptionError
from aigc_cli.core.io import check_input, open_input


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) floats in [0, 1] -> uint8, rounded as PNG writers do."""
    return images.detach().float().mul(255).add(0.5).clamp_(0, 255).to(torch.uint8).cpu()


def make_grid(images: torch.Tensor, nrow: int | None = None, padding: int = 2) -> torch.Tensor:
    """(B, C, H, W) uint8 -> (C, H', W') uint8, ``nrow`` images per row, black padding."""
    b, c, h, w = images.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(b)))
    ncol = math.ceil(b / nrow)
    grid = torch.zeros(c, ncol * (h + padding) + padding, nrow * (w + padding) + padding, dtype=torch.uint8)
    for i in range(b):
        r, k = divmod(i, nrow)
        y, x = padding + r * (h + padding), padding + k * (w + padding)
        grid[:, y : y + h, x : x + w] = images[i]
    return grid


CAPTION_CELL = 128  # px: a captioned grid's cell, each image scaled up (nearest) to fit it
CAPTION_LINES = 3  # lines of text under each image


def captioned_grid(images: torch.Tensor, captions, nrow: int = 8, padding: int = 2) -> torch.Tensor:
    """(B, C, H, W) uint8 and B texts -> (3, H', W') uint8: each image scaled up by a whole factor
    to about CAPTION_CELL px, its text wrapped under it in white (a captioned run's previews)."""
    import textwrap

    from PIL import Image, ImageDraw, ImageFont

    b, c, h, w = images.shape
    k = max(1, CAPTION_CELL // max(h, w))
    cw, ch = w * k, h * k
    font = ImageFont.load_default()
    line = 11  # px per line of the default font
    width = max(8, cw // 6)  # characters per line
    ncol = math.ceil(b / nrow)
    cell_h = ch + CAPTION_LINES * line + padding
    canvas = Image.new("RGB", (nrow * (cw + padding) + padding, ncol * (cell_h + padding) + padding))
    draw = ImageDraw.Draw(canvas)
    for i in range(b):
        r, col = divmod(i, nrow)
        x, y = padding + col * (cw + padding), padding + r * (cell_h + padding)
        image = _pil(images[i]).convert("RGB").resize((cw, ch), Image.NEAREST)
        canvas.paste(image, (x, y))
        lines = textwrap.wrap(str(captions[i]) or "(no caption)", width)[:CAPTION_LINES]
        for j, text in enumerate(lines):
            draw.text((x, y + ch + 1 + j * line), text, fill=(255, 255, 255), font=font)
    return torch.from_numpy(np.asarray(canvas).copy()).permute(2, 0, 1).contiguous()


def interleave_rows(originals: torch.Tensor, reconstructions: torch.Tensor, per_row: int) -> torch.Tensor:
    """(n, C, H, W) twice -> (2n, C, H, W): a row of originals, the row of their reconstructions, ..."""
    parts = []
    for i in range(0, len(originals), per_row):
        parts += [originals[i : i + per_row], reconstructions[i : i + per_row]]
    return torch.cat(parts)


def _pil(image: torch.Tensor):
    """(C, H, W) uint8 -> PIL image (L or RGB)."""
    from PIL import Image

    array = image.permute(1, 2, 0).numpy()
    if array.shape[2] == 1:
        return Image.fromarray(array[:, :, 0], mode="L")
    return Image.fromarray(np.ascontiguousarray(array), mode="RGB")


def png_bytes(image: torch.Tensor, text: dict[str, str] | None = None) -> bytes:
    """(C, H, W) uint8 -> PNG bytes with tEXt chunks (run, seed, index...)."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, str(value))
    buf = io.BytesIO()
    _pil(image).save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


# -- images in -----------------------------------------------------------------------------------

def _plain(im):
    """Any Pillow mode -> one of L, LA, RGB, RGBA, the modes resizing and compositing handle."""
    from PIL import Image

    if im.mode.startswith("I;16"):  # 16-bit gray: the top 8 of 16 bits, whatever the content's range
        a = np.asarray(im).astype(np.int64)
        return Image.fromarray((a >> 8).clip(0, 255).astype(np.uint8), "L")
    if im.mode.startswith("I"):  # 32-bit gray: 16-bit content keeps its top 8 bits (convert("L") clips)
        a = np.asarray(im).astype(np.int64)
        return Image.fromarray((a >> 8 if a.max() > 255 else a).clip(0, 255).astype(np.uint8), "L")
    if im.mode in ("L", "LA", "RGB", "RGBA"):
        return im
    alpha = "A" in im.mode or "a" in im.mode or "transparency" in im.info
    gray = im.mode in ("1", "F", "La")
    return im.convert(("LA" if alpha else "L") if gray else ("RGBA" if alpha else "RGB"))


def _to_array(im) -> np.ndarray:
    """A plain-mode Pillow image -> (H, W, 1) or (H, W, 3) uint8, transparency composited on black."""
    a = np.asarray(im)
    if a.ndim == 2:
        a = a[..., None]
    if im.mode in ("LA", "RGBA"):
        a = ((a[..., :-1].astype(np.uint16) * a[..., -1:] + 127) // 255).astype(np.uint8)
    if a.shape[-1] == 3 and (a[..., 0] == a[..., 1]).all() and (a[..., 1] == a[..., 2]).all():
        a = a[..., :1]  # gray content saved as RGB (or a gray palette) counts as gray
    return a


ORIENTATION = 0x0112  # the EXIF tag; values 5 to 8 turn the picture a quarter
BOMB = "too large (Pillow's decompression-bomb limit)"  # the skip reason of a huge image
UNREADABLE = "unreadable"


def stored_size(im) -> tuple[int, int]:
    """(width, height) of an opened image as shown, its EXIF orientation honoured (header only)."""
    try:
        turned = im.getexif().get(ORIENTATION) in (5, 6, 7, 8)
    except Exception:  # a damaged EXIF block: the pixels as stored
        turned = False
    return (im.size[1], im.size[0]) if turned else im.size


def failure(e: BaseException) -> str:
    """Why an image could not be opened or decoded, as a skip reason."""
    from PIL import Image

    return BOMB if isinstance(e, Image.DecompressionBombError) else UNREADABLE


def _cover(im, size: tuple[int, int], method):
    """Scale ``im`` to cover ``size`` (w, h), aspect kept, and crop the middle: the crop box is
    taken on the source, so only the pixels kept are resampled."""
    w, h = im.size
    tw, th = size
    if w * th > h * tw:  # wider than the target: crop the sides
        cw, ch = h * tw / th, h
    else:
        cw, ch = w, w * th / tw
    box = ((w - cw) / 2, (h - ch) / 2, (w + cw) / 2, (h + ch) / 2)
    return im.resize(size, method, box=box, reducing_gap=3.0)  # reduce() by whole factors, then the filter


def decode_file(path: Path, size: tuple[int, int] | None = None, resolution: int | None = None
                ) -> tuple[np.ndarray | None, str]:
    """(array, note): the (H, W, C) uint8 image (C in 1, 3), its EXIF orientation honoured,
    scaled and centre-cropped to ``size`` (w, h) or, with ``resolution`` N, scaled so its short
    side is N and centre-cropped to N x N (Lanczos after a whole-factor reduce: antialiased).
    ``note``: "" or "upscaled" (shorter than N); when the array is None, why (``failure``)."""
    from PIL import Image, ImageOps

    try:  # open_input: a FIFO or a device is never opened for reading (it would block, or never end)
        with open_input(path, "an image file") as f, Image.open(f) as im:
            if resolution is not None:
                size = (resolution, resolution)
                im.draft(None, size)  # JPEG: decode at the smallest whole scale still covering N x N
            im.load()  # first frame of animations
            im = _plain(ImageOps.exif_transpose(im))
            note = "upscaled" if resolution is not None and min(im.size) < resolution else ""
            if resolution is not None and im.size != size:
                im = _cover(im, size, Image.Resampling.LANCZOS)
            elif size is not None and im.size != size:  # as before --resolution: folders keep their fingerprints
                im = ImageOps.fit(im, size, method=Image.Resampling.BICUBIC)
            return _to_array(im), note
    except Exception as e:  # truncated data, decoder errors, decompression bombs
        return None, failure(e)


def decode_image(path: Path, size: tuple[int, int] | None = None) -> np.ndarray | None:
    """(H, W, C) uint8 with C in 1, 3, scaled and centre-cropped to ``size`` (w, h); None if unreadable."""
    return decode_file(path, size)[0]


def resize_images(images: torch.Tensor, resolution: int, chunk: int = 256) -> tuple[torch.Tensor, int]:
    """(N, C, H, W) uint8 -> ((N, C, R, R) uint8, how many were upscaled): the middle square of
    each image, scaled to ``resolution`` with an antialiased bicubic filter (arrays and named
    datasets; folders are scaled as they are decoded, by ``decode_file``)."""
    import torch.nn.functional as F

    n, c, h, w = images.shape
    upscaled = n if min(h, w) < resolution else 0
    if (h, w) == (resolution, resolution):
        return images, 0
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    out = torch.empty((n, c, resolution, resolution), dtype=torch.uint8)
    for i in range(0, n, chunk):
        part = images[i : i + chunk, :, top : top + s, left : left + s].float()
        part = F.interpolate(part, size=(resolution, resolution), mode="bicubic", antialias=True, align_corners=False)
        out[i : i + chunk] = part.round_().clamp_(0, 255).to(torch.uint8)
    return out, upscaled


def image_files(args: Sequence[str | Path]) -> tuple[list[Path], set[Path]]:
    """(files in order, the subset found inside folders). A folder stands for the regular files
    inside it (recursively, sorted, hidden ones skipped); ``read_images`` skips those that are not
    images, while a path named on its own must be an image file: anything else (no such file, a
    FIFO, a device, a link loop) is a one-line error before anything opens it."""
    out: list[Path] = []
    found_in_folders: set[Path] = set()
    for a in args:
        p = Path(a).expanduser()
        if stat.S_ISDIR(check_input(p, "an image file or a folder of them", folder=True, error=ConfigError).st_mode):
            found = sorted(f for f in p.rglob("*")
                           if f.is_file() and not any(x.startswith(".") for x in f.relative_to(p).parts))
            if not found:
                raise ConfigError(f"{a}: the folder holds no files")
            out += found
            found_in_folders.update(found)
        else:
            out.append(p)
    return out, found_in_folders


def read_images(paths: Sequence[Path], image_shape: Sequence[int], optional: set[Path] | frozenset = frozenset()
                ) -> tuple[torch.Tensor, list[str]]:
    """Image files -> ((N, C, H, W) uint8 of ``image_shape``, notes on what was changed).

    Other sizes are scaled to cover the run's size and centre-cropped (aspect ratio kept), as
    image-folder datasets are; grey images become RGB for colour runs (all three channels
    equal) and colour images become grey for grey runs (ITU-R 601 luma, as Pillow's "L");
    transparency is composited on black. A file that is not a readable image is an error,
    unless it is in ``optional`` (then it is skipped).
    """
    c, h, w = (int(v) for v in image_shape)
    arrays, notes = [], []
    for path in paths:
        native = decode_image(path)
        if native is None:
            if path in optional:
                continue
            raise ConfigError(f"{path} is not an image that can be read (PNG, JPEG, GIF, BMP, TIFF, WebP...)")
        a = native if native.shape[:2] == (h, w) else decode_image(path, size=(w, h))
        changes = []
        if native.shape[:2] != (h, w):
            changes.append(f"{native.shape[1]}x{native.shape[0]} -> {w}x{h}")
        if a.shape[2] != c:
            if c == 3:
                a = np.repeat(a, 3, axis=2)
                changes.append("grey -> RGB")
            elif c == 1:
                luma = a.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
                a = np.clip(np.round(luma), 0, 255).astype(np.uint8)[..., None]
                changes.append("RGB -> grey")
            else:
                raise ConfigError(f"{path}: cannot turn a {a.shape[2]}-channel image into {c} channels")
        if changes:
            notes.append(f"{path.name}: {', '.join(changes)}")
        arrays.append(np.ascontiguousarray(a.transpose(2, 0, 1)))
    if not arrays:
        raise ConfigError("no readable images among " + ", ".join(str(p) for p in paths[:3]) + (" ..." if len(paths) > 3 else ""))
    return torch.from_numpy(np.stack(arrays)), notes


# -- frames out ----------------------------------------------------------------------------------

FRAME_FORMATS = ("png", "gif")  # what ``render`` writes
MAX_FPS = 50  # GIF delays are whole hundredths of a second, and browsers slow delays under 20 ms


def check_fps(fps: float) -> None:
    if not 0 < fps <= MAX_FPS:  # NaN fails too
        raise OptionError("fps", f"must be in (0, {MAX_FPS}] (GIF frames last at least 20 ms), got {fps}")


def render(frames: torch.Tensor, fmt: str, fps: float = 10.0, text: dict[str, str] | None = None) -> bytes:
    """(rows, steps, C, H, W) images in [0, 1] -> bytes.

    png: one grid, a row per path (or traversed dimension), a column per step.
    gif: ``steps`` frames; frame i shows image i of every row (in a square grid when there are
    several rows).
    """
    if frames.ndim != 5:
        raise ValueError("frames must be (rows, steps, C, H, W)")
    rows, steps = frames.shape[:2]
    images = to_uint8(frames.flatten(0, 1))
    if fmt == "png":
        return png_bytes(make_grid(images, nrow=steps), text)
    check_fps(fps)
    per_step = images.view(rows, steps, *images.shape[1:])
    if rows == 1:
        return gif_exact([per_step[0, i] for i in range(steps)], fps=fps)
    return gif_exact([make_grid(per_step[:, i]) for i in range(steps)], fps=fps)


def gif_exact(frames: Sequence[torch.Tensor], fps: float = 10.0, loop: int = 0) -> bytes:
    """Frames of (C, H, W) uint8 -> an animated GIF with exactly one GIF frame per frame.

    Pillow's animated-GIF writer folds a frame that repeats the
    previous one into it, so a traversal of an unused latent dimension or a path between equal
    latents would lose frames. Here the frames share one palette, computed over all of them
    (exact when they hold at most 256 colours, and no palette flicker between frames), and are
    written one by one with Pillow's GIF header and frame encoders.
    """
    from PIL import GifImagePlugin, Image

    def pil(f: torch.Tensor):
        a = f.permute(1, 2, 0).numpy()
        return Image.fromarray(np.ascontiguousarray(np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a), "RGB")

    images = [pil(f) for f in frames]
    w, h = images[0].size
    strip = Image.new("RGB", (w, h * len(images)))
    for i, im in enumerate(images):
        strip.paste(im, (0, i * h))
    palette = strip.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    indexed = [im.quantize(palette=palette, dither=Image.Dither.NONE) for im in images]
    ms = int(round(1000 / fps))
    header, _ = GifImagePlugin.getheader(indexed[0], info={"loop": loop, "duration": ms})
    parts = [b"".join(header)]
    for im in indexed:
        parts += GifImagePlugin.getdata(im, duration=ms)
    parts.append(b";")  # trailer
    return b"".join(parts)
