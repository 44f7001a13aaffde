"""Options declared once: the CLI's flags and help, the Python API's keywords and their checks,
and the defaults recorded in a run's config all read the same ``Option``.

Light to import (no torch): ``aigc --help`` builds its commands from these.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Iterable

from aigc_cli.core.errors import ConfigError, OptionError


def flag(name: str) -> str:
    """The command-line spelling of an option's keyword: ``batch_size`` -> ``--batch-size``."""
    return "--" + name.replace("_", "-")


@dataclass(frozen=True)
class Option:
    name: str  # the Python keyword and the config key, e.g. "latent_dim"
    type: type  # int, float, str or bool
    default: Any  # used when the option is not given; None: decided later (see default_text)
    help: str
    choices: tuple[str, ...] = ()
    default_text: str | None = None  # the help's "[default: ...]" when the default is decided later
    short: str | None = None  # e.g. "-e"
    off_flag: str | None = None  # bool options: the flag that gives False, e.g. "--unconditional"
    minimum: float | None = None  # smallest allowed value (numbers)
    above: float | None = None  # values must be greater than this (numbers)
    cli: bool = True  # False: a Python keyword only (no flag)

    @property
    def flag(self) -> str:
        return flag(self.name)

    def help_text(self) -> str:
        """The help line with its default, as ``aigc ... --help`` shows it."""
        shown = self.default_text if self.default is None else _show(self.default)
        return f"{self.help} [default: {shown}]" if shown is not None else self.help

    def check(self, value: Any) -> Any:
        """``value`` converted to the option's type, or OptionError; None passes through."""
        if value is None:
            return None
        value = self._convert(value)
        if self.choices and value not in self.choices:
            raise OptionError(self.name, f"{value!r} is not one of: {', '.join(self.choices)}")
        if self.type in (int, float):
            if not math.isfinite(value):
                raise OptionError(self.name, f"must be a finite number, got {value}")
            if self.minimum is not None and value < self.minimum:
                raise OptionError(self.name, f"must be at least {_show(self.minimum)}, got {_show(value)}")
            if self.above is not None and not value > self.above:
                what = "positive" if self.above == 0 else f"more than {_show(self.above)}"
                raise OptionError(self.name, f"must be {what}, got {_show(value)}")
        return value

    def _convert(self, value: Any) -> Any:
        if self.type is bool:
            if not isinstance(value, bool):
                raise OptionError(self.name, f"must be True or False, got {value!r}")
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise OptionError(self.name, f"must be {self.type.__name__}, got {value!r}")
        try:
            if self.type is int:
                if isinstance(value, float) and not value.is_integer():
                    raise ValueError
                return int(value)
            return self.type(value)
        except ValueError:
            raise OptionError(self.name, f"must be {self.type.__name__}, got {value!r}") from None


_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?")


def parse_duration(name: str, text: str) -> float:
    """Seconds in a duration such as ``90s``, ``10m``, ``1h30m`` or a bare number of seconds;
    OptionError (naming option ``name``) for anything else, or for zero."""
    value = str(text).strip().lower()
    match = _DURATION.fullmatch(value)
    if value and match and any(match.groups()):
        h, m, s = (float(g) if g else 0.0 for g in match.groups())
        seconds = 3600 * h + 60 * m + s
    else:
        try:
            seconds = float(value)
        except ValueError:
            raise OptionError(name, f"must be a duration such as 90s, 10m or 1h30m, got {text!r}") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise OptionError(name, f"must be a positive duration such as 90s, 10m or 1h30m, got {text!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """``754.2`` -> ``"12m34s"``; ``4000`` -> ``"1h06m40s"``."""
    s = max(0, int(round(seconds)))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def _show(value: Any) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(value)


def option_table(options: Iterable[Option]) -> dict[str, Option]:
    """name -> Option, refusing two options of one name."""
    table: dict[str, Option] = {}
    for o in options:
        if o.name in table:
            raise ValueError(f"option {o.name!r} is declared twice")
        table[o.name] = o
    return table


def resolve(options: Iterable[Option], given: dict[str, Any], owner: str) -> dict[str, Any]:
    """Every option's value: the given one checked, else its default (None = decided later).

    A keyword that names no option is an error that lists the ones there are.
    """
    table = option_table(options)
    unknown = sorted(k for k in given if k not in table)
    if unknown:
        raise ConfigError(f"{owner} has no option {', '.join(map(repr, unknown))}; its options: {', '.join(table)}")
    return {name: (o.default if given.get(name) is None else o.check(given[name])) for name, o in table.items()}
