"""Latent-space paths and real images in: the core behind ``aigc interpolate`` and ``aigc reconstruct``.

- ``lerp``/``slerp`` and ``latent_path``: N frames along a path through two or more latents;
- ``traversal``: vary one latent dimension at a time around a base latent (beta-VAE pictures);
- ``parse_dims``: "all", "3", "0,2,5" or "0-7" -> dimension indices;
- ``read_images``: image files -> a uint8 batch of a run's (C, H, W), resized and converted;
- ``render``: frames -> PNG strip/grid or animated GIF bytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from aigc_cli.core.errors import ConfigError
from aigc_cli.core.images import make_grid, png_bytes, to_uint8

MODES = ("slerp", "lerp")
FORMATS = ("png", "gif")


def lerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """(D,), (D,), (N,) -> (N, D): straight-line interpolation."""
    t = t.to(a.dtype)[:, None]
    return a[None] * (1 - t) + b[None] * t


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """(D,), (D,), (N,) -> (N, D): spherical interpolation (Shoemake, 1985; White, 2016).

    Gaussian latents concentrate near a sphere of radius sqrt(D); the straight line between two
    of them passes close to the origin, where the prior has few samples, while slerp follows the
    great circle (with the norm changing smoothly between the two). Falls back to lerp for
    (nearly) parallel or zero vectors.
    """
    a64, b64, t64 = a.double(), b.double(), t.double()[:, None]
    na, nb = a64.norm(), b64.norm()
    if na < 1e-12 or nb < 1e-12:
        return lerp(a, b, t)
    cos = torch.clamp((a64 / na) @ (b64 / nb), -1.0, 1.0)
    omega = torch.arccos(cos)
    so = torch.sin(omega)
    if so < 1e-6:
        return lerp(a, b, t)
    out = (torch.sin((1 - t64) * omega) / so) * a64[None] + (torch.sin(t64 * omega) / so) * b64[None]
    return out.to(a.dtype)


def check_steps(steps: int) -> None:
    if steps < 2:
        raise ConfigError(f"--steps must be at least 2 (the two endpoints), got {steps}")


def latent_path(points: torch.Tensor, steps: int, mode: str = "slerp") -> torch.Tensor:
    """(K >= 2, D) latents -> (steps, D) frames through all of them, evenly spaced per segment.

    The first and last frames are exactly the first and last points; a frame that falls on an
    inner point is exactly that point.
    """
    check_steps(steps)
    if mode not in MODES:
        raise ConfigError(f"unknown --mode {mode!r}; choose one of: {', '.join(MODES)}")
    if points.ndim != 2 or len(points) < 2:
        raise ConfigError(f"an interpolation needs at least 2 latents, got {len(points) if points.ndim == 2 else 0}")
    fn = slerp if mode == "slerp" else lerp
    k = len(points)
    s = torch.linspace(0, k - 1, steps, dtype=torch.float64)
    seg = torch.clamp(s.floor().long(), max=k - 2)
    t = s - seg
    out = torch.empty(steps, points.shape[1], dtype=points.dtype)
    for i in range(k - 1):
        sel = seg == i
        if sel.any():
            out[sel] = fn(points[i], points[i + 1], t[sel])
    for j in range(steps):  # frames on a point are that point, bit for bit
        if float(s[j]) == round(float(s[j])):
            out[j] = points[int(round(float(s[j])))]
    return out


def parse_dims(spec: str, latent_dim: int) -> list[int]:
    """"all", "3", "0,2,5", "0-7" (inclusive) -> sorted unique dimension indices."""
    text = spec.strip().lower()
    if text == "all":
        return list(range(latent_dim))
    dims: set[int] = set()
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part[1:]:
                lo, hi = part.split("-", 1)
                dims.update(range(int(lo), int(hi) + 1))
            else:
                dims.add(int(part))
    except ValueError:
        raise ConfigError(f"--traverse takes 'all', a dimension (3), a list (0,2,5) or a range (0-7); got {spec!r}") from None
    bad = sorted(d for d in dims if not 0 <= d < latent_dim)
    if bad or not dims:
        raise ConfigError(f"--traverse dimensions must lie in 0..{latent_dim - 1}; got {spec!r}")
    return sorted(dims)


def traversal(base: torch.Tensor, dims: Sequence[int], steps: int, span: float) -> torch.Tensor:
    """(D,) base latent -> (len(dims), steps, D): row r sets dimension dims[r] to each of
    ``steps`` values evenly spaced in [-span, span]; the other dimensions keep the base values."""
    check_steps(steps)
    if not span > 0:
        raise ConfigError(f"--range must be positive, got {span}")
    values = torch.linspace(-span, span, steps, dtype=base.dtype)
    out = base[None, None].repeat(len(dims), steps, 1)
    for r, d in enumerate(dims):
        out[r, :, d] = values
    return out


# -- images in ------------------------------------------------------------------------------------

def image_files(args: Sequence[str | Path]) -> tuple[list[Path], set[Path]]:
    """(files in order, the subset found inside folders). A folder stands for the files inside
    it (recursively, sorted, hidden ones skipped); ``read_images`` skips those that are not
    images, while a file named on its own must be one."""
    out: list[Path] = []
    found_in_folders: set[Path] = set()
    for a in args:
        p = Path(a).expanduser()
        if p.is_dir():
            found = sorted(f for f in p.rglob("*")
                           if f.is_file() and not any(x.startswith(".") for x in f.relative_to(p).parts))
            if not found:
                raise ConfigError(f"{a}: the folder holds no files")
            out += found
            found_in_folders.update(found)
        elif p.exists():
            out.append(p)
        else:
            raise ConfigError(f"no such file: {a}")
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
    from aigc_cli.data.folder import decode_image

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


# -- frames out -----------------------------------------------------------------------------------

def output_format(output: str, fmt: str | None) -> str:
    """png or gif, from --format or the -o suffix; '-' (stdout) is PNG unless --format gif."""
    if fmt is not None:
        fmt = fmt.lower()
        if fmt not in FORMATS:
            raise ConfigError(f"unknown --format {fmt!r}; choose png or gif")
    suffix = Path(output).suffix.lower().lstrip(".") if output != "-" else ""
    if output != "-" and suffix not in FORMATS:
        raise ConfigError(f"-o {output}: write a .png (one strip or grid) or a .gif (an animation), or - for stdout")
    if fmt is not None and suffix and fmt != suffix:
        raise ConfigError(f"--format {fmt} does not match -o {output}")
    return fmt or suffix or "png"


MAX_FPS = 50  # GIF delays are whole hundredths of a second, and browsers slow delays under 20 ms


def check_fps(fps: float) -> None:
    if not 0 < fps <= MAX_FPS:  # NaN fails too
        raise ConfigError(f"--fps must be in (0, {MAX_FPS}] (GIF frames last at least 20 ms), got {fps}")


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

    Pillow's animated-GIF writer (behind core.images.gif_bytes) folds a frame that repeats the
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
