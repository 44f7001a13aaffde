"""Atomic file writes: temp file in the same folder, fsync, os.replace.

A reader sees either the old file or the new one, never half of one. A write never creates the
folder it writes into unless asked (``parents=True``): a run folder removed under a writer must
stay removed, so that writer fails instead of bringing it back.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from pathlib import Path
from typing import Any, Iterator

from aigc_cli.core.faults import fault_point

TMP_SUFFIX = ".tmp"


def temp_name(path: Path) -> Path:
    """The temporary file beside ``path``: ``.<name>.<random>.tmp`` (the store cleans stale ones)."""
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}{TMP_SUFFIX}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, parents: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success fsync it and move it into place."""
    path = Path(path)
    if parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    # 0o666 filtered by the umask, as for any new file: no os.umask() dance (racy with threads).
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    mode = tmp.stat().st_mode & 0o777
    point = f"write:{path.name}"
    try:
        fault_point(f"{point}:open")
        yield tmp
        fault_point(f"{point}:written")
        if tmp.stat().st_mode & 0o777 != mode:
            os.chmod(tmp, mode)  # a writer that replaced the file (0600 temp files) gets our mode back
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        fault_point(f"{point}:synced")
        os.replace(tmp, path)
        fault_point(f"{point}:replaced")
        _fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable; not possible on every platform (Windows).
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, parents: bool = False) -> None:
    with atomic_path(path, parents) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str, parents: bool = False) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), parents)


def atomic_write_json(path: str | os.PathLike, obj: Any, parents: bool = False) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n", parents)



class TooLarge(Exception):
    """A download passed its size cap; ``what`` says how ("announces 9,000 bytes, more" or "sent
    more"), for messages of the form "<url> <what> than the N-byte limit"."""

    def __init__(self, what: str):
        super().__init__(what)
        self.what = what


def copy_capped(response, out, hasher, max_bytes: int, progress=None, chunk: int = 1 << 20) -> int:
    """Copy an HTTP ``response`` into the file ``out`` and ``hasher``; return the bytes copied.

    More than ``max_bytes`` raises TooLarge before it is hashed: at once when the Content-Length
    announces it, else on the first byte past the cap (never reading further). ``progress(done,
    total)`` hears of each chunk (total: the announced length, or None)."""
    length = response.headers.get("Content-Length") or ""
    total = int(length) if length.isdigit() and int(length) else None
    if total is not None and total > max_bytes:
        raise TooLarge(f"announces {total:,} bytes, more")
    done = 0
    while data := response.read(min(chunk, max_bytes + 1 - done)):
        done += len(data)
        if done > max_bytes:  # the server lied or sent no length: stopped here, never hashed or kept
            raise TooLarge("sent more")
        out.write(data)
        hasher.update(data)
        if progress is not None:
            progress(done, total)
    return done
