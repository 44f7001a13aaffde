"""``aigc interpolate``: walk the latent space of a run as a PNG strip or a GIF."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple

import typer

from aigc_cli.cli import common
from aigc_cli.cli.options import add_options
from aigc_cli.interpolation import FRAMES, SPAN
from aigc_cli.models.registry import generation_options


@add_options([*generation_options("condition", "interpolate"), *generation_options("decode", "interpolate")], into="gen_options")
def interpolate(
    run: str = typer.Argument(..., help="Run id, name or 'last'."),
    output: str = typer.Option(..., "-o", "--output", help="out.png (one strip, or a grid for --traverse), out.gif (an animation), or - for stdout."),
    from_seed: Optional[int] = typer.Option(None, "--from-seed", help="Seed of the first latent (random if omitted); with --traverse, the base latent (the zero vector if omitted)."),
    to_seed: Optional[int] = typer.Option(None, "--to-seed", help="Seed of the last latent (random if omitted)."),
    between: Optional[Tuple[Path, Path]] = typer.Option(None, "--between", help="Runs with an encoder (VAE, diffusion): interpolate between the encodings of two images (A.png B.png)."),
    latents: Optional[Path] = typer.Option(None, "--latents", help="A .npy file of 2 or more latent rows: the path to follow (one row: the base of --traverse)."),
    from_prompt: Optional[str] = typer.Option(None, "--from-prompt", help="Captioned runs: blend the caption from this prompt to --to-prompt over the frames (one latent for all, unless --to-seed is given too)."),
    to_prompt: Optional[str] = typer.Option(None, "--to-prompt", help="Captioned runs: the caption of the last frame (with --from-prompt)."),
    traverse: Optional[str] = typer.Option(None, "--traverse", help="Vary latent dimensions one at a time: 'all', 3, 0,2,5 or 0-7; one row per dimension."),
    span: float = typer.Option(SPAN, "--range", help="--traverse sets each dimension to values from -RANGE to RANGE."),
    frames: int = typer.Option(FRAMES, "--frames", "-n", help="Frames, endpoints included (at least 2)."),
    mode: Optional[str] = typer.Option(None, "--mode", help="slerp (great circle; suits Gaussian latents) or lerp (straight line); not with --traverse. [default: slerp]"),
    fmt: Optional[str] = typer.Option(None, "--format", help="png or gif; needed only for -o - (which is PNG by default)."),
    fps: float = typer.Option(10.0, "--fps", help="GIF frames per second, at most 50."),
    json_out: bool = typer.Option(False, "--json", help="Print what was written as JSON."),
    gen_options: Optional[dict] = None,
) -> None:
    """Interpolate between two seeds, two images (VAE, diffusion), a path of latents, or traverse dimensions."""
    from aigc_cli.cli.output import check_target, is_stdout, write_bytes
    from aigc_cli.cli.progress import passes_bar
    from aigc_cli.core.images import check_fps, render
    from aigc_cli.generation import load_generator
    from aigc_cli.interpolation import check_request, interpolate as run_interpolation

    target = check_target(output, "out.png")  # before any work
    kind = output_format(output, fmt, stream=target is not None and target.stream)
    if kind == "gif":
        check_fps(fps)
    request = dict(frames=frames, from_seed=from_seed, to_seed=to_seed, between=between, latents=latents,
                   traverse=traverse, mode=mode, from_prompt=from_prompt, to_prompt=to_prompt)
    check_request(**request)  # before the run loads: a clash of flags is instant
    gen = load_generator(run, common.device(), command="interpolate")
    with passes_bar(f"{gen.run.id}: interpolating") as progress:
        result = run_interpolation(gen, **request, span=span, options=gen_options, progress=progress)
    info = result.info
    text = {"Software": "aigc", "aigc:run": gen.run.id,
            "aigc:interpolate": ", ".join(f"{k}={v}" for k, v in info.items() if k not in ("run", "family"))}
    written = write_bytes(output, render(result.frames, kind, fps, text))

    for note in result.notes:
        common.warn(f"converted {note}")
    info.update(format=kind, output=written)
    if between is not None:
        info["converted"] = result.notes  # the warnings above, which -q hides
    if kind == "gif":
        info["fps"] = fps
    if json_out and not is_stdout(output):
        common.print_json(info)
    elif not is_stdout(output):
        rows = info["rows"]
        what = f"{rows} rows of {frames} frames" if rows > 1 else f"{frames} frames"
        which = ""
        if gen.num_classes is not None and gen_options.get("label") is None:
            which = f", class 0 of {gen.num_classes} (--label K for another)"
        common.info(f"wrote {what} from {gen.run.id} to {written}{which}")


def output_format(output: str, fmt: str | None, stream: bool = False) -> str:
    """png or gif, from --format or the -o suffix; '-' (stdout) and a device or FIFO (``stream``:
    -o /dev/null) are PNG unless --format gif."""
    from aigc_cli.core.errors import ConfigError
    from aigc_cli.core.images import FRAME_FORMATS

    if fmt is not None:
        fmt = fmt.lower()
        if fmt not in FRAME_FORMATS:
            raise ConfigError(f"unknown --format {fmt!r}; choose png or gif")
    named = output != "-" and not stream
    suffix = Path(output).suffix.lower().lstrip(".") if named else ""
    if named and suffix not in FRAME_FORMATS:
        raise ConfigError(f"-o {output}: write a .png (one strip or grid) or a .gif (an animation), or - for stdout")
    if fmt is not None and suffix and fmt != suffix:
        raise ConfigError(f"--format {fmt} does not match -o {output}")
    return fmt or suffix or "png"
