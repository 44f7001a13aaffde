"""``aigc eval``: metrics (FID and friends) on the FID Inception-v3, and ``ppl`` for text runs.

Each side is a run (sampled on the fly), an image folder, a dataset (as ``train`` takes it) or a
statistics file; see ``aigc_cli.metrics.sides`` for how one is told from the other. ``ppl``
scores a text file with a text run (``aigc_cli.metrics.text``).
"""

from __future__ import annotations

import contextlib
import inspect
from typing import Any, Optional

import typer

from aigc_cli.cli import common
from aigc_cli.cli.options import add_options
from aigc_cli.metrics.registry import METRICS, SAMPLE_N
from aigc_cli.models.registry import generation_options

# A run side is sampled with its family's decode options (diffusion's steps, ...), if any.
with_generation = add_options(generation_options("decode", "eval fid"), into="gen_options")

app = typer.Typer(
    help="Evaluate models: FID, KID, IS, precision/recall (pytorch-fid / torch-fidelity compatible) of image "
    "runs; bits per character and perplexity (ppl) of text runs.",
    no_args_is_help=True,
)

_SIDE_HELP = (
    "A run (id, name or 'last'; sampled on the fly), a folder of images, a dataset as 'train' takes it "
    "(name or file), or a statistics .npz."
)


def _n_opt():
    return typer.Option(SAMPLE_N, "-n", "--n", min=1, help="Images sampled from a run side.")


def _seed_opt():
    return typer.Option(0, "--seed", help="Seed for sampling a run side.")


def _ref_n_opt():
    return typer.Option(
        None, "--ref-n", min=2, help="At most this many images from a folder or dataset side (default: all)."
    )


def _split_opt():
    return typer.Option("train", "--split", help="Split of a dataset side: train or test.")


def _resolution_opt():
    from aigc_cli.cli.datasets import RESOLUTION  # declared once, on train's option

    return typer.Option(None, "--resolution", min=RESOLUTION.minimum, max=RESOLUTION.maximum,
                        help="Scale the images of folder and dataset sides so their short side is N px, then "
                        "centre-crop them to N x N, as 'train --resolution N' does (give a run's training "
                        "resolution to compare like with like). Runs and statistics files are as they are.")


def _weights_opt():
    return typer.Option(
        None,
        "--inception-weights",
        help="pt_inception-2015-12-05-6726825d.pth (else $AIGC_INCEPTION_WEIGHTS, the cache, or a download).",
    )


def _batch_opt():
    return typer.Option(None, "--batch-size", min=1, help="Images per network batch (default: 64 on CPU, sized to GPU memory).")


def _json_opt():
    return typer.Option(False, "--json", help="Print the result as JSON on stdout.")


class _CliReporter:
    """Messages, warnings and rich progress bars on stderr; nothing with --quiet."""

    def __init__(self):
        self._download = None

    def info(self, message: str) -> None:
        common.info(message)

    def warn(self, message: str) -> None:
        common.warn(message)

    @contextlib.contextmanager
    def progress(self, label: str, total: int | None):
        if common.settings.quiet:
            yield lambda k: None
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()]
        with Progress(*columns, console=common.console(), transient=True) as bar:
            task = bar.add_task(label, total=total)
            yield lambda k: bar.advance(task, k)

    def download_progress(self, url: str):
        if common.settings.quiet:
            return None
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

        bar = Progress(TextColumn("Inception weights"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                       console=common.console(), transient=True)  # fmt: skip
        task = bar.add_task("download", total=None)
        bar.start()
        self._download = bar
        return lambda done, total: bar.update(task, completed=done, total=total)

    def download_done(self) -> None:
        if self._download is not None:
            self._download.stop()
            self._download = None


def _context(inception_weights: Optional[str], batch_size: Optional[int]):
    from aigc_cli.metrics.evaluate import EvalContext

    return EvalContext(weights=inception_weights, device=common.device(), batch_size=batch_size, reporter=_CliReporter())


def _sides(specs: list[str], split: str, n: int, seed: int, ref_n: Optional[int], gen_options: dict,
           resolution: Optional[int] = None):
    from aigc_cli.metrics.sides import resolve_side

    return [resolve_side(s, split=split, n=n, seed=seed, ref_n=ref_n, options=gen_options, resolution=resolution)
            for s in specs]


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else str(value)


def _side_rows(result: dict[str, Any], names: list[str]) -> list[list[Any]]:
    rows = [["", *[n.upper() for n in names]]]
    rows.append(["source", *[result[n]["label"] for n in names]])
    rows.append(["kind", *[result[n]["kind"] for n in names]])
    rows.append(["images", *[_fmt(result[n]["n"]) for n in names]])
    rows.append(["cached", *["yes" if result[n].get("cached") else "no" for n in names]])
    return rows


def _emit(result: dict[str, Any], json_out: bool, title: str, names: list[str], values: list[tuple[str, Any]]) -> None:
    if json_out:
        common.print_json(result)
        return
    if not common.settings.quiet:
        rows = _side_rows(result, names)
        header = rows[0]
        body = rows[1:]
        for label, value in values:
            body.append([label, _fmt(value), *[""] * (len(names) - 1)])
        sha = result.get("weights_sha256")
        body.append(["weights", (sha[:12] + "...") if sha else "unknown", *[""] * (len(names) - 1)])
        common.table(title, header, body)
    common.print_result("  ".join(f"{label} {_fmt(value)}" for label, value in values))


@app.command("stats")
@with_generation
def stats(
    spec: str = typer.Argument(..., metavar="SPEC", help="A run, a folder of images or a dataset."),
    output: str = typer.Option(..., "-o", "--output", help="The .npz to write (mu, sigma: pytorch-fid's format)."),
    n: int = _n_opt(),
    seed: int = _seed_opt(),
    ref_n: Optional[int] = _ref_n_opt(),
    split: str = _split_opt(),
    resolution: Optional[int] = _resolution_opt(),
    inception_weights: Optional[str] = _weights_opt(),
    batch_size: Optional[int] = _batch_opt(),
    json_out: bool = _json_opt(),
    gen_options: Optional[dict] = None,
) -> None:
    """Save FID statistics (float64 mean and covariance of the pool features) to a .npz."""
    from aigc_cli.metrics.evaluate import compute_stats_file

    ctx = _context(inception_weights, batch_size)
    (side,) = _sides([spec], split, n, seed, ref_n, gen_options, resolution)
    result = compute_stats_file(side, output, ctx)
    if json_out:
        common.print_json(result)
    else:
        common.print_result(f"{output}  ({result['n']} images)")


def own_names(metric) -> dict[str, str]:
    """The metric options whose flag is not their name: a seed of its own is ``--<metric>-seed``
    (``--seed`` seeds the sampling of a run side), e.g. ``--kid-seed``."""
    return {"seed": f"{metric.name}_seed"}


def _metric_command(metric):
    """``aigc eval <metric>``, generated from its registry entry (metrics/registry.py): its sides
    as arguments, the options every side takes, the metric's own options (a ``seed`` of its own
    becomes ``--<metric>-seed``: ``--seed`` seeds the sampling), the run side's decode options."""
    from aigc_cli.cli.options import parameter, with_signature

    rename = own_names(metric)
    sides = [_param(f"side{i}", str, typer.Argument(
        ..., metavar=name, help=(f"{name.capitalize()} side: " if name not in ("A", "B") else "") + _SIDE_HELP))
        for i, name in enumerate(metric.side_names)]
    common_options = [
        _param("n", int, _n_opt()), _param("seed", int, _seed_opt()), _param("ref_n", Optional[int], _ref_n_opt()),
        _param("split", str, _split_opt()), _param("resolution", Optional[int], _resolution_opt()),
        _param("inception_weights", Optional[str], _weights_opt()),
        _param("batch_size", Optional[int], _batch_opt()),
    ]
    own = [parameter(o, rename.get(o.name)) for o in metric.options]
    keywords = {rename.get(o.name, o.name): o.name for o in metric.options}

    def command(n, seed, ref_n, split, resolution, inception_weights, batch_size, json_out, gen_options, **given):
        from aigc_cli.core.errors import OptionError
        from aigc_cli.core.options import check_seed
        from aigc_cli.metrics import measure

        check_seed(seed)  # the sampling's: an OptionError about "seed" below is then the metric's own
        specs = [given.pop(f"side{i}") for i in range(len(metric.side_names))]
        options = {keywords[k]: v for k, v in given.items()}
        try:
            result = measure(metric.name, *specs, n=n, seed=seed, ref_n=ref_n, split=split, resolution=resolution,
                             weights=inception_weights,
                             device=common.device(), batch_size=batch_size, reporter=_CliReporter(),
                             generation=gen_options, options=options)
        except OptionError as e:  # the metric's own seed is --<metric>-seed here, not --seed
            if e.option in rename:
                raise OptionError(rename[e.option], e.problem) from None
            raise
        _emit(result, json_out, metric.title, ["a", "b"][: metric.sides], [(k, result[k]) for k in metric.results])

    command.__name__ = f"eval_{metric.name}"
    params = [*sides, *common_options, *own, _param("json_out", bool, _json_opt()),
              inspect.Parameter("gen_options", inspect.Parameter.KEYWORD_ONLY, default=None,
                                annotation=Optional[dict])]
    return with_generation(with_signature(command, params, metric.description))


def _param(name: str, annotation, info) -> inspect.Parameter:
    """A typer parameter declared the classic way: its ``typer.Option``/``Argument`` as the default."""
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=annotation)


for _name in METRICS.names():
    app.command(_name)(_metric_command(METRICS.get(_name)))


@app.command("ppl")
def ppl(
    run: str = typer.Argument(..., metavar="RUN", help="A text run: id, name or 'last'."),
    file: str = typer.Argument(..., metavar="FILE", help="A UTF-8 text file, or - for standard input."),
    json_out: bool = _json_opt(),
) -> None:
    """Bits per character, bits per token and perplexity of a text run on FILE (scored as in training)."""
    from aigc_cli.cli.progress import passes_bar
    from aigc_cli.metrics.text import perplexity

    with passes_bar(f"{run}: scoring") as progress:  # a bar on a terminal: a large file takes a while
        result = perplexity(run, file, common.device(), progress)
    if json_out:
        common.print_json(result)
        return
    if not common.settings.quiet:
        rows = [["run", result["run"]], ["file", result["file"]],
                ["model", f"{result['arch']}, {result['tokenizer']} tokens, context {result['context']}"],
                ["tokens", result["tokens"]], ["characters", result["characters"]],
                ["nats/token", _fmt(result["nats_per_token"])], ["seconds", _fmt(result["seconds"])]]
        common.table("Perplexity", ["", "value"], rows)
    values = [("bits_per_char", result["bits_per_char"]), ("bits_per_token", result["bits_per_token"]),
              ("perplexity", result["perplexity"])]
    common.print_result("  ".join(f"{label} {_fmt(value)}" for label, value in values))


@app.command("agreement")
@with_generation
def agreement(
    run: str = typer.Argument(..., metavar="RUN", help="A captioned run: id, name or 'last'."),
    dataset: str = typer.Argument(..., metavar="DATASET", help="A captioned dataset whose captions are drawn "
                                  "(shapes-captions, a folder with metadata.jsonl or .txt captions)."),
    n: int = typer.Option(1000, "-n", "--n", min=1, help="Images drawn, one per caption picked from DATASET."),
    seed: int = _seed_opt(),
    split: str = _split_opt(),
    clip: Optional[str] = typer.Option(None, "--clip", help="A CLIP model (folder or hub id, safetensors) for a CLIP "
                                       "score; without it, shapes-captions' captions are judged by their factors."),
    json_out: bool = _json_opt(),
    gen_options: Optional[dict] = None,
) -> None:
    """Text-image agreement of a captioned run: does it draw what its captions say (docs/text-to-image.md)."""
    from aigc_cli.core.options import check_seed
    from aigc_cli.metrics.agreement import agreement as measure_agreement

    check_seed(seed)
    result = measure_agreement(run, dataset, split=split, n=n, seed=seed, clip=clip, device=common.device(),
                               generation=gen_options)
    if json_out:
        common.print_json(result)
        return
    if result["judge"] == "clip":
        values = [("clip_score", result["clip_score"]), ("std", result["clip_score_std"])]
    else:
        values = [(k, result[k]) for k in ("shape", "colour", "size", "position", "all")]
    common.print_result("  ".join(f"{label} {_fmt(value)}" for label, value in values))
