"""Decoder likelihoods p(x | z) for images in [0, 1], and the KL term of the ELBO.

The decoder outputs one value per pixel and channel, ``out`` (B, C, H, W); every likelihood
here reads the mean image as ``sigmoid(out)``, so samplers never depend on the likelihood.

Registered:
- ``bernoulli``: per-pixel Bernoulli with logits ``out`` (binary cross-entropy), the classic
  choice for near-binary images such as MNIST or the built-in shapes.
- ``gaussian``: per-pixel Gaussian with mean ``sigmoid(out)`` and a per-channel scale set to its
  maximum-likelihood value on each batch (the root-mean-square error; a "calibrated decoder",
  Rybkin et al., 2021), never below one grey level. The NLL is that of the 0..255 pixel values,
  so it is a close, always positive, stand-in for a discretised Gaussian. Suits natural images.

Both return the negative log-likelihood of each image in nats, summed over pixels: (B,).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from aigc_cli.core.registry import Registry

LEVELS = 255.0  # pixel values are k / 255, k = 0..255


@dataclass(frozen=True)
class Likelihood:
    name: str
    nll: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (decoder out, x in [0, 1]) -> (B,)
    description: str

    @staticmethod
    def mean(out: torch.Tensor) -> torch.Tensor:
        """The mean image E[x | z] in [0, 1]: what samplers and reconstructions show."""
        return torch.sigmoid(out)


LIKELIHOODS: Registry[Likelihood] = Registry("likelihood")


def register_likelihood(lik: Likelihood) -> Likelihood:
    return LIKELIHOODS.register(lik.name)(lik)


def bernoulli_nll(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(out, x, reduction="none").flatten(1).sum(1)


_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def gaussian_nll(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    mean = torch.sigmoid(out)
    err2 = (x - mean).pow(2)
    # Maximum-likelihood scale per channel on this batch, held fixed for the gradient step.
    var = err2.detach().mean(dim=(0, 2, 3), keepdim=True).clamp_min(1 / LEVELS**2)
    nll = 0.5 * err2 / var + 0.5 * var.log() + _HALF_LOG_2PI + math.log(LEVELS)
    return nll.flatten(1).sum(1)


register_likelihood(Likelihood("bernoulli", bernoulli_nll, "per-pixel Bernoulli (binary cross-entropy)"))
register_likelihood(Likelihood("gaussian", gaussian_nll, "per-pixel Gaussian with a calibrated scale"))


def default_likelihood(dataset_info: dict) -> str:
    """``auto``: Bernoulli for grey images and the built-in shapes (near-binary pixels),
    Gaussian for other colour data (photographs: CIFAR-10, image folders)."""
    spec = (dataset_info.get("spec") or {}).get("spec")
    if dataset_info["shape"][0] == 1 or spec == "shapes":
        return "bernoulli"
    return "gaussian"


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) per image, in nats: (B,)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)
