"""``aigc sample``."""

from __future__ import annotations

import typer


def sample(run: str = typer.Argument(..., help="Run id, name or 'last'.")) -> None:
    """Sample images from a trained run."""
