"""Image-generation metrics on the FID Inception-v3: FID, KID, Inception Score, precision/recall.

Light to import: torch loads only when a metric runs.

- ``fid_against_dataset(sampler_uint8_fn, dataset, n, weights_path=None, device="cpu")``: FID
  during training (None when no weights file is available);
- ``aigc_cli.metrics.evaluate``: sides -> statistics/features -> metrics, with the cache;
- ``aigc_cli.metrics.sides.resolve_side``: what a command-line argument names;
- ``aigc_cli.metrics.weights``: finding, downloading and checking the weights file;
- ``aigc_cli.metrics.registry.METRICS``: the registered metrics.
"""

from __future__ import annotations

from typing import Any

from aigc_cli.metrics.registry import METRICS, SAMPLE_N, Metric, run_metric


def measure(name: str, *sides: str, n: int = SAMPLE_N, seed: int = 0, ref_n: int | None = None, split: str = "train",
            resolution: int | None = None, weights: str | None = None, device: Any = "cpu", batch_size: int | None = None, reporter=None,
            generation: dict[str, Any] | None = None, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """``aigc eval NAME SIDE...`` as a function: ``measure("fid", "run3", "digits", n=2048)``.

    Each side is a run (sampled on the fly: ``n`` images from ``seed``, under its decode options
    ``generation``), an image folder, a dataset (``split``; at most ``ref_n`` images; with
    ``resolution``, folders and datasets are scaled and centre-cropped to it as training does) or a
    statistics file; ``options`` are the metric's own (metrics/registry.py: ``{"subsets": 50}``
    for KID; absent: their declared defaults). Returns what ``--json`` prints."""
    from aigc_cli.metrics.evaluate import EvalContext, Reporter
    from aigc_cli.core.options import check_seed
    from aigc_cli.metrics.sides import pair_captions, resolve_side

    ctx = EvalContext(weights=weights, device=device, batch_size=batch_size, reporter=reporter or Reporter())
    check_seed(seed)
    resolved = [resolve_side(s, split=split, n=n, seed=seed, ref_n=ref_n, options=generation or {},
                             resolution=resolution) for s in sides]
    pair_captions(resolved)
    return run_metric(name, resolved, ctx, **(options or {}))


def fid_against_dataset(sampler_uint8_fn, dataset, n, weights_path=None, device="cpu", ref_n=None, reporter=None):
    """See :func:`aigc_cli.metrics.evaluate.fid_against_dataset`."""
    from aigc_cli.metrics.evaluate import fid_against_dataset as _fid

    return _fid(sampler_uint8_fn, dataset, n, weights_path=weights_path, device=device, ref_n=ref_n, reporter=reporter)


__all__ = ["METRICS", "Metric", "fid_against_dataset", "measure", "run_metric"]
