"""Fault injection for the crash tests: kill this process at a named point, on its n-th visit.

``AIGC_TEST_FAULT=<point>:<n>`` (e.g. ``write:checkpoint.safetensors:synced:2`` or ``step:7``)
makes the n-th visit to ``<point>`` SIGKILL the process, so tests/test_crash.py can stop a
training exactly inside a checkpoint write instead of hoping a timer lands there. Unset (always,
outside those tests) a visit costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

_TARGET: tuple[str, int] | None | bool = False  # False: not read yet
_VISITS: dict[str, int] = {}


def _target() -> tuple[str, int] | None:
    global _TARGET
    if _TARGET is False:
        spec = os.environ.get("AIGC_TEST_FAULT", "")
        point, _, n = spec.rpartition(":")
        _TARGET = (point, int(n)) if point and n.isdigit() else None
    return _TARGET


def fault_point(point: str) -> None:
    target = _target()
    if target is None or target[0] != point:
        return
    _VISITS[point] = _VISITS.get(point, 0) + 1
    if _VISITS[point] == target[1]:
        os.kill(os.getpid(), signal.SIGKILL)
