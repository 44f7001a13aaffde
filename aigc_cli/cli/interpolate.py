"""``aigc interpolate``: latent interpolation (filled by the VAE/interpolation issue)."""

from __future__ import annotations

import typer


def interpolate(run: str = typer.Argument(..., help="Run id, name or 'last'.")) -> None:
    """Interpolate between latents of a run (not available yet)."""
    from aigc_cli.core.errors import AigcError

    raise AigcError("interpolate is not available in this version")
