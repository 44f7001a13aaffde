"""Feature statistics (float64 mean and covariance), statistics files, and the feature cache.

A statistics file is an ``.npz`` with ``mu`` and ``sigma`` (pytorch-fid reads and writes the same
two keys), plus, when aigc wrote it, ``n`` and a JSON ``meta`` string (weights sha256,
preprocessing, source). Files are read with ``allow_pickle=False``.

The cache (``<cache>/fid-stats/<key>.npz``) keeps, for a dataset or image folder, the features,
the logits and their statistics, keyed by the data's fingerprint, the image count, the weights'
sha256 and the preprocessing, so a second evaluation against the same reference skips it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from aigc_cli.core.errors import AigcError
from aigc_cli.core.io import atomic_write, open_input, write_output

CACHE_FORMAT = "aigc-fid-cache/1"


@dataclass
class Stats:
    mu: np.ndarray  # (d,) float64
    sigma: np.ndarray  # (d, d) float64
    n: int | None  # images behind the statistics (None: unknown, e.g. a pytorch-fid file)
    meta: dict[str, Any] = field(default_factory=dict)


def compute_stats(features: np.ndarray) -> Stats:
    """Mean and unbiased covariance in float64 (as ``np.cov(rowvar=False)``)."""
    x = np.asarray(features, dtype=np.float64)
    n = x.shape[0]
    if n < 2:
        raise AigcError(f"statistics need at least 2 images, got {n}")
    mu = x.mean(axis=0)
    xc = x - mu
    sigma = xc.T @ xc / (n - 1)
    sigma = (sigma + sigma.T) / 2
    return Stats(mu, sigma, n)


def _write_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    # np.savez to a file object: given a name, it would add ".npz" to it
    atomic_write(path, lambda f: np.savez(f, **arrays), parents=True)


def save_stats(path: str | os.PathLike, stats: Stats) -> Path:
    """Write ``stats`` to a user's path (core.io.write_output: atomically, or into a device or FIFO)."""
    arrays = {"mu": stats.mu, "sigma": stats.sigma, "meta": np.array(json.dumps(stats.meta, sort_keys=True))}
    if stats.n is not None:
        arrays["n"] = np.array(stats.n, dtype=np.int64)
    buffer = io.BytesIO()  # np.savez seeks in what it writes: a FIFO cannot
    np.savez(buffer, **arrays)
    write_output(path, buffer.getvalue())
    return Path(path)


def is_stats_file(path: str | os.PathLike) -> bool:
    """An ``.npz`` whose arrays include ``mu`` and ``sigma``."""
    path = Path(path)
    if not path.is_file() or path.suffix.lower() != ".npz":
        return False
    try:
        with zipfile.ZipFile(path) as z:
            names = {n[:-4] if n.endswith(".npy") else n for n in z.namelist()}
    except (zipfile.BadZipFile, OSError):
        return False
    return {"mu", "sigma"} <= names


def load_stats(path: str | os.PathLike) -> Stats:
    path = Path(path)
    try:
        with open_input(path, "a statistics .npz file", error=AigcError) as file, \
                np.load(file, allow_pickle=False) as f:
            mu = np.asarray(f["mu"], dtype=np.float64)
            sigma = np.asarray(f["sigma"], dtype=np.float64)
            n = int(f["n"]) if "n" in f.files else None
            meta = json.loads(str(f["meta"])) if "meta" in f.files else {}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
        raise AigcError(f"cannot read statistics file {path}: {e}") from None
    if mu.ndim != 1 or sigma.shape != (mu.size, mu.size):
        raise AigcError(f"statistics file {path}: mu {mu.shape} and sigma {sigma.shape} do not fit")
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise AigcError(f"statistics file {path} holds NaN or infinite values")
    return Stats(mu, sigma, n, meta if isinstance(meta, dict) else {})


# ----------------------------------------------------------------------------------------------
# The cache


def cache_folder() -> Path:
    from aigc_cli.core.paths import cache_dir

    return cache_dir() / "fid-stats"


def cache_key(fingerprint: str, n: int, weights_sha256: str, preprocessing: str) -> str:
    text = f"{CACHE_FORMAT}|{fingerprint}|{n}|{weights_sha256}|{preprocessing}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def cache_path(key: str) -> Path:
    return cache_folder() / f"{key}.npz"


def cache_load(key: str, what: str = "stats"):
    """``what='stats'`` -> Stats, ``'features'`` -> FeatureSet; None when absent or unreadable."""
    from aigc_cli.metrics.features import FeatureSet

    path = cache_path(key)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            meta = json.loads(str(f["meta"]))
            if what == "stats":
                return Stats(np.asarray(f["mu"]), np.asarray(f["sigma"]), int(f["n"]), meta)
            return FeatureSet(np.asarray(f["features"]), np.asarray(f["logits"]))
    except Exception:  # a damaged cache entry is recomputed, never fatal
        return None


def cache_store(key: str, features, stats: Stats, meta: dict[str, Any]) -> Path | None:
    meta = {**meta, "format": CACHE_FORMAT, "n": stats.n}
    try:
        _write_npz(
            cache_path(key),
            {
                "mu": stats.mu,
                "sigma": stats.sigma,
                "n": np.array(stats.n, dtype=np.int64),
                "features": features.features,
                "logits": features.logits,
                "meta": np.array(json.dumps(meta, sort_keys=True)),
            },
        )
    except OSError:
        return None  # a full or read-only cache only costs a recomputation next time
    return cache_path(key)
