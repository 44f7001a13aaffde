"""``aigc sample``: images from a trained run (a grid, a folder of PNGs, or PNG on stdout), or
text from a text run (streamed to stdout as it is generated, or written to a file). What a run's
family produces picks the renderer (models/registry.py's ``produces``)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from aigc_cli.cli import common
from aigc_cli.cli.options import add_options
from aigc_cli.models.registry import generation_options


@add_options([*generation_options("draw"), *generation_options("condition"), *generation_options("decode")],
             into="gen_options")
def sample(
    run: str = typer.Argument(..., help="Run id, name or 'last'."),
    n: Optional[int] = typer.Option(None, "-n", "--num", help="How many images (default 64) or text continuations (default 1)."),
    output: Optional[str] = typer.Option(None, "-o", "--output", help="Images: grid.png, a folder (DIR/ or existing) for "
                                         "one PNG each, or - for stdout. Text: a file, or - (the default) for stdout."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed for the latents (random if omitted; printed with --json)."),
    latents: Optional[Path] = typer.Option(None, "--latents", help="A .npy file of latent vectors, one row per image."),
    nrow: Optional[int] = typer.Option(None, "--nrow", help="Images per grid row (default: square)."),
    save_latents: Optional[Path] = typer.Option(
        None, "--save-latents", help="Also write the latents used to FILE.npy, one row per image (input for --latents)."),
    json_out: bool = typer.Option(False, "--json", help="Print what was written as JSON."),
    gen_options: Optional[dict] = None,
) -> None:
    """Sample images or text from a trained run."""
    from aigc_cli.core.errors import ConfigError
    from aigc_cli.core.options import check_seed
    from aigc_cli.generation import load_generator

    if n is not None and n < 1:
        raise ConfigError(f"-n must be at least 1, got {n}")
    if seed is not None:
        check_seed(seed)  # before anything is loaded or printed
    gen = load_generator(run, common.device(), command="sample")
    args = dict(n=n, output=output, seed=seed, latents=latents, nrow=nrow, save_latents=save_latents,
                json_out=json_out, gen_options=gen_options)
    RENDERERS[gen.family.spec.produces](gen, **args)


def sample_images(gen, n, output, seed, latents, nrow, save_latents, json_out, gen_options) -> None:
    import io
    import time

    import numpy as np

    from aigc_cli.cli.output import check_target, is_dir_target, is_stdout, write_bytes
    from aigc_cli.cli.progress import passes_bar
    from aigc_cli.core.errors import ConfigError
    from aigc_cli.core.images import make_grid, png_bytes, to_uint8
    from aigc_cli.generation import load_latents

    n = 64 if n is None else n
    if output is None:
        raise ConfigError("sample writes images for this run: give -o grid.png, -o DIR/ or -o -")
    # Every target checked before any work; a device or FIFO (-o /dev/null) has no name to check.
    folder = not is_stdout(output) and is_dir_target(output)
    target = check_target(str(Path(output) / "00000.png") if folder else output, "grid.png")
    if not folder and target is not None and not target.stream and target.suffix != ".png":
        raise ConfigError(f"-o {output}: sample writes PNG; use a .png name, a folder (DIR/) or -")
    if save_latents is not None:
        saved = check_target(str(save_latents), "latents.npy")
        if saved is None or not saved.stream and saved.suffix != ".npy":
            raise ConfigError(f"--save-latents {save_latents}: use a .npy name")
    drawn = [o.flag for o in generation_options("draw") if gen_options.get(o.name) is not None]
    if latents is not None and (seed is not None or drawn):
        raise ConfigError(f"--latents gives the latent vectors; drop {' and '.join(['--seed', *drawn])}")
    options = gen.options(gen_options)
    prompts = read_prompts(gen, options)  # --prompt - of a captioned run: a folder of images per line
    if len(prompts) > 1 and not folder:
        raise ConfigError(f"--prompt - gave {len(prompts)} prompts: write them to a folder (-o DIR/), one "
                          "subfolder of images per prompt")
    if latents is not None:
        z = load_latents(str(latents), gen.latent_dim)
        n = len(z)
    else:
        seed = common.random_seed() if seed is None else seed
        z = gen.latents(n, seed, **options)
    text = {"Software": "aigc", "aigc:run": gen.run.id, "aigc:seed": "" if seed is None else str(seed)}
    if latents is not None:
        text["aigc:latents"] = str(latents)
    written: list[str] = []
    start = time.perf_counter()
    for p, prompt in enumerate(prompts):  # the same latents for every prompt: the prompts compare
        given = options if prompt is None else {**options, "prompt": prompt}
        cond = gen.conditioning(n, **given)
        with passes_bar(f"{gen.run.id}: sampling") as progress:
            images = to_uint8(gen.generate(z, cond, progress=progress, **options))  # (n, C, H, W)
        meta = {**text, "aigc:prompt": prompt} if prompt is not None else text
        if folder:
            where = Path(output).expanduser() / (prompt_folder(p, prompt) if len(prompts) > 1 else "")
            for i, image in enumerate(images):
                written.append(write_bytes(str(where / f"{i:05d}.png"), png_bytes(image, {**meta, "aigc:index": str(i)})))
        else:
            grid = make_grid(images, nrow=nrow)
            written.append(write_bytes(output, png_bytes(grid, {**meta, "aigc:index": f"0-{n - 1}"})))
    seconds = time.perf_counter() - start  # the model's cost at these options (diffusion: its steps)
    if len(prompts) > 1:
        options = {**options, "prompt": list(prompts)}

    if save_latents is not None:
        buffer = io.BytesIO()
        np.save(buffer, z.numpy().astype(np.float32), allow_pickle=False)
        write_bytes(str(save_latents), buffer.getvalue())

    total = n * len(prompts)
    summary = {"run": gen.run.id, "seed": seed, "n": n, "label": options.get("label"), **options, "outputs": written,
               "seconds": round(seconds, 4), "images_per_s": round(total / max(seconds, 1e-9), 1)}
    if save_latents is not None:
        summary["latents"] = str(save_latents)
    if json_out and not is_stdout(output):
        common.print_json(summary)
    elif not is_stdout(output):
        common.info(f"wrote {total} images from {gen.run.id} (seed {seed}) to {written[0] if len(written) == 1 else output}")


def read_prompts(gen, options: dict) -> list[str | None]:
    """The prompts to draw, in order: ``--prompt -`` of a captioned run reads one a line from
    standard input (blank lines skipped); otherwise the one given (or None: the run's defaults)."""
    import sys

    from aigc_cli.core.errors import ConfigError

    prompt = options.get("prompt")
    if prompt != "-" or "prompt" not in gen.conditions:
        return [prompt]
    lines = [line.strip() for line in sys.stdin.read().splitlines() if line.strip()]
    if not lines:
        raise ConfigError("--prompt -: standard input holds no prompt; give one a line")
    return lines


def prompt_folder(index: int, prompt: str) -> str:
    """``003-a-red-square``: the subfolder of one prompt's images, in input order."""
    import re

    slug = re.sub(r"[^a-z0-9]+", "-", prompt.lower()).strip("-")[:48].rstrip("-")
    return f"{index:03d}-{slug}" if slug else f"{index:03d}"


# Names that promise binary contents: text written under them would mislead whatever opens them.
BINARY_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff", ".npy", ".npz", ".onnx",
                   ".safetensors")
SEPARATOR = "\n---\n"  # between continuations on stdout (-n 2 and more); --json keeps them apart instead


def sample_text(gen, n, output, seed, latents, nrow, save_latents, json_out, gen_options) -> None:
    """Continuations of --prompt, SEPARATOR between them. To stdout they stream: the n are drawn
    together, one token of each per step (a seed gives the same text whatever reads it), so the
    first is written token by token as it is drawn, and the others the moment they are done,
    which is when the first ends. One after another instead would take n times as long (a step
    costs about the same for 1 or 3 sequences on the CPU) and give a seed other texts."""
    import sys
    import time

    from aigc_cli.cli.output import check_target, is_stdout, write_bytes
    from aigc_cli.core import distributed
    from aigc_cli.core.errors import ConfigError
    from aigc_cli.core.faults import fault_point
    from aigc_cli.core.threads import used as used_threads

    for given, flag in ((latents, "--latents"), (nrow, "--nrow"), (save_latents, "--save-latents")):
        if given is not None:
            raise ConfigError(f"{flag} does not apply to {gen.run.id}, a text run")
    options = gen.options(gen_options)
    n = 1 if n is None else n
    output = "-" if output is None else output
    target = check_target(output, "samples.txt")  # before any work
    if target is not None and target.suffix in BINARY_SUFFIXES:
        raise ConfigError(f"-o {output}: a text run's samples are text; use a .txt name (or any name that is not "
                          "an image's, an array's or a model's), or - for stdout")
    prompt = options.pop("prompt", None)
    if prompt == "-":
        prompt = sys.stdin.read()
    seed = common.random_seed() if seed is None else seed
    text, _ = gen.prompt_ids(prompt)
    stream = is_stdout(output) and not json_out and distributed.is_main()
    on_tokens, streamed = None, []
    if stream:
        decode = gen.tokenizer.stream()
        sys.stdout.write(text)

        def on_tokens(ids):  # (n,) this step's tokens: the first continuation's goes out now
            piece = decode(ids[:1].tolist())
            streamed.append(piece)
            sys.stdout.write(piece)
            sys.stdout.flush()
            fault_point("sample:token")

    start = time.perf_counter()
    ids = gen.generate(prompt, n, seed=seed, on_tokens=on_tokens, **options)  # (n, length)
    seconds = time.perf_counter() - start
    continuations = [gen.tokenizer.decode(row.tolist()) for row in ids]
    if stream:
        # What the stream decoder held back (a byte tokenizer's unfinished last character), then
        # the others: the same bytes as the whole text written at once.
        rest = continuations[0][len("".join(streamed)):]
        sys.stdout.write(rest + "".join(SEPARATOR + text + c for c in continuations[1:]) + "\n")
        sys.stdout.flush()
    elif not json_out or not is_stdout(output):
        body = SEPARATOR.join(text + c for c in continuations) + "\n"
        written = write_bytes(output, body.encode("utf-8"), binary=False)
        if not is_stdout(output):
            common.info(f"wrote {n} continuation(s) from {gen.run.id} (seed {seed}) to {written}")
    if json_out:
        shown = {**gen.resolved("decode", options), **options}  # the decode options in effect, defaults too
        common.print_json({"run": gen.run.id, "seed": seed, "n": n, "prompt": text, **shown,
                           "continuations": continuations, "output": None if is_stdout(output) else output,
                           "seconds": round(seconds, 4), "tokens_per_s": round(ids.numel() / max(seconds, 1e-9), 1),
                           "threads": used_threads()})


RENDERERS = {"images": sample_images, "text": sample_text}  # by what the run's family produces
