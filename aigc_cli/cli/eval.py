"""``aigc eval``: metrics (FID and friends)."""

from __future__ import annotations

import typer

app = typer.Typer(help="Evaluate models: FID, KID, IS, precision/recall.", no_args_is_help=True)
