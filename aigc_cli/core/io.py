"""File I/O in one place: atomic writes for the run store, and the one output function and the
one input function for every path a user gives a command.

Atomic writes: temp file in the same folder, fsync, os.replace. A reader sees either the old file
or the new one, never half of one. A write never creates the folder it writes into unless asked
(``parents=True``): a run folder removed under a writer must stay removed, so that writer fails
instead of bringing it back.

A user's paths (docs/reliability.md#paths-what-each-kind-gets), classified by ``os.stat`` before
anything opens them:

* outputs (``-o``, ``--save-latents``, ``--save-stats``, an export's target): ``check_output``
  says, before the work, where the bytes will go, and ``write_output`` puts them there. A regular
  file or a new name is written atomically; a symbolic link is followed and its target written
  atomically (the link stays); a character device, FIFO or socket is written to directly, as
  ``cp`` does (no temporary file, no rename: ``-o /dev/null`` works and the node stays); a
  folder, a block device or a link loop is a one-line ``PathError``.
* inputs (``--latents``, images, text files, dataset and statistics files): ``check_input``
  refuses, before any open, what is not a regular file (a FIFO would block the open, a device
  never ends), naming what it is ("a FIFO", "a symbolic link loop", "a folder"); ``open_input``
  opens it without blocking and checks again what it opened.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable, Iterator

from aigc_cli.core.errors import AigcError
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


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any], parents: bool = False) -> None:
    """``write(f)`` into a temporary file beside ``path``, then fsync and move it into place: a
    large file streamed in pieces appears whole or not at all."""
    with atomic_path(path, parents) as tmp:
        with open(tmp, "wb") as f:
            write(f)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, parents: bool = False) -> None:
    atomic_write(path, lambda f: f.write(data), parents)


def atomic_write_text(path: str | os.PathLike, text: str, parents: bool = False) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), parents)


def atomic_write_json(path: str | os.PathLike, obj: Any, parents: bool = False) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n", parents)


# -- a user's paths: what each kind is ----------------------------------------------------------

class PathError(AigcError):
    """A path given to a command that cannot be read or written as asked (one line)."""


_KINDS = ((stat.S_ISREG, "a regular file"), (stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))
MISSING = "missing"  # what ``probe`` calls a path with nothing at it


def kind_of(mode: int) -> str:
    """What a stat mode is: "a regular file", "a folder", "a FIFO", "a character device", ..."""
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def probe(path: str | os.PathLike) -> tuple[os.stat_result | None, str]:
    """(``os.stat`` of ``path``, links followed, or None; what is there): ``kind_of`` its mode, or
    why nothing is: MISSING, "a symbolic link loop", "a broken symbolic link (to T)", or an
    error's words. Never opens anything."""
    try:
        st = os.stat(path)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return None, "a symbolic link loop"
        if e.errno == errno.ENOENT and os.path.islink(path):
            with contextlib.suppress(OSError):
                return None, f"a broken symbolic link (to {os.readlink(path)})"
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            return None, MISSING
        return None, f"not reachable ({e.strerror})"
    return st, kind_of(st.st_mode)


# -- inputs --------------------------------------------------------------------------------------

def check_input(path: str | os.PathLike, what: str, folder: bool = False,
                error: type[AigcError] = PathError) -> os.stat_result:
    """The stat of ``path``, a regular file (or a folder, where ``folder``), found before anything
    opens it; otherwise a one-line ``error`` saying what is there and asking for ``what`` ("a .npy
    file of latents"): no such file, a folder, a FIFO, a device, a socket, a link loop..."""
    given = str(path)
    st, kind = probe(Path(given).expanduser())
    if st is not None and (stat.S_ISREG(st.st_mode) or folder and stat.S_ISDIR(st.st_mode)):
        return st
    if kind == MISSING:
        raise error(f"no such file{' or folder' if folder else ''}: {given}; pass {what}")
    if st is None or stat.S_ISDIR(st.st_mode):  # a link loop, a broken link; a folder
        raise error(f"{given} is {kind}; pass {what}")
    raise error(f"{given} is {kind}, not a regular file; pass {what}")


def open_input(path: str | os.PathLike, what: str, error: type[AigcError] = PathError) -> IO[bytes]:
    """``path`` open for reading (binary), after ``check_input``. Opened with O_NONBLOCK, so that
    a file swapped for a FIFO since the check cannot block the open, and what was opened is
    checked again; reads then block as usual (a regular file's never wait)."""
    check_input(path, what, error=error)
    nonblock = getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(Path(str(path)).expanduser(), os.O_RDONLY | nonblock | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise error(f"cannot read {path}: {e.strerror or e}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise error(f"{path} is {kind_of(mode)}, not a regular file; pass {what}")
        if nonblock:
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


# -- outputs -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Output:
    """Where an output goes (``check_output``): ``path`` is the file written atomically (a link's
    target, resolved), or the device, FIFO, socket or open descriptor written to directly
    (``stream``)."""

    given: str  # the path as given, ~ expanded: what messages name
    path: Path
    stream: bool = False
    socket: bool = False
    descriptor: bool = False  # /dev/stdout, /dev/fd/N: an open descriptor, whatever it is (a file too)

    @property
    def suffix(self) -> str:
        """The given name's suffix, lower case (".png"); a stream's name says nothing: ""."""
        return "" if self.stream else Path(self.given).suffix.lower()


def check_output(target: str | os.PathLike, example: str = "out") -> Output:
    """Where ``target`` will be written, checked before any work: a one-line PathError for a
    folder (``example``: the file name suggested inside it), a block device (a disk), a link
    loop, a folder that is not one or is not writable, a device or FIFO that is not writable."""
    given = str(Path(target).expanduser())
    st, kind = probe(given)
    if kind == "a folder" or str(target).endswith(("/", os.sep)):  # `-o new/`: never a file called "new"
        what = "it is a folder" if kind == "a folder" else "a name ending in / is a folder"
        raise PathError(f"cannot write {given}{os.sep if kind != 'a folder' else ''}: {what}; "
                        f"give a file name such as {Path(given) / example}")
    if st is not None and _descriptor(given):
        return Output(given, Path(given), stream=True, descriptor=True)  # `-o /dev/stdout > f.png`: into f.png
    if st is None and kind != MISSING and not kind.startswith("a broken"):
        raise PathError(f"cannot write {given}: it is {kind}")
    if st is None or stat.S_ISREG(st.st_mode):  # new, a regular file, or a broken link's target: atomic
        real = Path(os.path.realpath(given))
        _check_folder(real.parent, given)
        return Output(given, real)
    if stat.S_ISBLK(st.st_mode):
        raise PathError(f"refusing to write {given}: it is a block device (a disk); give a file name")
    socket = stat.S_ISSOCK(st.st_mode)
    if not socket and not os.access(given, os.W_OK):
        raise PathError(f"cannot write {given}: {kind} that is not writable")
    return Output(given, Path(given), stream=True, socket=socket)


def _descriptor(path: str) -> bool:
    """Whether ``path`` or a link on the way to its target names an open file descriptor
    (/dev/stdout -> /proc/self/fd/1): written to as ``cp`` does, never replaced."""
    p = os.path.abspath(path)
    for _ in range(40):  # the kernel's own limit on links followed
        if re.fullmatch(r"/(proc/(self|thread-self|\d+)|dev)/fd/\d+", p):
            return True
        if not os.path.islink(p):
            return False
        p = os.path.normpath(os.path.join(os.path.dirname(p), os.readlink(p)))
    return False


def _check_folder(folder: Path, given: str) -> None:
    """The folder a file will be created in exists and is writable, or can be created."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise PathError(f"cannot write {given}: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PathError(f"cannot write {given}: the folder {existing} is not writable")


def write_output(target: str | os.PathLike | Output, data: bytes | Callable[[IO[bytes]], Any]) -> Output:
    """Write ``data`` (bytes, or a function that writes to a binary file) to a user's path, as
    ``check_output`` classifies it now (again: it may have changed during the work): atomically,
    missing folders created, or streamed into a device, FIFO or socket. Failures are one-line
    PathErrors ("cannot write /dev/full: No space left on device")."""
    out = check_output(target.given if isinstance(target, Output) else target)
    write = data if callable(data) else (lambda f: f.write(data))
    try:
        if out.stream:
            _stream(out, write)
        else:
            atomic_write(out.path, write, parents=True)
    except BrokenPipeError:
        raise PathError(f"cannot write {out.given}: its reader closed it before the end") from None
    except OSError as e:
        raise PathError(f"cannot write {out.given}: {e.strerror or e}") from None
    return out


def _stream(out: Output, write: Callable[[IO[bytes]], Any]) -> None:
    """Write into a device or FIFO (opened without O_CREAT: the node stays what it is; a FIFO's
    open waits for a reader, as ``cp``'s does), a socket (connected to) or an open descriptor."""
    if out.socket:
        import socket

        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(str(out.path))
            with s.makefile("wb") as f:
                write(f)
        return
    # A descriptor's file (`-o /dev/stdout > f.png`) is truncated as cp does; a device or FIFO has nothing to cut.
    fd = os.open(out.path, os.O_WRONLY | (os.O_TRUNC if out.descriptor else 0) | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "wb") as f:
        if stat.S_ISREG(os.fstat(fd).st_mode) and not out.descriptor:  # a file since the check: never write into one
            raise PathError(f"cannot write {out.given}: it became a regular file meanwhile; try again")
        write(f)



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
