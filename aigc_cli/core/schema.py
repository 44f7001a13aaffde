"""Fields of a JSON file we wrote and read back (a run's config.json): declared once per family,
checked when a run is loaded, so that a damaged or hand-edited file is one line naming the file
and the field, never a TypeError from deep inside a network's constructor."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable

from aigc_cli.core.errors import RunError

_NAMES = {int: "a whole number", float: "a number", str: "a string", bool: "true or false", list: "a list",
          dict: "a JSON object"}


@dataclass(frozen=True)
class Field:
    name: str
    type: type  # int, float, str, bool, list or dict (a JSON object)
    choices: tuple[Any, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    below: float | None = None  # values must be less than this
    optional: bool = False  # may be null
    items: type | None = None  # lists: the type of every element
    length: tuple[int, int] | None = None  # lists: (fewest, most) elements


def _is(value: Any, kind: type) -> bool:
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _bounds(value: Any, f: Field) -> str | None:
    if not math.isfinite(value):
        return f"must be finite, got {value}"
    if f.minimum is not None and value < f.minimum:
        return f"must be at least {f.minimum:g}, got {value}"
    if f.maximum is not None and value > f.maximum:
        return f"must be at most {f.maximum:g}, got {value}"
    if f.below is not None and not value < f.below:
        return f"must be below {f.below:g}, got {value}"
    return None


def _problem(value: Any, f: Field) -> str | None:
    """What is wrong with ``value`` for field ``f``, or None. A list's bounds apply to its items."""
    if value is None:
        return None if f.optional else "is missing"
    if not _is(value, f.type):
        return f"must be {_NAMES.get(f.type, f.type.__name__)}, got {value!r:.60}"
    if f.choices and value not in f.choices:
        return f"must be one of {', '.join(map(str, f.choices))}, got {value!r:.60}"
    if f.type in (int, float):
        return _bounds(value, f)
    if f.type is list:
        if f.length is not None and not f.length[0] <= len(value) <= f.length[1]:
            lo, hi = f.length
            return f"must hold {lo if lo == hi else f'{lo} to {hi}'} elements, got {len(value)}"
        if f.items is not None:
            for v in value:
                if not _is(v, f.items):
                    return f"must hold only {_NAMES.get(f.items, f.items.__name__)}s, got {v!r:.60}"
                bad = _bounds(v, f) if f.items in (int, float) else None
                if bad:
                    return f"holds a value that {bad}"
    return None


def check_fields(section: Any, fields: Iterable[Field], where: str) -> None:
    """RunError naming ``where`` (e.g. "run3's config.json 'model'") and the first bad field."""
    if not isinstance(section, dict):
        raise RunError(f"{where} is not an object")
    for f in fields:
        problem = _problem(section.get(f.name), f)
        if problem is not None:
            raise RunError(f"{where} field {f.name!r} {problem}")
