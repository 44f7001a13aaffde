"""A run's training curves: the series of metrics.jsonl (losses, evaluation metrics) over steps,
as data (``aigc runs plot --json``) and as a PNG (``runs plot``, and curves.png in the run folder)."""

from __future__ import annotations

import math

from aigc_cli.core.errors import RunError
from aigc_cli.core.io import atomic_write_bytes
from aigc_cli.core.plot import line_charts_png
from aigc_cli.runs.store import Run

NOT_PLOTTED = ("step", "epoch", "images_per_s", "tokens_per_s")  # bookkeeping and speed, not quality
CURVES = "curves.png"


def run_series(run: Run) -> dict[str, list[tuple[int, float]]]:
    """quantity -> [(step, value), ...] in step order, for every numeric quantity the run logged."""
    out: dict[str, list[tuple[int, float]]] = {}
    for row in run.read_metrics():
        for key, value in row.items():
            if key in NOT_PLOTTED or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if math.isfinite(value):
                out.setdefault(key, []).append((row["step"], float(value)))
    return out


def curves_png(runs: list[Run], series: dict[str, dict] | None = None) -> bytes:
    """One panel per quantity any of ``runs`` logged, one colour per run; ``series`` (run id ->
    ``run_series``), when the caller has read them already."""
    every = series if series is not None else {run.id: run_series(run) for run in runs}
    empty = [rid for rid, series in every.items() if not series]
    if empty:
        raise RunError(f"{', '.join(empty)} logged no metrics yet (metrics.jsonl is empty); train for a few steps first")
    quantities = list(dict.fromkeys(q for series in every.values() for q in series))
    panels = {q: {rid: series.get(q, []) for rid, series in every.items()} for q in quantities}
    return line_charts_png(panels, labels=list(every))


def write_curves(run: Run) -> None:
    """curves.png in the run folder, rewritten atomically (the loop calls this at each epoch)."""
    series = run_series(run)  # metrics.jsonl read once, for the test and the drawing
    if series:
        atomic_write_bytes(run.path / CURVES, curves_png([run], {run.id: series}))
