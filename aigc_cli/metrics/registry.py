"""The image metrics ``aigc eval`` knows, in one registry (names feed the CLI and error messages),
with their options and defaults: the CLI's flags, the compute functions and docs/eval.md read these.

Each entry names its compute function by ``module:function`` so that listing metrics never
imports torch.

Every entry compares one or two *sides* (runs, folders, datasets, statistics files) through the
FID Inception's statistics or features (``needs``), called as ``fn(*sides, ctx, **options)``.
``aigc eval ppl`` is not one of them: it scores a text file with a text run's own model, with no
sides, no Inception and no options, so it lives apart, in ``aigc_cli.metrics.text``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from aigc_cli.core.options import SEED_MAX, Option, option_table
from aigc_cli.core.registry import Registry

SAMPLE_N = 10_000  # images drawn from a run side (-n)
FID_N = 2048  # fewer images than the 2048 feature dimensions: a singular covariance, a biased FID
TORCH_FIDELITY_SEED = 2020  # torch-fidelity's rng_seed, for KID's subsets and IS's shuffle


@dataclass(frozen=True)
class Metric:
    name: str
    title: str
    sides: int  # 1 (IS) or 2
    needs: str  # "stats" (mean/covariance: statistics files work) or "features"
    description: str
    compute: str  # "module:function", called as fn(*sides, ctx, **options) -> dict
    results: tuple[str, ...] = ()  # the result's values, in the order ``aigc eval`` prints them
    options: tuple[Option, ...] = ()
    side_names: tuple[str, ...] = ("A", "B")  # what ``aigc eval <name> --help`` calls the sides

    def function(self):
        module, name = self.compute.split(":")
        return getattr(importlib.import_module(module), name)

    def option(self, name: str) -> Option:
        return option_table(self.options)[name]

    def default(self, name: str) -> Any:
        return self.option(name).default


METRICS: Registry[Metric] = Registry("metric")


def register_metric(metric: Metric) -> Metric:
    return METRICS.register(metric.name)(metric)


def get_metric(name: str) -> Metric:
    return METRICS.get(name)


_EVAL = "aigc_cli.metrics.evaluate"
register_metric(Metric(
    "fid", "FID", 2, "stats", "Frechet Inception Distance between A and B (pytorch-fid's network, weights and "
    "preprocessing).", f"{_EVAL}:compute_fid", results=("fid",),
    options=(Option("save_stats", str, None, "Also save side A's statistics to this .npz."),),
))
register_metric(Metric(
    "kid", "KID", 2, "features", "Kernel Inception Distance between A and B (torch-fidelity's defaults).",
    f"{_EVAL}:compute_kid", results=("kid", "kid_std"),
    options=(
        Option("subsets", int, 100, "Random subsets averaged.", minimum=1),
        Option("subset_size", int, 1000, "Images per subset (lowered to the smaller side).", minimum=2),
        Option("degree", int, 3, "Polynomial kernel degree.", minimum=1),
        Option("gamma", float, None, "Polynomial kernel gamma.", default_text="1/2048, one over the feature size"),
        Option("coef0", float, 1.0, "Polynomial kernel constant."),
        Option("seed", int, TORCH_FIDELITY_SEED, "Seed of the subset draws (torch-fidelity's).", minimum=0,
               maximum=SEED_MAX),
    ),
))
register_metric(Metric(
    "is", "IS", 1, "features", "Inception Score of A (the FID Inception's 1008-class logits, as torch-fidelity).",
    f"{_EVAL}:compute_is", results=("is", "is_std"), side_names=("A",),
    options=(
        Option("splits", int, 10, "Parts the images are split into.", minimum=1),
        Option("seed", int, TORCH_FIDELITY_SEED, "Seed of the shuffle before the split (torch-fidelity's).",
               minimum=0, maximum=SEED_MAX),
    ),
))
register_metric(Metric(
    "pr", "Precision/recall", 2, "features", "Precision and recall of GENERATED against REAL (improved precision "
    "and recall, Kynkaanniemi et al. 2019).", f"{_EVAL}:compute_pr", results=("precision", "recall"),
    options=(Option("k", int, 3, "Neighbourhood size (k-th nearest neighbour radius).", short="-k", minimum=1),),
    side_names=("GENERATED", "REAL"),
))


def run_metric(name: str, sides: list, ctx, **options: Any) -> dict[str, Any]:
    metric = METRICS.get(name)
    if len(sides) != metric.sides:
        raise ValueError(f"{metric.title} compares {metric.sides} side(s), got {len(sides)}")
    return metric.function()(*sides, ctx, **options)
