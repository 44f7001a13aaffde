"""Improved precision and recall (Kynkaanniemi et al., 2019), as torch-fidelity computes it.

Each side's manifold is the union of balls around its samples reaching their k-th nearest
neighbour (k = 3; the sample itself does not count). Precision: the fraction of generated samples
(side A) inside the real manifold (side B). Recall: the fraction of real samples inside the
generated manifold. Distances are Euclidean on the 2048-d Inception pool features (the paper
uses VGG-16 features; torch-fidelity and aigc use the Inception ones).

Computed in row blocks, so memory stays at ``block x N`` distances, not N x N.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from aigc_cli.metrics.registry import get_metric

DEFAULT_K = get_metric("pr").default("k")


@dataclass
class PRResult:
    precision: float
    recall: float
    f_score: float
    k: int


def _radii(x: torch.Tensor, k: int, block: int) -> torch.Tensor:
    """Distance of each row of x to its k-th nearest other row."""
    out = [torch.cdist(chunk, x).kthvalue(k + 1, dim=1).values for chunk in x.split(block)]
    return torch.cat(out)


def precision_recall(features_a: np.ndarray, features_b: np.ndarray, k: int = DEFAULT_K, block: int = 1024) -> PRResult:
    """A: generated, B: real (torch-fidelity's input1 and input2)."""
    fa = torch.from_numpy(np.ascontiguousarray(features_a, dtype=np.float32))
    fb = torch.from_numpy(np.ascontiguousarray(features_b, dtype=np.float32))
    if min(len(fa), len(fb)) < k + 1:
        raise ValueError(f"precision/recall with k={k} needs at least {k + 1} images on each side")
    r_a = _radii(fa, k, block)
    r_b = _radii(fb, k, block)
    in_b = torch.zeros(len(fa), dtype=torch.bool)  # generated sample inside the real manifold
    covered = torch.zeros(len(fb), dtype=torch.bool)  # real sample inside the generated manifold
    for start in range(0, len(fa), block):
        d = torch.cdist(fa[start : start + block], fb)  # (block, n_b)
        in_b[start : start + block] = (d <= r_b[None, :]).any(dim=1)
        covered |= (d <= r_a[start : start + block, None]).any(dim=0)
    precision = in_b.float().mean().item()
    recall = covered.float().mean().item()
    f_score = 2 * precision * recall / max(1e-5, precision + recall)
    return PRResult(precision, recall, f_score, k)
