"""Batched Inception feature extraction with pytorch-fid's preprocessing.

Preprocessing (pytorch-fid = the TensorFlow FID code): images as RGB uint8 (grayscale repeated to
three channels, alpha dropped), scaled to [0, 1] by ``x / 255``, resized to 299x299 bilinear with
``align_corners=False``, scaled to [-1, 1] by ``2x - 1``.

Where the speed comes from: the whole batch is resized in one call; the network is the fused
inference form (BatchNorm folded, 1x1 convolutions merged) in channels-last memory under
``torch.inference_mode``; image files are decoded by a thread pool one batch ahead of the network,
straight into an NHWC array (which *is* channels-last, so no copy). On a GPU the batch is sized
from free memory, TF32 is off (full float32, as on the CPU), and on out-of-memory the batch is
halved and the work goes on.
"""

from __future__ import annotations

import contextlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from aigc_cli.core.errors import AigcError, DatasetError
from aigc_cli.core.io import open_input
from aigc_cli.metrics.inception import FEATURE_DIM, INPUT_SIZE, NUM_CLASSES

PREPROCESSING = (
    "pytorch-fid: RGB uint8 (grayscale repeated) -> x/255 -> bilinear 299x299 (align_corners=False) -> 2x-1"
)
IMAGE_EXTENSIONS = {".bmp", ".jpg", ".jpeg", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp"}
CPU_BATCH = 64
_GPU_BYTES_PER_IMAGE = 48 << 20  # estimated: ~15 MiB of live float32 activations per image, x3 headroom

Advance = Callable[[int], None]


@dataclass
class FeatureSet:
    features: np.ndarray  # (N, 2048) float32 pool features
    logits: np.ndarray  # (N, 1008) float32 logits without the fc bias (torch-fidelity's logits_unbiased)

    def __len__(self) -> int:
        return int(self.features.shape[0])


def to_rgb(images: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) uint8 with C in 1..4 -> 3 channels, as PIL's ``convert('RGB')`` does."""
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise DatasetError(f"images must be (N, C, H, W) uint8, got {tuple(images.shape)} {images.dtype}")
    c = images.shape[1]
    if c in (1, 2):  # L, LA: grey repeated, alpha dropped
        return images[:, :1].expand(-1, 3, -1, -1)
    if c == 3:
        return images
    if c == 4:  # RGBA: alpha dropped
        return images[:, :3]
    raise DatasetError(f"images with {c} channels cannot be read as RGB")


def preprocess(images: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) uint8 on the target device -> (B, 3, 299, 299) float32 in [-1, 1], channels-last."""
    x = images
    grey = x.shape[1] in (1, 2)
    x = x[:, :1] if grey else to_rgb(x)
    x = x.float().div_(255)  # exactly torchvision's ToTensor
    x = x.contiguous(memory_format=torch.channels_last)
    x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
    x = x.mul_(2).sub_(1)
    if grey:  # resizing one channel then repeating it equals resizing three equal channels
        x = x.expand(-1, 3, -1, -1).contiguous(memory_format=torch.channels_last)
    return x


@contextlib.contextmanager
def _full_float32(device: torch.device):
    """No TF32 on CUDA while extracting: features as exact as on the CPU."""
    if device.type != "cuda":
        yield
        return
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


class Extractor:
    """The FID Inception on a device, turning uint8 image batches into pool features and logits."""

    def __init__(self, weights_path: str | os.PathLike, device: torch.device | str = "cpu", batch_size: int | None = None):
        from aigc_cli.metrics.weights import load_model

        self.device = torch.device(device)
        model, info = load_model(weights_path)
        self.weights = info
        self.net = model.fused().to(self.device).to(memory_format=torch.channels_last)
        self.batch_size = batch_size or default_batch_size(self.device)
        self.on_batch_halved: Callable[[int], None] | None = None

    @property
    def sha256(self) -> str:
        return self.weights.sha256

    def _forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = preprocess(images.to(self.device, non_blocking=True))
        feats = self.net(x)
        logits = self.net.logits_unbiased(feats)
        return feats.float().cpu(), logits.float().cpu()

    def extract(self, batches: Iterable[torch.Tensor], total: int | None = None, advance: Advance | None = None) -> FeatureSet:
        """Features of every image in ``batches`` (uint8 (B, C, H, W) tensors of any sizes B)."""
        feats: list[torch.Tensor] = []
        logits: list[torch.Tensor] = []
        with torch.inference_mode(), _full_float32(self.device):
            for batch in batches:
                start = 0
                while start < len(batch):
                    size = self.batch_size
                    chunk = batch[start : start + size]
                    try:
                        f, lg = self._forward(chunk)
                    except torch.cuda.OutOfMemoryError:
                        if size <= 1:
                            raise AigcError("out of GPU memory with a batch of one image; use --device cpu") from None
                        self.batch_size = max(1, size // 2)
                        if self.device.type == "cuda":
                            torch.cuda.empty_cache()
                        if self.on_batch_halved:
                            self.on_batch_halved(self.batch_size)
                        continue
                    feats.append(f)
                    logits.append(lg)
                    start += len(chunk)
                    if advance:
                        advance(len(chunk))
        if not feats:
            return FeatureSet(np.zeros((0, FEATURE_DIM), np.float32), np.zeros((0, NUM_CLASSES), np.float32))
        return FeatureSet(torch.cat(feats).numpy(), torch.cat(logits).numpy())

    def extract_tensor(self, images: torch.Tensor, advance: Advance | None = None) -> FeatureSet:
        """Features of (N, C, H, W) uint8 images, in network batches from the first image on.
        Under a process group of several ranks this is collective: each rank extracts its own
        whole batches, and every rank gets every feature (the same as one process gets)."""
        from aigc_cli.core import distributed

        if not distributed.active():
            return self.extract(tensor_batches(images, self.batch_size), len(images), advance)
        lo, hi = distributed.shard(len(images), self.batch_size)
        mine = self.extract(tensor_batches(images[lo:hi], self.batch_size), hi - lo, advance)
        return gather_features(mine)


def gather_features(mine: FeatureSet) -> FeatureSet:
    """Every rank's features, in rank order, on every rank (core/distributed.py)."""
    from aigc_cli.core import distributed

    return FeatureSet(distributed.gather_rows(torch.from_numpy(mine.features)).numpy(),
                      distributed.gather_rows(torch.from_numpy(mine.logits)).numpy())


def default_batch_size(device: torch.device) -> int:
    if device.type == "cuda":
        try:
            free, _ = torch.cuda.mem_get_info(device)
        except Exception:  # pragma: no cover - depends on the driver
            return 128
        return int(max(16, min(1024, (free * 0.6) // _GPU_BYTES_PER_IMAGE)))
    return CPU_BATCH


def tensor_batches(images: torch.Tensor, size: int) -> Iterator[torch.Tensor]:
    for start in range(0, len(images), size):
        yield images[start : start + size]


# ----------------------------------------------------------------------------------------------
# Image folders


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files under ``folder`` (recursive, sorted, hidden files skipped)."""
    root = Path(folder)
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
                files.append(Path(dirpath) / name)
    return sorted(files)


def _decode(path: Path) -> np.ndarray | None:
    from PIL import Image

    try:  # open_input: a FIFO named x.png is never opened (it would block); it counts as unreadable
        with open_input(path, "an image file") as f, Image.open(f) as im:
            return np.asarray(im.convert("RGB"))  # exactly pytorch-fid's decoding
    except Exception:  # unreadable or not an image
        return None


class FolderReader:
    """Decodes image files in a thread pool, one batch ahead, into uint8 NHWC batches.

    Images of one size go into one batch; a batch never mixes sizes. ``skipped`` counts files that
    could not be decoded.
    """

    def __init__(self, files: Sequence[Path], batch_size: int = 256, workers: int | None = None):
        self.files = list(files)
        self.batch_size = batch_size
        self.workers = workers or min(8, (os.cpu_count() or 2) + 2)
        self.skipped = 0
        self.skipped_files: list[Path] = []

    def _decode_chunk(self, pool: ThreadPoolExecutor, chunk: Sequence[Path]) -> list[torch.Tensor]:
        arrays = list(pool.map(_decode, chunk))
        groups: dict[tuple[int, ...], list[np.ndarray]] = {}
        for path, arr in zip(chunk, arrays):
            if arr is None:
                self.skipped += 1
                self.skipped_files.append(path)
                continue
            groups.setdefault(arr.shape, []).append(arr)
        # (B, H, W, 3) permuted to (B, 3, H, W): a channels-last view, no copy.
        return [torch.from_numpy(np.stack(g)).permute(0, 3, 1, 2) for g in groups.values()]

    def __iter__(self) -> Iterator[torch.Tensor]:
        chunks = [self.files[i : i + self.batch_size] for i in range(0, len(self.files), self.batch_size)]
        if not chunks:
            return
        with ThreadPoolExecutor(self.workers) as pool, ThreadPoolExecutor(1) as ahead:
            pending = ahead.submit(self._decode_chunk, pool, chunks[0])
            for nxt in chunks[1:] + [None]:
                ready = pending.result()
                if nxt is not None:
                    pending = ahead.submit(self._decode_chunk, pool, nxt)
                yield from ready
