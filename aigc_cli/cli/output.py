"""Where results go: a file, a folder of files, or stdout (``-o -``). Files go through the one
output function (core/io.py ``check_output``/``write_output``): written atomically, or streamed
into a device, FIFO or socket (``-o /dev/null``), never replacing what is there."""

from __future__ import annotations

import sys
from pathlib import Path

from aigc_cli.core.errors import AigcError
from aigc_cli.core.io import Output, check_output, write_output


def is_stdout(target: str) -> bool:
    return target == "-"


def is_dir_target(target: str) -> bool:
    return target.endswith(("/", "\\")) or Path(target).expanduser().is_dir()


def check_target(target: str, example: str = "out.png") -> Output | None:
    """Before any work: where ``target`` will be written (None: stdout), or a one-line error
    (a folder, a block device, a link loop, a folder that cannot be written)."""
    return None if is_stdout(target) else check_output(target, example)


def write_bytes(target: str, data: bytes, binary: bool = True) -> str:
    """Write ``data`` to ``target`` (or stdout for '-'); return where it went. Under torchrun
    rank 0 alone writes. ``binary``: image bytes, which a terminal is spared."""
    from aigc_cli.core import distributed

    if not distributed.is_main():
        return target

    if is_stdout(target):
        if binary and sys.stdout.isatty():
            raise AigcError("refusing to write image bytes to a terminal; redirect stdout or give -o FILE")
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return "-"
    return write_output(target, data).given
