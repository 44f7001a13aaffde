"""``aigc train``: train models."""

from __future__ import annotations

import typer

app = typer.Typer(help="Train models.", no_args_is_help=True)
