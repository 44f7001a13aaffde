"""``aigc reconstruct``: encode and decode real images with a run that has an encoder (a VAE),
next to the originals."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from aigc_cli.cli import common
from aigc_cli.cli.options import add_options
from aigc_cli.models.registry import generation_options


@add_options([*generation_options("condition", "reconstruct"), *generation_options("decode", "reconstruct")], into="gen_options")
def reconstruct(
    run: str = typer.Argument(..., help="Run id, name or 'last' (a run with an encoder: VAE, or diffusion's inversion)."),
    images: List[Path] = typer.Argument(..., help="Image files (PNG, JPEG, ...) or folders of them."),
    output: str = typer.Option(..., "-o", "--output", help="out.png or - for stdout."),
    nrow: int = typer.Option(8, "--nrow", help="Images per row: a row of originals, then the row of their reconstructions."),
    json_out: bool = typer.Option(False, "--json", help="Print what was written as JSON."),
    gen_options: Optional[dict] = None,
) -> None:
    """Encode and decode images: originals and reconstructions in alternating rows of one PNG."""
    from aigc_cli.cli.output import check_target, is_stdout, write_bytes
    from aigc_cli.core.errors import ConfigError
    from aigc_cli.core.images import image_files, interleave_rows, make_grid, png_bytes, read_images, to_uint8
    from aigc_cli.generation import load_generator

    if nrow < 1:
        raise ConfigError(f"--nrow must be at least 1, got {nrow}")
    target = check_target(output, "out.png")  # before any work: a folder, a link loop... are refused
    if target is not None and not target.stream and target.suffix != ".png":
        raise ConfigError(f"-o {output}: reconstruct writes one PNG; use a .png name or -")
    gen = load_generator(run, common.device(), command="reconstruct")  # a run without an encoder: refused there
    options = gen.options(gen_options)
    if gen.num_classes is not None and options.get("label") is None:
        raise ConfigError(f"{gen.run.id} is class-conditional: pass --label, the class of the images")
    gen.conditioning(1, **options)  # refuses --label on unconditional runs (and out of range), as sample does
    files, in_folders = image_files(images)
    real, notes = read_images(files, gen.image_shape, optional=in_folders)
    cond = gen.conditioning(len(real), single=True, **options)
    recon = gen.generate(gen.encode(real, cond, **options), cond, **options)  # (n, C, H, W) in [0, 1]
    originals = real.float() / 255
    per_row = min(nrow, len(real))
    grid = make_grid(to_uint8(interleave_rows(originals, recon, per_row)), nrow=per_row)
    text = {"Software": "aigc", "aigc:run": gen.run.id, "aigc:reconstruct": str(len(real))}
    written = write_bytes(output, png_bytes(grid, text))

    for note in notes:
        common.warn(f"converted {note}")
    mse = float((originals - recon).pow(2).mean())
    if json_out and not is_stdout(output):
        common.print_json({"run": gen.run.id, "n": len(real), "output": written, "mse": round(mse, 6), "converted": notes})
    elif not is_stdout(output):
        common.info(f"wrote {len(real)} images and their reconstructions from {gen.run.id} to {written} (MSE {mse:.4f})")
