"""Errors the CLI turns into a one-line message and exit code 1 (no traceback unless --debug).

The engine words its messages for a Python caller and marks every option it names with
``opt(name)``: ``str(error)`` shows the keyword (``batch_size``), and the CLI shows the option's
flag (``--batch-size``) through ``error.render(flag)``. Nothing below the CLI writes a flag.
"""

from __future__ import annotations

import re
from typing import Callable

_MARKED = re.compile("\x1e([A-Za-z0-9_]+)\x1f")


def opt(name: str) -> str:
    """An option's name inside a message, marked so that each front end can spell it its way."""
    return f"\x1e{name}\x1f"


def first_line(e: BaseException) -> str:
    """The first line of an exception's message, or its type's name when it has none: for
    one-line errors that wrap another library's exception."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


class AigcError(Exception):
    """A problem the user can fix; the message is shown as one line."""

    def render(self, spell: Callable[[str], str]) -> str:
        """The message with each marked option name spelled by ``spell`` (the CLI: its flag)."""
        text = str(self.args[0]) if self.args else ""
        return _MARKED.sub(lambda m: spell(m.group(1)), text)

    def __str__(self) -> str:
        return self.render(lambda name: name)


class DatasetError(AigcError):
    pass


class RunError(AigcError):
    pass


class ConfigError(AigcError):
    pass


class OptionError(ConfigError):
    """A bad value for one option: "<option> <problem>", e.g. "epochs must be at least 1, got 0"."""

    def __init__(self, option: str, problem: str):
        super().__init__(f"{opt(option)} {problem}")
        self.option, self.problem = option, problem


class WeightsError(AigcError):
    pass


class TrainingDiverged(AigcError):
    pass


class Interrupted(AigcError):
    """Raised by long jobs after they saved a resumable state; carries the exit code (130/143)."""

    def __init__(self, message: str, exit_code: int = 130, run_id: str | None = None):
        super().__init__(message)
        self.exit_code = exit_code
        self.run_id = run_id
