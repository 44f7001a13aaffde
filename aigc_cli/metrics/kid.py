"""Kernel Inception Distance (Binkowski et al., 2018), as torch-fidelity computes it.

The unbiased MMD^2 estimate with the polynomial kernel k(x, y) = (gamma x.y + coef0)^degree
(defaults: degree 3, gamma 1/d, coef0 1), averaged over ``subsets`` random subsets of
``subset_size`` images per side drawn without replacement by ``numpy.random.RandomState(seed)``,
in torch-fidelity's order (so the same features give the same subsets and the same value).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from aigc_cli.metrics.registry import get_metric

_KID = get_metric("kid")
DEFAULT_SUBSETS = _KID.default("subsets")
DEFAULT_SUBSET_SIZE = _KID.default("subset_size")
DEFAULT_DEGREE = _KID.default("degree")
DEFAULT_COEF0 = _KID.default("coef0")
DEFAULT_SEED = _KID.default("seed")


@dataclass
class KIDResult:
    mean: float
    std: float
    subsets: int
    subset_size: int


def _mmd2_unbiased(kxx: torch.Tensor, kxy: torch.Tensor, kyy: torch.Tensor) -> float:
    m = kxx.shape[0]
    sum_xx = kxx.sum() - kxx.diagonal().sum()
    sum_yy = kyy.sum() - kyy.diagonal().sum()
    return float((sum_xx + sum_yy) / (m * (m - 1)) - 2 * kxy.sum() / (m * m))


def kid(
    features_a: np.ndarray,
    features_b: np.ndarray,
    subsets: int = DEFAULT_SUBSETS,
    subset_size: int = DEFAULT_SUBSET_SIZE,
    degree: int = DEFAULT_DEGREE,
    gamma: float | None = None,
    coef0: float = DEFAULT_COEF0,
    seed: int = DEFAULT_SEED,
) -> KIDResult:
    """KID between two feature sets; ``subset_size`` must not exceed either side's count."""
    fa = torch.from_numpy(np.ascontiguousarray(features_a, dtype=np.float32))
    fb = torch.from_numpy(np.ascontiguousarray(features_b, dtype=np.float32))
    n_a, n_b = len(fa), len(fb)
    if fa.shape[1] != fb.shape[1]:
        raise ValueError("features of different dimensions")
    if subset_size < 2 or subset_size > min(n_a, n_b):
        raise ValueError(f"KID subset size {subset_size} must be in 2..{min(n_a, n_b)}")
    gamma = 1.0 / fa.shape[1] if gamma is None else gamma
    rng = np.random.RandomState(seed)

    def kernel(x, y):
        # float32 products (as torch-fidelity), then the kernel and the sums in float64
        return (torch.mm(x, y.T).double() * gamma + coef0) ** degree

    mmds = np.zeros(subsets)
    for i in range(subsets):
        x = fa[torch.from_numpy(rng.choice(n_a, subset_size, replace=False))]
        y = fb[torch.from_numpy(rng.choice(n_b, subset_size, replace=False))]
        mmds[i] = _mmd2_unbiased(kernel(x, x), kernel(x, y), kernel(y, y))
    return KIDResult(float(mmds.mean()), float(mmds.std()), subsets, subset_size)
