"""Inception Score (Salimans et al., 2016) from the FID Inception's logits, as torch-fidelity does.

torch-fidelity feeds the Inception Score with ``logits_unbiased``: the 2048-d pool features times
the 1008-class fc weight, *without* the fc bias. The images are shuffled with
``numpy.random.RandomState(seed).permutation`` (seed 2020), split into ``splits`` (10) parts, and
each part scores exp(mean KL(p(y|x) || p(y))) in float64; the result is the mean and the
standard deviation over the parts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from aigc_cli.metrics.registry import get_metric

DEFAULT_SPLITS = get_metric("is").default("splits")
DEFAULT_SEED = get_metric("is").default("seed")


@dataclass
class ISResult:
    mean: float
    std: float
    splits: int


def inception_score(logits: np.ndarray, splits: int = DEFAULT_SPLITS, seed: int = DEFAULT_SEED, shuffle: bool = True) -> ISResult:
    x = torch.from_numpy(np.asarray(logits, dtype=np.float32))
    n = x.shape[0]
    if splits < 1 or n < splits:
        raise ValueError(f"the Inception Score needs at least {splits} images (one per split), got {n}")
    if shuffle:
        x = x[torch.from_numpy(np.random.RandomState(seed).permutation(n))]
    x = x.double()
    p = x.softmax(dim=1)
    log_p = x.log_softmax(dim=1)
    scores = []
    for i in range(splits):
        lo, hi = i * n // splits, (i + 1) * n // splits
        p_chunk, log_p_chunk = p[lo:hi], log_p[lo:hi]
        q = p_chunk.mean(dim=0, keepdim=True)
        kl = (p_chunk * (log_p_chunk - q.log())).sum(dim=1).mean().exp().item()
        scores.append(kl)
    return ISResult(float(np.mean(scores)), float(np.std(scores)), splits)
