"""Where runs live and how they are named.

Layout: ``$AIGC_HOME/runs/run<N>/`` (``AIGC_HOME`` defaults to platformdirs' user data dir) with
``run.json`` (status and progress), ``config.json`` (everything needed to rebuild the model),
``model.safetensors`` (weights for sampling), ``checkpoint.safetensors`` (full training state),
``metrics.jsonl`` and ``samples/``.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from aigc_cli.core.errors import RunError
from aigc_cli.core.io import atomic_write_json
from aigc_cli.core.paths import runs_root

_ID = re.compile(r"^run(\d+)$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Run:
    path: Path

    @property
    def id(self) -> str:
        return self.path.name

    @property
    def number(self) -> int:
        return int(_ID.match(self.id).group(1))

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

    def read_meta(self) -> dict[str, Any]:
        try:
            meta = json.loads(self.meta_path.read_text())
        except FileNotFoundError:
            meta = {"id": self.id, "status": "failed", "error": "run.json is missing"}
        except (json.JSONDecodeError, OSError) as e:
            meta = {"id": self.id, "status": "failed", "error": f"run.json unreadable: {e}"}
        meta["id"] = self.id
        # A 'running' run whose process is gone was killed without a chance to say so.
        if meta.get("status") == "running" and not _process_alive(meta.get("pid"), meta.get("host")):
            meta["status"] = "interrupted"
        return meta

    def update_meta(self, **fields: Any) -> dict[str, Any]:
        meta = self.read_meta()
        meta.update(fields)
        meta["updated"] = now_iso()
        atomic_write_json(self.meta_path, meta)
        return meta

    def read_config(self) -> dict[str, Any]:
        try:
            return json.loads(self.config_path.read_text())
        except FileNotFoundError:
            raise RunError(f"run {self.id} has no config.json; it cannot be used") from None
        except json.JSONDecodeError as e:
            raise RunError(f"run {self.id}: config.json is corrupt ({e})") from None

    def write_config(self, config: dict[str, Any]) -> None:
        atomic_write_json(self.config_path, config)

    def read_metrics(self) -> list[dict[str, Any]]:
        rows = []
        if not self.metrics_path.exists():
            return rows
        for line in self.metrics_path.read_text().splitlines():
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut short by a crash; the rest is still good
        return rows

    def last_metrics(self) -> dict[str, Any] | None:
        rows = self.read_metrics()
        return rows[-1] if rows else None


def _process_alive(pid: Any, host: Any) -> bool:
    if not isinstance(pid, int) or host != socket.gethostname():
        return True  # cannot tell from here: trust what the run said
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def list_runs() -> list[Run]:
    root = runs_root()
    if not root.is_dir():
        return []
    runs = [Run(p) for p in root.iterdir() if p.is_dir() and _ID.match(p.name)]
    return sorted(runs, key=lambda r: r.number)


def validate_name(name: str) -> str:
    if not _NAME.match(name) or _ID.match(name) or name == "last":
        raise RunError(
            f"invalid run name {name!r}: use letters, digits, '.', '_' or '-' (at most 64), "
            "and not 'last' or 'runN'"
        )
    return name


def create_run(family: str, name: str | None = None, **meta: Any) -> Run:
    """Make a new run folder. ``os.mkdir`` is atomic, so two processes never share one."""
    root = runs_root()
    root.mkdir(parents=True, exist_ok=True)
    if name is not None:
        validate_name(name)
        if any(r.read_meta().get("name") == name for r in list_runs()):
            raise RunError(f"a run named {name!r} exists already; pick another --name or remove it")
    existing = list_runs()
    number = existing[-1].number + 1 if existing else 1
    while True:
        path = root / f"run{number}"
        try:
            os.mkdir(path)
            break
        except FileExistsError:
            number += 1
    run = Run(path)
    (path / "samples").mkdir()
    stamp = now_iso()
    atomic_write_json(
        run.meta_path,
        {
            "id": run.id,
            "name": name,
            "family": family,
            "status": "running",
            "epoch": 0,
            "step": 0,
            "created": stamp,
            "updated": stamp,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            **meta,
        },
    )
    return run


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


def remove_run(run: Run) -> None:
    import shutil

    # Rename first so a half-removed run never shows up in listings.
    trash = run.path.with_name(f".trash-{run.id}-{int(time.time() * 1000)}")
    os.replace(run.path, trash)
    shutil.rmtree(trash)
