"""The Frechet distance between two Gaussians, in float64, without a general matrix square root.

    d^2 = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2))

pytorch-fid (after the TTUR code) computes ``tr sqrtm(S1 @ S2)`` with scipy's Schur-based
``sqrtm`` of a non-symmetric 2048x2048 matrix: tens of seconds on a laptop CPU. Both matrices are
symmetric positive semi-definite, so S1 S2 is similar to R S2 R with R = S1^(1/2):

    tr((S1 S2)^(1/2)) = sum_i sqrt(lambda_i(R S2 R))

two symmetric eigendecompositions (float64, torch's LAPACK), several times faster and free of the
complex round-off pytorch-fid has to discard. Eigenvalues that round-off makes slightly negative
count as zero.
"""

from __future__ import annotations

import numpy as np
import torch


def _sqrt_psd(sigma: torch.Tensor) -> torch.Tensor:
    w, v = torch.linalg.eigh(sigma)
    return (v * w.clamp(min=0).sqrt()) @ v.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """tr((sigma1 @ sigma2)^(1/2)) for symmetric PSD matrices."""
    s1 = torch.from_numpy(np.asarray(sigma1, dtype=np.float64))
    s2 = torch.from_numpy(np.asarray(sigma2, dtype=np.float64))
    root = _sqrt_psd(s1)
    m = root @ s2 @ root
    m = (m + m.T) / 2  # exact symmetry for eigvalsh
    w = torch.linalg.eigvalsh(m)
    return float(w.clamp(min=0).sqrt().sum())


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    mu1 = np.atleast_1d(np.asarray(mu1, dtype=np.float64))
    mu2 = np.atleast_1d(np.asarray(mu2, dtype=np.float64))
    sigma1 = np.atleast_2d(np.asarray(sigma1, dtype=np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, dtype=np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise ValueError(
            f"statistics of different dimensions: mean {mu1.shape} vs {mu2.shape}, "
            f"covariance {sigma1.shape} vs {sigma2.shape}"
        )
    # Symmetrise: a saved covariance may carry round-off asymmetry.
    sigma1 = (sigma1 + sigma1.T) / 2
    sigma2 = (sigma2 + sigma2.T) / 2
    diff = mu1 - mu2
    value = diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt_product(sigma1, sigma2)
    return float(value)
