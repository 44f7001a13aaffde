"""Fault injection and pause points for the crash and signal tests.

``AIGC_TEST_FAULT=<point>:<n>`` (e.g. ``write:checkpoint.safetensors:synced:2`` or ``step:7``)
makes the n-th visit to ``<point>`` SIGKILL the process, so tests/test_crash.py can stop a
training exactly inside a checkpoint write instead of hoping a timer lands there.

``AIGC_TEST_PAUSE=<point>:<n>[,<point>:<n>...]`` with ``AIGC_TEST_PAUSE_DIR=<dir>`` makes the
n-th visit to each point write ``<dir>/paused-<k>`` (k: 1, 2, ... in the order reached) and wait
until a signal arrives (30 s at most), so tests/test_signals.py can deliver SIGINT/SIGTERM at an
exact phase; the marker holds the point and the process id. Unset (always, outside those tests) a
visit costs one dictionary lookup.

``AIGC_TEST_RANK=<r>`` limits both to rank r of a distributed run (tests/test_distributed.py
kills or signals one rank at an exact step).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

_TARGETS: dict[str, tuple[str, int]] | None = None  # point -> ("kill"|"pause", n)
_VISITS: dict[str, int] = {}
_PAUSES = [0]


def _parse(spec: str) -> list[tuple[str, int]]:
    out = []
    for item in filter(None, spec.split(",")):
        point, _, n = item.rpartition(":")
        if point and n.isdigit():
            out.append((point, int(n)))
    return out


def _targets() -> dict[str, tuple[str, int]]:
    global _TARGETS
    if _TARGETS is None:
        _TARGETS = {}
        only = os.environ.get("AIGC_TEST_RANK")
        if only is not None and only != os.environ.get("RANK", "0"):
            return _TARGETS
        for point, n in _parse(os.environ.get("AIGC_TEST_PAUSE", "")):
            _TARGETS[point + f"#{n}"] = ("pause", n)
        for point, n in _parse(os.environ.get("AIGC_TEST_FAULT", "")):
            _TARGETS[point + f"#{n}"] = ("kill", n)
    return _TARGETS


def fault_point(point: str) -> None:
    targets = _targets()
    if not targets:
        return
    _VISITS[point] = _VISITS.get(point, 0) + 1
    action = targets.get(f"{point}#{_VISITS[point]}")
    if action is None:
        return
    if action[0] == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    _pause(point)


def _pause(point: str) -> None:
    from aigc_cli.core import signals

    seen = signals.received()
    _PAUSES[0] += 1
    marker = Path(os.environ.get("AIGC_TEST_PAUSE_DIR", ".")) / f"paused-{_PAUSES[0]}"
    marker.write_text(f"{point}\n{os.getpid()}\n")
    deadline = time.monotonic() + 30
    while signals.received() == seen and time.monotonic() < deadline:
        time.sleep(0.01)  # a signal raises here, or is recorded by a deferred save / stop request
