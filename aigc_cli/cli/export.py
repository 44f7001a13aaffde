"""``aigc export``: deployable models."""

from __future__ import annotations

import typer

app = typer.Typer(help="Export trained generators (ONNX).", no_args_is_help=True)
