"""The metrics ``aigc eval`` knows, in one registry (names feed the CLI and error messages).

Each entry names its compute function by ``module:function`` so that listing metrics never
imports torch.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from aigc_cli.core.registry import Registry


@dataclass(frozen=True)
class Metric:
    name: str
    title: str
    sides: int  # 1 (IS) or 2
    needs: str  # "stats" (mean/covariance: statistics files work) or "features"
    description: str
    compute: str  # "module:function", called as fn(*sides, ctx, **options) -> dict

    def function(self):
        module, name = self.compute.split(":")
        return getattr(importlib.import_module(module), name)


METRICS: Registry[Metric] = Registry("metric")


def register_metric(metric: Metric) -> Metric:
    return METRICS.register(metric.name)(metric)


_EVAL = "aigc_cli.metrics.evaluate"
register_metric(Metric("fid", "FID", 2, "stats", "Frechet Inception Distance (pytorch-fid compatible)", f"{_EVAL}:compute_fid"))
register_metric(Metric("kid", "KID", 2, "features", "Kernel Inception Distance (torch-fidelity compatible)", f"{_EVAL}:compute_kid"))
register_metric(Metric("is", "IS", 1, "features", "Inception Score (torch-fidelity compatible)", f"{_EVAL}:compute_is"))
register_metric(Metric("pr", "Precision/recall", 2, "features", "improved precision and recall, k=3 (Kynkaanniemi et al.)", f"{_EVAL}:compute_pr"))


def run_metric(name: str, sides: list, ctx, **options: Any) -> dict[str, Any]:
    metric = METRICS.get(name)
    if len(sides) != metric.sides:
        raise ValueError(f"{metric.title} compares {metric.sides} side(s), got {len(sides)}")
    return metric.function()(*sides, ctx, **options)
