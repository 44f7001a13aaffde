"""Where results go: a file, a folder of files, or stdout (``-o -``)."""

from __future__ import annotations

import sys
from pathlib import Path

from aigc_cli.core.errors import AigcError


def is_stdout(target: str) -> bool:
    return target == "-"


def is_dir_target(target: str) -> bool:
    return target.endswith(("/", "\\")) or Path(target).is_dir()


def write_bytes(target: str, data: bytes, binary: bool = True) -> str:
    """Write ``data`` atomically to ``target`` (or stdout for '-'); return where it went. Under
    torchrun rank 0 alone writes. ``binary``: image bytes, which a terminal is spared."""
    from aigc_cli.core import distributed
    from aigc_cli.core.io import atomic_write_bytes

    if not distributed.is_main():
        return target

    if is_stdout(target):
        if binary and sys.stdout.isatty():
            raise AigcError("refusing to write image bytes to a terminal; redirect stdout or give -o FILE")
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return "-"
    path = Path(target).expanduser()
    _check_parent(path)
    atomic_write_bytes(path, data)
    return str(path)


def _check_parent(path: Path) -> None:
    parent = path.parent if str(path.parent) else Path(".")
    if parent.exists() and not parent.is_dir():
        raise AigcError(f"cannot write {path}: {parent} is not a folder")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise AigcError(f"cannot create folder {parent}: {e.strerror}") from None
    import os

    if not os.access(parent, os.W_OK):
        raise AigcError(f"cannot write to {parent}: permission denied")
