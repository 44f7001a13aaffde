"""Advisory file locks held for the life of a process: one writer per run, one creator at a time.

An OS lock (``flock`` on POSIX, ``msvcrt.locking`` on Windows) is released by the kernel when its
process dies, even by SIGKILL, so a lock can never go stale; the holder's pid and host are
written into the lock file only to name the holder in error messages. Locks are taken on open
file descriptions, so opening the same file again (to read the holder) never drops a lock.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

if os.name == "nt":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _try_lock(fd: int) -> bool:
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False

    def _unlock(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)


class FileLock:
    """An exclusive lock on ``path`` (created if missing). ``acquire`` never blocks longer than
    ``wait`` seconds; ``release`` (or the process ending) frees it."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, wait: float = 0.0, poll: float = 0.05) -> bool:
        """True once held; False if another process still holds it after ``wait`` seconds."""
        if self._fd is not None:
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + wait
        while not _try_lock(fd):
            if time.monotonic() >= deadline:
                os.close(fd)
                return False
            time.sleep(poll)
        self._fd = fd
        return True

    def write_holder(self, **extra: Any) -> None:
        """Say who holds the lock (pid, host, since), for messages naming the holder."""
        assert self._fd is not None, "write_holder needs the lock held"
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(), **extra}
        data = json.dumps(info).encode()
        os.ftruncate(self._fd, 0)
        os.lseek(self._fd, 0, os.SEEK_SET)
        os.write(self._fd, data)

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            _unlock(fd)
        finally:
            os.close(fd)

    def is_free(self, confirm: float = 0.0, poll: float = 0.05) -> bool:
        """Whether nobody holds the lock right now (probes by taking and dropping it). With
        ``confirm``: False only if it is still held after that many seconds, so that another
        reader probing it at the same instant (for microseconds) is not taken for a writer."""
        if self._fd is not None:
            return False
        try:  # read-only: probing must not create files in someone's run folder
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return True
        except PermissionError:
            return True  # cannot open it at all: nobody could have locked it through us either
        deadline = time.monotonic() + confirm
        try:
            while not _try_lock(fd):
                if time.monotonic() >= deadline:
                    return False
                time.sleep(poll)
            _unlock(fd)
            return True
        finally:
            os.close(fd)

    def holder(self) -> dict[str, Any]:
        """The pid and host last written by a holder ({} if unknown)."""
        try:
            info = json.loads(self.path.read_bytes() or b"{}")
        except (OSError, ValueError):
            return {}
        return info if isinstance(info, dict) else {}

    def __enter__(self) -> "FileLock":
        self.acquire(wait=float("inf"))
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def describe_holder(info: dict[str, Any]) -> str:
    """'pid 123 on host-a' (or 'another process' when the holder did not say)."""
    pid, host = info.get("pid"), info.get("host")
    if isinstance(pid, int) and isinstance(host, str):
        return f"pid {pid} on {host}"
    return "another process"
