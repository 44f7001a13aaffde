"""Download dataset files once into the cache, checksummed, with mirrors and a by-hand fallback.

A file is written to a temp file beside its final name and renamed only after its checksum
passes, so the cache never holds a partial or wrong file. A download is stopped once it passes
``MAX_BYTES`` (announced or sent), before any checksum: a hostile mirror cannot fill the disk.
Files already there with the right checksum are used without touching the network.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.request
from pathlib import Path
from typing import Callable

from aigc_cli.core.errors import DatasetError
from aigc_cli.core.io import TooLarge, atomic_path, copy_capped

# progress(description, done, total): bytes so far and the size when the server says it.
Progress = Callable[[str, int, "int | None"], None]
MIRROR_ENV = "AIGC_DATASET_MIRROR"  # one base URL serving <name>/<file>, replacing the mirror list
TIMEOUT_S = 30
CHUNK = 1 << 20
MAX_BYTES = 512 << 20  # the largest file (CIFAR-10's binary tarball) is about 170 MB


def datasets_dir() -> Path:
    from aigc_cli.core.paths import cache_dir

    return cache_dir() / "datasets"


def md5sum(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def mirrors_for(name: str, mirrors: list[str]) -> list[str]:
    """Base URLs to try in order; ``$AIGC_DATASET_MIRROR/<name>/`` alone when the variable is set."""
    env = os.environ.get(MIRROR_ENV)
    if env:
        return [env.rstrip("/") + f"/{name}/"]
    return mirrors


def _download(url: str, dest: Path, md5: str, progress: Progress | None) -> None:
    with atomic_path(dest, parents=True) as tmp:  # the temp file is removed if anything below raises
        h = hashlib.md5()
        said = None if progress is None else (lambda done, total: progress(f"downloading {dest.name}", done, total))
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as r, open(tmp, "wb") as f:
            try:
                copy_capped(r, f, h, MAX_BYTES, said, CHUNK)
            except TooLarge as e:
                raise DatasetError(f"{url} {e.what} than the {MAX_BYTES:,}-byte limit") from None
        if h.hexdigest() != md5:
            raise DatasetError(f"checksum mismatch: md5 {h.hexdigest()}, expected {md5}")


def fetch(name: str, files: dict[str, str], mirrors: list[str], progress: Progress | None = None) -> Path:
    """Make sure every ``filename -> md5`` in ``files`` is in ``datasets_dir()/name``; return that folder."""
    folder = datasets_dir() / name
    for filename, md5 in files.items():
        dest = folder / filename
        if dest.is_file() and md5sum(dest) == md5:
            continue
        note = " (the file there has a wrong checksum)" if dest.exists() else ""
        tried, reason = [], ""
        for base in mirrors_for(name, mirrors):
            url = base + filename
            tried.append(url)
            try:
                _download(url, dest, md5, progress)
                break
            except (OSError, http.client.HTTPException, DatasetError) as e:  # next mirror
                reason = str(getattr(e, "reason", None) or e) or type(e).__name__
        else:
            raise DatasetError(
                f"could not download {name}: {', '.join(tried)} failed ({reason}); "
                f"to work offline, download it by hand and put {filename} in {folder}{note}"
            )
    return folder


def missing(name: str, files: dict[str, str]) -> list[str]:
    """Files not yet in the cache (by name only: cheap enough for ``aigc datasets list``)."""
    folder = datasets_dir() / name
    return [f for f in files if not (folder / f).is_file()]
