"""What every command shares: global settings, stderr console, stdout output."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Settings:
    device: str = "auto"
    threads: int | None = None  # --threads: None lets core/threads.py choose per region
    debug: bool = False
    quiet: bool = False
    argv: list[str] = field(default_factory=list)  # the command line after "aigc"


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


def _main_rank() -> bool:
    from aigc_cli.core import distributed

    return distributed.is_main()


def print_json(obj: Any) -> None:
    if not _main_rank():  # under torchrun rank 0 prints the result for all
        return
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
    sys.stdout.flush()


def print_result(text: str) -> None:
    if not _main_rank():
        return
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def device():
    """The torch device for a command that computes (its CPU allocator tuned for reuse, its CPU
    threads fixed when --threads is given). Under torchrun it joins the other ranks first: its
    device is then cuda:LOCAL_RANK on CUDA, and every rank but 0 is quiet (rank 0 reports and
    prints for all)."""
    from aigc_cli.core import distributed
    from aigc_cli.core.device import resolve_device
    from aigc_cli.core.memory import tune_cpu_allocator
    from aigc_cli.core.threads import set_threads

    tune_cpu_allocator()
    set_threads(settings.threads)
    device = resolve_device(settings.device)
    if distributed.launched():
        distributed.init_from_env(device.type)
        device = distributed.place(device)
        if not distributed.is_main():
            settings.quiet = True
    return device


def random_seed() -> int:
    """A seed for an option left out; under torchrun rank 0's, so that every rank draws alike."""
    from aigc_cli.core.seeding import fresh_seed

    return fresh_seed()


def table(title: str | None, columns: list[str], rows: list[list[Any]], result: bool = False) -> None:
    """A table on stderr, beside a result printed on stdout (eval's), or, ``result``: the
    command's result itself (runs list, datasets info), on stdout like any result (rank 0 alone;
    -q does not hide it)."""
    from rich.table import Table

    t = Table(title=title, header_style="bold")
    for c in columns:
        t.add_column(c)
    for r in rows:
        t.add_row(*["" if v is None else str(v) for v in r])
    if not result:
        console().print(t)
    elif _main_rank():
        from rich.console import Console

        out = Console(file=sys.stdout, highlight=False)
        if not out.is_terminal:
            out.width = max(out.width, 160)  # a pipe or a file: long paths and fingerprints on one line
        out.print(t)
        sys.stdout.flush()
