"""``aigc datasets``: list and inspect datasets."""

from __future__ import annotations

import contextlib
from typing import Iterator, Optional

import typer

from aigc_cli.cli import common
from aigc_cli.training.options import DATA_OPTIONS

RESOLUTION = next(o for o in DATA_OPTIONS if o.name == "resolution")  # declared once, for train
CAPTION_COLUMN = next(o for o in DATA_OPTIONS if o.name == "caption_column")

app = typer.Typer(help="List, inspect and prepare datasets.", no_args_is_help=True)

SPEC_HELP = ("A dataset or text corpus name (see `aigc datasets list`), an image folder, an IDX file, a .npy/.npz "
             "file, or a .txt file.")


@contextlib.contextmanager
def progress_bar() -> Iterator:
    """Yield a ``progress(description, done, total)`` callback: rich bars on a terminal stderr,
    one line per step otherwise, None with --quiet."""
    if common.settings.quiet:
        yield None
        return
    if not common.console().is_terminal:  # logs: one line per step, no bar redraws
        seen: set[str] = set()

        def log(description: str, done: int, total: int | None) -> None:
            if description not in seen:
                seen.add(description)
                common.info(description)

        yield log
        return
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

    tasks: dict[str, int] = {}
    with Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                  console=common.console(), transient=True) as bar:

        def update(description: str, done: int, total: int | None) -> None:
            if description not in tasks:
                tasks[description] = bar.add_task(description, total=total)
            bar.update(tasks[description], completed=done, total=total)

        yield update


def load(spec: str, split: str = "train", resolution: int | None = None, caption_column: str = CAPTION_COLUMN.default):
    """load_dataset with a progress bar: what every command that takes --dataset should call."""
    from aigc_cli.data import load_dataset

    with progress_bar() as progress:
        return load_dataset(spec, split, progress=progress, resolution=resolution, caption_column=caption_column)


def caption_column_option():
    return typer.Option(CAPTION_COLUMN.default, "--caption-column", help=CAPTION_COLUMN.help)


def captions_line(ds) -> str:
    """"950 of 1,000 images (50 without: trained unconditionally)"; "" for a set without captions."""
    if ds.captions is None:
        return ""
    n, without = len(ds), len(ds) - ds.captioned
    return f"{ds.captioned:,} of {n:,} images" + (f" ({without:,} without: trained unconditionally)" if without else "")


@app.command("list")
def list_datasets(json_out: bool = typer.Option(False, "--json", help="Print as JSON.")) -> None:
    """List the named datasets (images) and text corpora, and whether they are downloaded, and the
    prepared datasets (aigc datasets prepare)."""
    from aigc_cli.data import CORPORA, DATASETS
    from aigc_cli.data.named import download_status
    from aigc_cli.data.text import corpus_status

    rows = []
    for name in DATASETS.names():
        entry = DATASETS.get(name)
        status = (download_status(name) or "unknown") if entry.needs_download else "built-in"
        rows.append({"name": name, "kind": "images", "description": entry.description, "status": status})
    for name in CORPORA.names():
        entry = CORPORA.get(name)
        status = (corpus_status(name) or "unknown") if entry.needs_download else "built-in"
        rows.append({"name": name, "kind": "text", "description": entry.description, "status": status})
    from aigc_cli.data import cache

    for name, entry in sorted(cache.registry().items()):
        res = entry.get("resolution")
        rows.append({"name": name, "kind": "images", "status": "prepared",
                     "description": f"{entry.get('source')}" + (f" at {res} px" if res else ""),
                     "resolution": res, "cache": str(cache.root() / f"{entry.get('key')}.npy")})
    if json_out:
        common.print_json(rows)
    else:
        common.table(None, ["name", "kind", "status", "description"],
                     [[r["name"], r["kind"], r["status"], r["description"]] for r in rows], result=True)


@app.command("prepare")
def prepare(
    folder: str = typer.Argument(..., help="A folder of images (searched recursively; subfolders are classes)."),
    name: str = typer.Option(..., "--name", help="The name to train on it by: --dataset NAME."),
    resolution: Optional[int] = typer.Option(
        None, "--resolution", help=RESOLUTION.help, min=RESOLUTION.minimum, max=RESOLUTION.maximum,
        show_default=False),
    caption_column: str = caption_column_option(),
    json_out: bool = typer.Option(False, "--json", help="Print as JSON."),
) -> None:
    """Decode a folder of images once into the cache under a name; later runs memory-map it (and
    its captions, as they are now: prepare again after editing them)."""
    from pathlib import Path

    from aigc_cli.data import cache

    with progress_bar() as progress:
        ds = cache.prepare(Path(folder).expanduser(), name, resolution, progress, caption_column)
    entry = cache.registry()[name]
    data = {**ds.info(), "cache": str(cache.root() / f"{entry['key']}.npy")}
    if json_out:
        common.print_json(data)
        return
    c, h, w = ds.shape
    common.info(f"prepared {name}: {len(ds)} images of {c}x{h}x{w} in {data['cache']}")
    if ds.captions is not None:
        common.info(f"captions: {captions_line(ds)}")
    if ds.skip_summary():
        common.info(ds.skip_summary())


@app.command("rm")
def rm(name: str = typer.Argument(..., help="A prepared dataset's name (see `aigc datasets list`).")) -> None:
    """Remove a prepared dataset and its cache file."""
    from aigc_cli.data import cache

    cache.remove_prepared(name)
    common.info(f"removed {name}")


@app.command("prune")
def prune(json_out: bool = typer.Option(False, "--json", help="Print as JSON.")) -> None:
    """Remove the cached decodes of folders that no prepared name holds (a run decodes its folder
    again when it needs it), and temporary files left by writes that were killed."""
    from aigc_cli.data import cache

    entries, freed = cache.prune()
    if json_out:
        common.print_json({"entries": entries, "bytes": freed})
    else:
        common.info(f"removed {entries} cached dataset{'s' if entries != 1 else ''}, {freed / 1e6:.1f} MB")


def _is_text(spec: str) -> bool:
    from pathlib import Path

    from aigc_cli.data import CORPORA

    return spec in CORPORA or Path(spec).suffix.lower() in (".txt",)


@app.command("info")
def info(
    spec: str = typer.Argument(..., help=SPEC_HELP),
    split: str = typer.Option("train", "--split", help="train or test (named datasets only; ignored for paths)."),
    resolution: Optional[int] = typer.Option(
        None, "--resolution", help=RESOLUTION.help, min=RESOLUTION.minimum, max=RESOLUTION.maximum,
        show_default=False),
    caption_column: str = caption_column_option(),
    json_out: bool = typer.Option(False, "--json", help="Print as JSON."),
) -> None:
    """Load a dataset and show its size, shape, classes, captions and fingerprint (a text corpus:
    its characters, held-out part and alphabet)."""
    if _is_text(spec):
        if resolution is not None:
            from aigc_cli.core.errors import ConfigError

            raise ConfigError(f"--resolution applies to images; {spec} is a text corpus")
        return _corpus_info(spec, split, json_out)
    ds = load(spec, split, resolution, caption_column)
    data = ds.info()
    data["skipped"] = ds.skipped
    from aigc_cli.data import cache

    prepared = cache.registry().get(spec)
    if prepared is not None:
        data["cache"] = str(cache.root() / f"{prepared['key']}.npy")
    if json_out:
        common.print_json(data)
        return
    c, h, w = ds.shape
    rows = [
        ["name", ds.name],
        ["size", len(ds)],
        ["shape", f"{c}x{h}x{w}"],
        ["channels", c],
        ["classes", data["classes"] if data["classes"] is not None else "unlabelled"],
        ["class names", ", ".join(ds.classes) if ds.classes else ""],
        ["resolution", ds.resolution if ds.resolution is not None else ""],
        ["upscaled", ds.upscaled if ds.resolution is not None else ""],
        ["captions", captions_line(ds)],
        ["skipped files", ds.skip_reasons() or 0],
        ["fingerprint", ds.fingerprint],
        ["cache", data.get("cache", "")],
    ]
    common.table(None, ["", ""], [r for r in rows if r[1] != ""], result=True)


def _corpus_info(spec: str, split: str, json_out: bool) -> None:
    from aigc_cli.data import load_corpus

    with progress_bar() as progress:
        corpus = load_corpus(spec, split, progress=progress)
    data = {k: v for k, v in corpus.info().items() if k not in ("shape", "classes", "class_names")}
    if json_out:
        common.print_json(data)
        return
    rows = [["name", corpus.name], ["characters", f"{len(corpus.text):,}"], ["held out", f"{len(corpus.held_out):,}"],
            ["alphabet", f"{len(corpus.alphabet)} characters: {corpus.alphabet!r}"[:120]], ["files", corpus.files],
            ["fingerprint", corpus.fingerprint]]
    common.table(None, ["", ""], rows, result=True)
