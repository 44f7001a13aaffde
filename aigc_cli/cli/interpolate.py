"""``aigc interpolate``: walk the latent space of a run as a PNG strip or a GIF."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple

import typer

from aigc_cli.cli import common
from aigc_cli.cli.options import add_options
from aigc_cli.models.registry import generation_options

# A family's generation option named like one of interpolate's own flags gets this one here.
RENAME = {"steps": "sample_steps"}


@add_options(generation_options("decode"), into="gen_options", rename=RENAME)
def interpolate(
    run: str = typer.Argument(..., help="Run id, name or 'last'."),
    output: str = typer.Option(..., "-o", "--output", help="out.png (one strip, or a grid for --traverse), out.gif (an animation), or - for stdout."),
    from_seed: Optional[int] = typer.Option(None, "--from-seed", help="Seed of the first latent (random if omitted); with --traverse, the base latent (the zero vector if omitted)."),
    to_seed: Optional[int] = typer.Option(None, "--to-seed", help="Seed of the last latent (random if omitted)."),
    between: Optional[Tuple[Path, Path]] = typer.Option(None, "--between", help="Runs with an encoder (VAE): interpolate between the encodings of two images (A.png B.png)."),
    latents: Optional[Path] = typer.Option(None, "--latents", help="A .npy file of 2 or more latent rows: the path to follow (one row: the base of --traverse)."),
    traverse: Optional[str] = typer.Option(None, "--traverse", help="Vary latent dimensions one at a time: 'all', 3, 0,2,5 or 0-7; one row per dimension."),
    span: float = typer.Option(3.0, "--range", help="--traverse sets each dimension to values from -RANGE to RANGE."),
    steps: int = typer.Option(8, "--steps", "-n", help="Frames, endpoints included (at least 2)."),
    mode: Optional[str] = typer.Option(None, "--mode", help="slerp (great circle; suits Gaussian latents) or lerp (straight line); not with --traverse. [default: slerp]"),
    fmt: Optional[str] = typer.Option(None, "--format", help="png or gif; needed only for -o - (which is PNG by default)."),
    fps: float = typer.Option(10.0, "--fps", help="GIF frames per second, at most 50."),
    label: Optional[int] = typer.Option(None, "--label", help="Class for conditional runs (default 0)."),
    json_out: bool = typer.Option(False, "--json", help="Print what was written as JSON."),
    gen_options: Optional[dict] = None,
) -> None:
    """Interpolate between two seeds, two images (VAE), a path of latents, or traverse dimensions."""

    import torch

    from aigc_cli.cli.output import check_target, is_stdout, write_bytes
    from aigc_cli.cli.progress import passes_bar
    from aigc_cli.core.errors import ConfigError
    from aigc_cli.core.images import check_fps, image_files, read_images, render
    from aigc_cli.generation import load_generator, load_latents
    from aigc_cli.models import latent as L
    from aigc_cli.models.registry import families_where

    L.check_steps(steps)
    if mode is not None and mode not in L.MODES:
        raise ConfigError(f"unknown --mode {mode!r}; choose slerp or lerp")
    target = check_target(output, "out.png")  # before any work
    kind = output_format(output, fmt, stream=target is not None and target.stream)
    if kind == "gif":
        check_fps(fps)
    if traverse is not None:
        if to_seed is not None or between is not None:
            raise ConfigError("--traverse varies one latent (--from-seed or the first --latents row); drop --to-seed and --between")
        if mode is not None:  # None is the default: only an explicit --mode gets here
            raise ConfigError("--mode does not apply to --traverse (each row is a straight line along one axis); drop --mode")
        if latents is not None and from_seed is not None:
            raise ConfigError("--traverse starts from --from-seed or the first --latents row, not both")
    else:
        given = [name for name, v in (("--between", between), ("--latents", latents)) if v is not None]
        if len(given) > 1:
            raise ConfigError("give --between or --latents, not both")
        if given and (from_seed is not None or to_seed is not None):
            raise ConfigError(f"{given[0]} gives the endpoints; drop --from-seed and --to-seed")

    gen = load_generator(run, common.device(), command="interpolate")
    options = gen.options(gen_options)
    family = gen.family.spec
    if between is not None and not gen.can_encode:
        takers = ", ".join(families_where(lambda s: s.encoder is not None))
        raise ConfigError(f"--between needs a run with an encoder ({takers}); {gen.run.id} is a {family.name} run")
    if traverse is not None and not family.traverse:
        takers = ", ".join(families_where(lambda s: s.traverse))
        raise ConfigError(f"--traverse needs a run whose latent dimensions mean something ({takers}); "
                          f"{gen.run.id} is a {family.name} run")
    if gen.num_classes is not None and between is not None and label is None:
        raise ConfigError(f"{gen.run.id} is class-conditional: pass --label, the class of both images")
    default_class = label is None and gen.num_classes is not None
    if default_class:
        label = 0  # conditional runs need a class; --json, the PNG and the message report it
    one_label = gen.labels(1, label)
    info: dict = {"run": gen.run.id, "family": family.name, "steps": steps, "label": label, **options}
    notes: list[str] = []

    if traverse is not None:
        dims = L.parse_dims(traverse, gen.latent_dim)
        if latents is not None:
            base = load_latents(str(latents), gen.latent_dim)[0]
            info["latents"] = str(latents)
        elif from_seed is not None:
            base = gen.latents(1, from_seed)[0]
        else:
            base = torch.zeros(gen.latent_dim)  # the prior's mode
        z = L.traversal(base, dims, steps, span)  # (dims, steps, D)
        info.update(traverse=dims, range=span, from_seed=from_seed)
    else:
        if between is not None:
            files, in_folders = image_files(list(between))
            if in_folders:
                raise ConfigError("--between takes two image files, not folders")
            images, notes = read_images(files, gen.image_shape)
            points = gen.encode(images, one_label.repeat(2) if one_label is not None else None, **options)
            info["between"] = [str(p) for p in between]
        elif latents is not None:
            points = load_latents(str(latents), gen.latent_dim)
            if len(points) < 2:
                raise ConfigError(f"{latents} holds 1 latent; an interpolation needs 2 or more rows")
            info["latents"] = str(latents)
        else:
            from_seed = common.random_seed() if from_seed is None else from_seed
            to_seed = common.random_seed() if to_seed is None else to_seed
            points = torch.cat([gen.latents(1, from_seed), gen.latents(1, to_seed)])
            info.update(from_seed=from_seed, to_seed=to_seed)
        mode = mode or "slerp"
        z = L.latent_path(points, steps, mode)[None]  # (1, steps, D)
        info["mode"] = mode

    rows = z.shape[0]
    flat = z.reshape(-1, gen.latent_dim)
    labels = one_label.repeat(len(flat)) if one_label is not None else None
    with passes_bar(f"{gen.run.id}: interpolating") as progress:
        frames = gen.generate(flat, labels, progress=progress, **options).view(rows, steps, *gen.image_shape)
    text = {"Software": "aigc", "aigc:run": gen.run.id,
            "aigc:interpolate": ", ".join(f"{k}={v}" for k, v in info.items() if k not in ("run", "family"))}
    written = write_bytes(output, render(frames, kind, fps, text))

    for note in notes:
        common.warn(f"converted {note}")
    info.update(format=kind, output=written, frames=steps, rows=rows)
    if between is not None:
        info["converted"] = notes  # the warnings above, which -q hides
    if kind == "gif":
        info["fps"] = fps
    if json_out and not is_stdout(output):
        common.print_json(info)
    elif not is_stdout(output):
        what = f"{rows} rows of {steps} frames" if rows > 1 else f"{steps} frames"
        which = f", class 0 of {gen.num_classes} (--label K for another)" if default_class else ""
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
