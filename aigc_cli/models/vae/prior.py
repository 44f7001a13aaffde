"""Where a VAE's samples start: the standard normal, or a Gaussian mixture fitted to the codes.

A VAE trained against N(0, I) does not fill N(0, I): the encodings of the training images (the
aggregate posterior) leave holes, and prior samples that land in them decode to no digit. Fitting
a density to the codes after training and sampling from it instead ("ex-post density
estimation", Ghosh et al., 2020; the two-stage idea of Dai & Wipf, 2019) keeps samples where the
decoder has learned to draw. On MNIST a 30-component mixture lifts the share of samples that a
classifier recognises with p > 0.9 from 25% to 79% (docs/benchmarks/vae.md).

Registered choices (config ``model.prior``): ``gmm`` and ``standard`` (the textbook N(0, I)).

Latents are drawn from a seed the same way for both: ``eps`` (n, D) standard normal first, then
``u`` (n,) uniform picks each sample's component; for ``standard`` the code is ``eps`` itself,
so truncation and a seed mean the same thing for every prior.
"""

from __future__ import annotations

import math

import torch
from torch import nn

PRIORS = ("gmm", "standard")
MAX_COMPONENTS = 30
POINTS_PER_COMPONENT = 100  # smaller datasets get fewer components: 64 images -> one Gaussian
MAX_FIT_POINTS = 5_000  # codes used for a fit: 10,000 gain about one point of quality for twice the time


def components_for(dataset_size: int) -> int:
    return max(1, min(MAX_COMPONENTS, dataset_size // POINTS_PER_COMPONENT))


def fit_subset(dataset_size: int, seed: int) -> torch.Tensor | None:
    """Indices of the training images a fit encodes: None (all of them) up to MAX_FIT_POINTS,
    else a fixed subset of that many chosen by the run's seed."""
    if dataset_size <= MAX_FIT_POINTS:
        return None
    order = torch.randperm(dataset_size, generator=torch.Generator().manual_seed(seed + 13))
    return order[:MAX_FIT_POINTS]


class GmmPrior(nn.Module):
    """A K-component, full-covariance Gaussian mixture over the latent space, kept as buffers so
    it is saved in model.safetensors next to the decoder. Unfitted, every component is N(0, I)."""

    def __init__(self, components: int, latent_dim: int):
        super().__init__()
        self.register_buffer("weights", torch.full((components,), 1.0 / components))
        self.register_buffer("means", torch.zeros(components, latent_dim))
        self.register_buffer("scale_tril", torch.eye(latent_dim).repeat(components, 1, 1))

    def codes(self, eps: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """(n, D) standard normal, (n,) uniform in [0, 1) -> (n, D) samples of the mixture."""
        cdf = self.weights.double().cpu().cumsum(0)
        comp = torch.searchsorted(cdf / cdf[-1], u.double().cpu(), right=True).clamp_(max=len(cdf) - 1)
        comp = comp.to(self.means.device)
        eps = eps.to(self.means)
        return self.means[comp] + (self.scale_tril[comp] @ eps[:, :, None])[..., 0]

    @torch.no_grad()
    def fit(self, codes: torch.Tensor, seed: int) -> None:
        """Refit to (N, D) codes; non-finite codes leave the previous fit as it is."""
        if not torch.isfinite(codes).all():
            return
        weights, means, scale_tril = fit_gmm(codes, len(self.weights), seed)
        if not all(torch.isfinite(t).all() for t in (weights, means, scale_tril)):
            return
        if len(weights) < len(self.weights):  # fewer points than components: pad with unused ones
            pad = len(self.weights) - len(weights)
            weights = torch.cat([weights, weights.new_zeros(pad)])
            means = torch.cat([means, means[:1].expand(pad, -1)])
            scale_tril = torch.cat([scale_tril, scale_tril[:1].expand(pad, -1, -1)])
        self.weights.copy_(weights)
        self.means.copy_(means)
        self.scale_tril.copy_(scale_tril)


def fit_gmm(x: torch.Tensor, k: int, seed: int, iters: int = 100, tol: float = 1e-3, reg: float = 1e-4):
    """Expectation-maximisation for a full-covariance Gaussian mixture on (N, D) points.

    The points are standardised per dimension first, so the result does not depend on their
    scale (an autoencoder trained with beta 0 has codes of any size) and ``reg`` is relative to
    each dimension's variance. Stops when the mean log-likelihood per (standardised) point gains
    less than ``tol`` nats in an iteration (scikit-learn's rule and defaults).

    Returns (weights (K,), means (K, D), scale_tril (K, D, D)). Computed in float32 on the CPU
    (every step is a GEMM over all points: a few ms an iteration for 5,000 points and 30
    components on two cores); deterministic for a seed (k-means++ initialisation). ``reg`` on
    the diagonal keeps every covariance positive definite (more is added to one that rounding
    made indefinite). A component that loses all its points keeps its last parameters with
    weight 0.
    """
    x = x.detach().float().cpu()
    n, d = x.shape
    centre = x.mean(0)
    scale = x.std(0, correction=0).clamp_min(1e-6) if n > 1 else torch.ones(d)
    x = (x - centre) / scale
    k = max(1, min(k, n))
    eye = torch.eye(d, dtype=x.dtype)
    outer = (x[:, :, None] * x[:, None, :]).reshape(n, d * d)  # (N, D*D): x x^T per point, once
    means = _kmeans_pp(x, k, torch.Generator().manual_seed(seed))
    covs = (torch.cov(x.T).reshape(d, d) + reg * eye).expand(k, d, d).clone() if n > 1 else eye.expand(k, d, d).clone()
    weights = torch.full((k,), 1.0 / k, dtype=x.dtype)
    previous = -math.inf
    for _ in range(iters):
        log_p = _log_gaussian(x, outer, means, _cholesky(covs, reg)) + weights.clamp_min(1e-30).log()[:, None]
        log_norm = torch.logsumexp(log_p, 0)  # (N,)
        resp = (log_p - log_norm).exp()  # (K, N) responsibilities
        counts = resp.sum(1)  # (K,)
        alive = (counts > 1e-8)[:, None]
        weights = counts / counts.sum()
        total = counts.clamp_min(1e-30)[:, None]
        new_means = (resp @ x) / total
        # E[x x^T] - m m^T per component: two GEMMs instead of a (K, N, D) difference tensor.
        second = ((resp @ outer) / total).reshape(k, d, d)
        new_covs = second - new_means[:, :, None] * new_means[:, None, :]
        new_covs = 0.5 * (new_covs + new_covs.mT) + reg * eye
        means = torch.where(alive, new_means, means)
        covs = torch.where(alive[:, :, None], new_covs, covs)
        mean_ll = float(log_norm.mean())
        if mean_ll - previous < tol:
            break
        previous = mean_ll
    tril = _cholesky(covs, reg)
    return weights, means * scale + centre, scale[:, None] * tril  # back to the codes' units


def _cholesky(covs: torch.Tensor, reg: float) -> torch.Tensor:
    """Batched Cholesky factors; a covariance that float32 rounding left indefinite gets ten
    times more on its diagonal until it factors (NaN input stays NaN; the caller checks)."""
    eye = torch.eye(covs.shape[-1], dtype=covs.dtype)
    tril, info = torch.linalg.cholesky_ex(covs)
    jitter = reg
    while bool((info > 0).any()) and jitter < 1:
        jitter *= 10
        covs = torch.where((info > 0)[:, None, None], covs + jitter * eye, covs)
        tril, info = torch.linalg.cholesky_ex(covs)
    return tril


def _kmeans_pp(x: torch.Tensor, k: int, g: torch.Generator) -> torch.Tensor:
    """k-means++ seeding (Arthur & Vassilvitskii, 2007): spread-out starting means, (K, D)."""
    centres = x[torch.randint(len(x), (1,), generator=g)]
    for _ in range(k - 1):
        d2 = torch.cdist(x, centres).min(1).values.pow(2)
        if not d2.sum() > 0:  # fewer distinct points than components
            pick = torch.randint(len(x), (1,), generator=g)
        else:
            pick = torch.multinomial(d2 / d2.sum(), 1, generator=g)
        centres = torch.cat([centres, x[pick]])
    return centres


def _log_gaussian(x: torch.Tensor, outer: torch.Tensor, means: torch.Tensor, tril: torch.Tensor) -> torch.Tensor:
    """log N(x_n; mean_k, L_k L_k^T) for all pairs: x (N, D), outer (N, D*D), means (K, D),
    tril (K, D, D) -> (K, N). The Mahalanobis term x^T P x - 2 x^T P m + m^T P m (P the
    precision) is three GEMMs over all points and components, with no (N, K, D) temporary."""
    k, d = means.shape
    whiten = torch.linalg.inv(tril)  # (K, D, D)
    precision = whiten.mT @ whiten  # (K, D, D)
    pm = (precision @ means[:, :, None])[..., 0]  # (K, D)
    maha = outer @ precision.reshape(k, d * d).T - 2 * (x @ pm.T) + (means * pm).sum(1)  # (N, K)
    log_det = 2 * tril.diagonal(dim1=1, dim2=2).log().sum(1)  # (K,)
    return -0.5 * (maha.T.clamp_min(0) + log_det[:, None] + d * math.log(2 * math.pi))
