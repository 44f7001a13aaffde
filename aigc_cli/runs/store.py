"""Where runs live, how they are named, and who may write them.

Layout: ``$AIGC_HOME/runs/run<N>/`` (``AIGC_HOME`` defaults to platformdirs' user data dir) with
``run.json`` (status and progress), ``config.json`` (everything needed to rebuild the model),
``model.safetensors`` (weights for sampling), ``checkpoint.safetensors`` (full training state),
``metrics.jsonl``, ``samples/`` and ``.lock``.

What the store guarantees (docs/runs.md says it for users):
- one writer per run: a process writes a run only while it holds the run's ``.lock`` (an OS lock,
  freed by the kernel when the process dies); ``running`` means exactly "the lock is held";
- a run appears whole: it is built in a hidden ``.creating-*`` folder (run.json, config.json,
  samples/, the lock already held) and renamed into place; creation is serialised by
  ``runs/.store.lock``, so names are unique and ids are handed out once: ``.next-id`` remembers
  the highest id ever used, and a removed run's id is never given again;
- a bad file affects only its own run: run.json is validated on every read, and a run whose
  run.json is unreadable lists as ``broken`` and can be removed;
- what a crash leaves (temporary files of interrupted writes, half-created or half-removed
  folders) is cleaned by the next process that creates a run.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from aigc_cli.core.errors import RunError
from aigc_cli.core.io import TMP_SUFFIX, atomic_write_json
from aigc_cli.core.locks import FileLock, describe_holder
from aigc_cli.core.paths import runs_root

_ID = re.compile(r"run(\d+)")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_TRASH = re.compile(r"\.trash-run(\d+)-.*")
_SAFETENSORS_TMP = re.compile(r"\.tmp[A-Za-z0-9]{6}")  # safetensors' own save_file temp files

STATUSES = ("running", "completed", "interrupted", "failed", "broken")
LOCK_WAIT = 2.0  # seconds a writer waits for a lock a reader may be probing
# Seconds a lock must stay held to count as a writer's when a command checks it before its slow
# start (a second --resume, runs rm): a reader probes it for microseconds, a writer for its life.
BUSY_CONFIRM = 0.25


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Run:
    path: Path
    # Set on the Run a writer got from create_run()/lock_run(): the lock it holds.
    lock: FileLock | None = field(default=None, compare=False, repr=False)

    @property
    def id(self) -> str:
        return self.path.name

    @property
    def number(self) -> int:
        return int(_ID.fullmatch(self.id).group(1))

    # Files of a run, named in one place.
    @property
    def meta_path(self) -> Path:
        return self.path / "run.json"

    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def weights_path(self) -> Path:
        return self.path / "model.safetensors"

    @property
    def checkpoint_path(self) -> Path:
        return self.path / "checkpoint.safetensors"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def samples_dir(self) -> Path:
        return self.path / "samples"

    @property
    def lock_path(self) -> Path:
        return self.path / ".lock"

    # -- who writes it --------------------------------------------------------------------------
    def writer(self, confirm: float = 0.0) -> dict[str, Any] | None:
        """The process holding this run's lock ({'pid', 'host', ...}), or None if nobody does.
        ``confirm``: seconds it must stay held (FileLock.is_free), before a refusal."""
        if self.lock is not None and self.lock.held:
            return {"pid": os.getpid(), "host": socket.gethostname()}
        probe = FileLock(self.lock_path)
        return None if probe.is_free(confirm) else probe.holder()

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()

    # -- run.json -------------------------------------------------------------------------------
    def read_meta(self) -> dict[str, Any]:
        """run.json, checked; a run whose file is unreadable reads as status 'broken' with the
        reason in 'error'. The status is what the lock says: 'running' only while a writer holds it."""
        try:
            meta = _check_meta(self.meta_path)
        except ValueError as e:
            return {"id": self.id, "status": "broken", "error": str(e)}
        meta["id"] = self.id
        if self.lock is not None and self.lock.held:
            return meta  # our own run: what we wrote is the truth
        if self.writer() is not None:
            meta["status"] = "running"
        elif meta.get("status") == "running":
            # The writer died without a word (SIGKILL, power loss). If it got past its last save
            # the run is whole.
            done = isinstance(meta.get("epochs"), int) and meta.get("epoch", 0) >= meta["epochs"]
            meta["status"] = "completed" if done else "interrupted"
        return meta

    def update_meta(self, **fields: Any) -> dict[str, Any]:
        """Only the lock holder calls this (the loop, train(), resume())."""
        try:
            meta = _check_meta(self.meta_path)
        except ValueError:
            meta = {}  # ours to repair: we hold the lock
        meta.update(fields)
        meta["id"] = self.id
        meta["updated"] = now_iso()
        atomic_write_json(self.meta_path, meta)
        return meta

    # -- config.json, metrics.jsonl ------------------------------------------------------------
    def read_config(self) -> dict[str, Any]:
        what = f"{self.id}: config.json"
        try:
            config = json.loads(self.config_path.read_bytes().decode("utf-8"))
        except FileNotFoundError:
            raise RunError(f"{self.id} has no config.json; it cannot be used (remove it with 'aigc runs rm {self.id}')") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise RunError(f"{what} is corrupt ({str(e).splitlines()[0]})") from None
        except OSError as e:
            raise RunError(f"{what} cannot be read ({e.strerror})") from None
        if not isinstance(config, dict):
            raise RunError(f"{what} holds {type(config).__name__}, not an object")
        for key, kind in (("family", str), ("model", dict), ("train", dict), ("dataset", (dict, type(None)))):
            if not isinstance(config.get(key, ...), kind):
                expected = "object" if key != "family" else "string"
                raise RunError(f"{what} lacks a valid {key!r} ({expected} expected)")
        return config

    def write_config(self, config: dict[str, Any]) -> None:
        atomic_write_json(self.config_path, config)

    def read_metrics(self) -> list[dict[str, Any]]:
        """The rows of metrics.jsonl; lines that are not a JSON object with an integer step
        (cut short by a crash, or damaged) are skipped: the rest is still good."""
        try:
            data = self.metrics_path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as e:
            raise RunError(f"{self.id}: metrics.jsonl cannot be read ({e.strerror})") from None
        rows = []
        for line in data.splitlines():
            try:
                row = json.loads(line.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                continue
            if isinstance(row, dict) and isinstance(row.get("step"), int) and not isinstance(row["step"], bool):
                rows.append(row)
        return rows

    def last_metrics(self) -> dict[str, Any] | None:
        rows = self.read_metrics()
        return rows[-1] if rows else None


def _check_meta(path: Path) -> dict[str, Any]:
    """run.json as a dict, or ValueError saying what is wrong with it."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ValueError("run.json is missing") from None
    except OSError as e:
        raise ValueError(f"run.json cannot be read ({e.strerror})") from None
    try:
        meta = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ValueError("run.json is not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"run.json is not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"run.json holds {type(meta).__name__}, not an object")
    if meta.get("status") not in STATUSES[:-1]:
        raise ValueError(f"run.json has an unknown status {meta.get('status')!r}")
    for key, kinds in (("family", (str,)), ("name", (str, type(None))), ("epoch", (int,)), ("step", (int,)),
                       ("epochs", (int,))):
        if key in meta and (not isinstance(meta[key], kinds) or isinstance(meta[key], bool)):
            raise ValueError(f"run.json has a bad {key!r}: {meta[key]!r}")
    return meta


# -- the store ----------------------------------------------------------------------------------
def list_runs() -> list[Run]:
    root = runs_root()
    if not root.is_dir():
        return []
    runs = [Run(p) for p in root.iterdir() if _ID.fullmatch(p.name) and p.is_dir()]
    return sorted(runs, key=lambda r: r.number)


def validate_name(name: str) -> str:
    if not _NAME.fullmatch(name) or _ID.fullmatch(name) or name == "last":
        raise RunError(
            f"invalid run name {name!r}: use letters, digits, '.', '_' or '-' (at most 64), "
            "and not 'last' or 'runN'"
        )
    return name


@contextlib.contextmanager
def _store_locked():
    """Serialise creation: id hand-out, name check and the rename into place."""
    root = runs_root()
    root.mkdir(parents=True, exist_ok=True)
    lock = FileLock(root / ".store.lock")
    _acquire(lock, f"{root.name}/.store.lock", wait=float("inf"))
    try:
        yield root
    finally:
        lock.release()


def _acquire(lock: FileLock, name: str, wait: float) -> bool:
    """``lock.acquire(wait)``; a lock path that is a folder (a copy made by hand, a stray
    ``mkdir``) is a one-line error instead of an IsADirectoryError."""
    try:
        return lock.acquire(wait=wait)
    except IsADirectoryError:
        raise RunError(f"{name} is a folder, not a lock file: remove it (rm -r {shlex.quote(str(lock.path))}) "
                       "and try again") from None


def create_run(family: str, name: str | None = None, config: dict[str, Any] | None = None, **meta: Any) -> Run:
    """A new run, whole (run.json, config.json, samples/) and locked by this process: the
    returned Run's lock stays held until ``run.release()`` or the process ends."""
    if name is not None:
        validate_name(name)
    with _store_locked() as root:
        number = _next_number(root)  # before the clean-up: a half-removed run's id counts as used
        clean_store(root)
        check_name_free(name)
        staging = root / f".creating-{secrets.token_hex(6)}"
        os.mkdir(staging)
        lock = FileLock(staging / ".lock")
        try:
            lock.acquire()
            lock.write_holder()
            (staging / "samples").mkdir()
            if config is not None:
                atomic_write_json(staging / "config.json", config)
            stamp = now_iso()
            atomic_write_json(staging / "run.json", {
                "id": f"run{number}", "name": name, "family": family, "status": "running", "epoch": 0,
                "step": 0, "created": stamp, "updated": stamp, "pid": os.getpid(),
                "host": socket.gethostname(), **meta,
            })
            atomic_write_json(root / ".next-id", {"next": number + 1})  # before the id shows: never reused
            path = root / f"run{number}"
            os.rename(staging, path)  # path cannot exist: ids only grow, under the store lock
        except BaseException:
            lock.release()
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return Run(path, lock)


def check_name_free(name: str | None) -> None:
    """A one-line error if a run is named ``name`` already (create_run checks it again, under the
    store lock: this is the early check of a command about to start)."""
    if name is not None and any(r.read_meta().get("name") == name for r in list_runs()):
        raise RunError(f"a run named {name!r} exists already; pick another name or remove that run")


def _next_number(root: Path) -> int:
    """One more than any id this store has ever used (live, being removed, or remembered)."""
    used = [r.number for r in list_runs()]
    used += [int(m.group(1)) for p in root.iterdir() if (m := _TRASH.fullmatch(p.name))]
    try:
        remembered = json.loads((root / ".next-id").read_text())["next"] - 1
        if isinstance(remembered, int):
            used.append(remembered)
    except (OSError, ValueError, KeyError, TypeError):
        pass  # a store from before .next-id, or a damaged file: the folders still tell
    return max(used, default=0) + 1


def lock_run(run: Run, wait: float = LOCK_WAIT) -> Run:
    """The same run, locked by this process for writing (resume); a one-line error naming the
    holder if another process has it."""
    lock = FileLock(run.lock_path)
    try:
        got = _acquire(lock, f"{run.id}/.lock", wait)
    except FileNotFoundError:
        raise RunError(f"{run.id} no longer exists") from None
    if not got:
        raise _busy(run, lock.holder())
    if not run.path.is_dir():  # removed while we waited
        lock.release()
        raise RunError(f"{run.id} no longer exists")
    lock.write_holder()
    _clean_run(run.path)
    return Run(run.path, lock)


def check_not_written(run: Run) -> None:
    """The refusal lock_run() would give, at once: a command checks this before its slow start
    (importing torch, loading the data) and takes the lock with lock_run() after."""
    writer = run.writer(confirm=BUSY_CONFIRM)
    if writer is not None:
        raise _busy(run, writer)


def _busy(run: Run, holder: dict[str, Any]) -> RunError:
    return RunError(f"{run.id} is being written by {describe_holder(holder)}; wait for it to finish or stop it first")


def clean_store(root: Path | None = None) -> None:
    """Remove what crashes left: half-created and half-removed folders, temporary files of
    interrupted writes in runs nobody is writing. Called with the store lock held."""
    root = root or runs_root()
    for p in root.iterdir():
        if p.name.startswith((".creating-", ".trash-")) and p.is_dir():
            shutil.rmtree(p, ignore_errors=True)  # creators hold the store lock; a live rm ignores errors too
        elif _is_temp(p.name):
            with contextlib.suppress(OSError):
                p.unlink()
    for run in list_runs():
        lock = FileLock(run.lock_path)
        with contextlib.suppress(OSError):
            if lock.acquire():
                try:
                    _clean_run(run.path)
                finally:
                    lock.release()


def _is_temp(name: str) -> bool:
    return (name.startswith(".") and name.endswith(TMP_SUFFIX)) or bool(_SAFETENSORS_TMP.fullmatch(name))


def _clean_run(path: Path) -> None:
    for folder in (path, path / "samples"):
        with contextlib.suppress(OSError):
            for p in folder.iterdir():
                if _is_temp(p.name):
                    with contextlib.suppress(OSError):
                        p.unlink()


def resolve_run(ref: str) -> Run:
    """An id (``run3`` or ``3``), a name, or ``last``."""
    ref = (ref or "").strip()
    runs = list_runs()
    if not ref:
        raise RunError("no run given; use a run id, a name or 'last'")
    if ref == "last":
        if not runs:
            raise RunError(f"there are no runs yet in {runs_root()}; train one with 'aigc train'")
        return runs[-1]
    if ref.isdigit():
        ref = f"run{ref}"
    for run in runs:
        if run.id == ref:
            return run
    for run in runs:
        if run.read_meta().get("name") == ref:
            return run
    raise RunError(f"no run {ref!r} in {runs_root()}; see 'aigc runs list'")


def remove_run(run: Run, force: bool = False, stop_wait: float = 30.0) -> None:
    """Delete a run. A run being written is refused, or with ``force`` its writer is first
    stopped (SIGTERM: it saves and exits) when it runs on this host."""
    lock = FileLock(run.lock_path)
    if run.lock_path.is_dir():  # nobody can lock a folder (FileLock opens it for writing): no writer to stop
        shutil.rmtree(_to_trash(run), ignore_errors=True)
        return
    try:
        got = _acquire(lock, f"{run.id}/.lock", LOCK_WAIT)
    except FileNotFoundError:
        raise RunError(f"{run.id} no longer exists") from None
    if not got:
        holder = lock.holder()
        who = describe_holder(holder)
        if not force:
            raise RunError(f"{run.id} is being written by {who}; stop it first, or pass --force to stop it and remove the run")
        if holder.get("pid") == os.getpid():
            raise RunError(f"{run.id} is being written by this process; finish that first")
        if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
            raise RunError(f"{run.id} is being written by {who}; stop that process there first")
        with contextlib.suppress(ProcessLookupError):
            os.kill(holder["pid"], signal.SIGTERM)
        if not lock.acquire(wait=stop_wait):
            raise RunError(f"{run.id}: its writer ({who}) did not stop within {stop_wait:.0f} s; nothing removed")
    try:
        lock.write_holder(action="rm")
        trash = _to_trash(run)
    finally:
        lock.release()
    shutil.rmtree(trash, ignore_errors=True)  # what a crash leaves here, the next create cleans


def _to_trash(run: Run) -> Path:
    """The run's folder renamed away, before it is deleted: a half-removed run never shows up in listings."""
    trash = run.path.with_name(f".trash-{run.id}-{int(time.time() * 1000)}")
    os.replace(run.path, trash)
    return trash
