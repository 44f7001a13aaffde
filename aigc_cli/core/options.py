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


# Seeds are 32-bit, as numpy's and torch-fidelity's are: a larger one overflowed torch's
# generators only once training had started (loop.epoch_permutation multiplies it by 1,000,003).
SEED_MAX = 2**32 - 1


def check_seed(value: int, name: str = "seed") -> int:
    """A seed given to a command or the Python API: a whole number in [0, SEED_MAX], else a
    one-line OptionError naming ``name``'s flag (torch's generators overflow past 64 bits)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= SEED_MAX:
        raise OptionError(name, f"must be a whole number in [0, {SEED_MAX}], got {value!r:.40}")
    return value


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
    maximum: float | None = None  # largest allowed value (numbers)
    below: float | None = None  # values must be less than this (numbers)
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
            if isinstance(value, float) and not math.isfinite(value):  # an int is finite, however long
                raise OptionError(self.name, f"must be a finite number, got {value}")
            low = (self.minimum is None or value >= self.minimum) and (self.above is None or value > self.above)
            high = (self.maximum is None or value <= self.maximum) and (self.below is None or value < self.below)
            if not (low and high):
                raise OptionError(self.name, f"must be {self._bounds_words()}, got {_show(value)}")
        return value

    def range_text(self) -> str:
        """The allowed numbers: ``[0, 1)``, ``>= 1``, ``< 1``, or "" for no bound (docs/options.md)."""
        lo = self.minimum if self.minimum is not None else self.above
        hi = self.maximum if self.maximum is not None else self.below
        if lo is not None and hi is not None:
            return (f"{'[' if self.minimum is not None else '('}{_show(lo)}, "
                    f"{_show(hi)}{']' if self.maximum is not None else ')'}")
        if lo is not None:
            return f"{'>=' if self.minimum is not None else '>'} {_show(lo)}"
        if hi is not None:
            return f"{'<=' if self.maximum is not None else '<'} {_show(hi)}"
        return ""

    def _bounds_words(self) -> str:
        """What a value outside the bounds is told: "at least 1", "positive", "in [0, 1)"."""
        low, high = (self.minimum, self.above), (self.maximum, self.below)
        if any(b is not None for b in low) and any(b is not None for b in high):
            return f"in {self.range_text()}"
        if self.minimum is not None:
            return f"at least {_show(self.minimum)}"
        if self.above is not None:
            return "positive" if self.above == 0 else f"more than {_show(self.above)}"
        if self.maximum is not None:
            return f"at most {_show(self.maximum)}"
        return f"below {_show(self.below)}"

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
        except (ValueError, OverflowError):  # OverflowError: an int too long for a float
            raise OptionError(self.name, f"must be {self.type.__name__}, got {value!r}") from None


_NUMBER = r"(\d+(?:\.\d+)?(?:e[+-]?\d+)?)"  # 90, 1.5, 1e3: what a bare number of seconds may be too
_DURATION = re.compile(f"(?:{_NUMBER}h)?(?:{_NUMBER}m)?(?:{_NUMBER}s)?")
MAX_DURATION = 366 * 24 * 3600.0  # a year: longer is a typo, not a budget


def parse_duration(name: str, text: str) -> float:
    """Seconds in a duration such as ``90s``, ``10m``, ``1h30m`` or a bare number of seconds;
    OptionError (naming option ``name``) for anything else, for zero, or for more than a year
    (however it is spelt: ``99999999999999999999h``, ``1e9s`` and ``1e9`` alike)."""
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
    if math.isnan(seconds) or seconds <= 0:
        raise OptionError(name, f"must be a positive duration such as 90s, 10m or 1h30m, got {text!r}")
    if seconds > MAX_DURATION:  # infinity too
        raise OptionError(name, f"must be at most a year ({MAX_DURATION / 3600:.0f}h), got {text!r}")
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
