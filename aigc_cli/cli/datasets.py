"""``aigc datasets``: list and inspect datasets."""

from __future__ import annotations

import contextlib
from typing import Iterator

import typer

from aigc_cli.cli import common

app = typer.Typer(help="List and inspect datasets.", no_args_is_help=True)

SPEC_HELP = "A dataset name (see `aigc datasets list`), an image folder, an IDX file, or a .npy/.npz file."


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


def load(spec: str, split: str = "train"):
    """load_dataset with a progress bar: what every command that takes --dataset should call."""
    from aigc_cli.data import load_dataset

    with progress_bar() as progress:
        return load_dataset(spec, split, progress=progress)


@app.command("list")
def list_datasets(json_out: bool = typer.Option(False, "--json", help="Print as JSON.")) -> None:
    """List the named datasets and whether they are downloaded."""
    from aigc_cli.data import DATASETS
    from aigc_cli.data.named import download_status

    rows = []
    for name in DATASETS.names():
        entry = DATASETS.get(name)
        status = (download_status(name) or "unknown") if entry.needs_download else "built-in"
        rows.append({"name": name, "description": entry.description, "status": status})
    if json_out:
        common.print_json(rows)
    else:
        common.table(None, ["name", "status", "description"], [[r["name"], r["status"], r["description"]] for r in rows])


@app.command("info")
def info(
    spec: str = typer.Argument(..., help=SPEC_HELP),
    split: str = typer.Option("train", "--split", help="train or test (named datasets only; ignored for paths)."),
    json_out: bool = typer.Option(False, "--json", help="Print as JSON."),
) -> None:
    """Load a dataset and show its size, shape, classes and fingerprint."""
    ds = load(spec, split)
    data = ds.info()
    data["skipped"] = ds.skipped
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
        ["skipped files", ds.skip_reasons() or 0],
        ["fingerprint", ds.fingerprint],
    ]
    common.table(None, ["", ""], [r for r in rows if r[1] != ""])
