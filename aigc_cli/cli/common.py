"""What every command shares: global settings, stderr console, stdout output."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Any


@dataclass
class Settings:
    device: str = "auto"
    debug: bool = False
    quiet: bool = False


settings = Settings()
_console = None


def console():
    """Rich console on stderr: messages, tables and progress never mix with results on stdout."""
    global _console
    if _console is None:
        from rich.console import Console

        _console = Console(stderr=True, highlight=False)
    return _console


def info(message: str) -> None:
    if not settings.quiet:
        console().print(message)


def warn(message: str) -> None:
    # -q silences everything on stderr but errors (docs/cli.md); what a warning reports is
    # also in --json output where it matters (converted, warnings).
    if not settings.quiet:
        console().print(f"[yellow]warning:[/yellow] {message}")


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
    sys.stdout.flush()


def print_result(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def device():
    """The torch device for a command that computes (its CPU allocator tuned for reuse)."""
    from aigc_cli.core.device import resolve_device
    from aigc_cli.core.memory import tune_cpu_allocator

    tune_cpu_allocator()
    return resolve_device(settings.device)


def table(title: str | None, columns: list[str], rows: list[list[Any]]) -> None:
    from rich.table import Table

    t = Table(title=title, header_style="bold")
    for c in columns:
        t.add_column(c)
    for r in rows:
        t.add_row(*["" if v is None else str(v) for v in r])
    console().print(t)
