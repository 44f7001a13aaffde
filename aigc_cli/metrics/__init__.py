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

from aigc_cli.metrics.registry import METRICS, Metric, run_metric


def fid_against_dataset(sampler_uint8_fn, dataset, n, weights_path=None, device="cpu", ref_n=None, reporter=None):
    """See :func:`aigc_cli.metrics.evaluate.fid_against_dataset`."""
    from aigc_cli.metrics.evaluate import fid_against_dataset as _fid

    return _fid(sampler_uint8_fn, dataset, n, weights_path=weights_path, device=device, ref_n=ref_n, reporter=reporter)


__all__ = ["METRICS", "Metric", "fid_against_dataset", "run_metric"]
