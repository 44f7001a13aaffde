"""Lineage: a run may descend from another (trained from its weights, tuned from it). Its
config.json then names the parent by id and by the SHA-256 of the parent's weights file, so that
a parent changed or removed since is found, not silently used. Light: no torch."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from aigc_cli.core.errors import RunError
from aigc_cli.runs.store import Run, list_runs, resolve_run

UNCHANGED = "unchanged"


def weights_digest(path: Path) -> str:
    """The SHA-256 of a weights file, hex: how a run names the exact weights it descends from."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def parent_record(parent: Run) -> dict[str, str]:
    """What a run records of the run it descends from (config.json's ``parent``)."""
    if not parent.weights_path.exists():
        raise RunError(f"{parent.id} has no weights yet (model.safetensors); train it for at least one epoch")
    return {"run": parent.id, "weights_sha256": weights_digest(parent.weights_path)}


def _checked(record: Any, where: str) -> dict[str, str]:
    if not (isinstance(record, dict) and isinstance(record.get("run"), str)
            and isinstance(record.get("weights_sha256"), str)):
        raise RunError(f"{where} field 'parent' must hold 'run' and 'weights_sha256'")
    return record


def parent_status(record: dict[str, str]) -> str:
    """UNCHANGED, or what became of the recorded parent since."""
    if not (isinstance(record, dict) and isinstance(record.get("run"), str)):
        return "recorded without its id"
    try:
        parent = resolve_run(record["run"])
    except RunError:
        return "gone from the run store"
    if not parent.weights_path.exists() or weights_digest(parent.weights_path) != record["weights_sha256"]:
        return "its weights have changed since"
    return UNCHANGED


def check_parent(config: dict[str, Any], where: str) -> Run | None:
    """The parent run a config names, whose weights are still those it recorded; None when it
    names none. A parent removed or changed since is a one-line error."""
    if config.get("parent") is None:
        return None
    record = _checked(config["parent"], where)
    status = parent_status(record)
    if status != UNCHANGED:
        raise RunError(f"{where} descends from {record['run']} (weights sha256 {record['weights_sha256'][:12]}...), "
                       f"but {status}")
    return resolve_run(record["run"])


def dependents(run: Run) -> list[str]:
    """The ids of the runs that cannot be loaded without ``run``'s weights: LoRA runs whose base
    it is (a run started from it with --init owns a full copy and needs it no more)."""
    out = []
    for other in list_runs():
        try:
            config = other.read_config()
        except RunError:
            continue  # a damaged run depends on nothing it can say
        parent = config.get("parent")
        if config.get("adapters") is not None and isinstance(parent, dict) and parent.get("run") == run.id:
            out.append(other.id)
    return out
