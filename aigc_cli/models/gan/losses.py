"""GAN objectives, each with the optimiser settings it is usually trained with.

Discriminator outputs are raw scores (B,). Registered: ``bce`` (the non-saturating loss of
Goodfellow et al.), ``hinge`` (Lim & Ye; Miyato et al., with spectral norm on D) and ``wgan-gp``
(Gulrajani et al., with a gradient penalty and several critic steps per generator step).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from aigc_cli.core.distributed import batch_rand
from aigc_cli.core.registry import Registry


@dataclass(frozen=True)
class GanLoss:
    name: str
    d_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (real scores, fake scores)
    g_loss: Callable[[torch.Tensor], torch.Tensor]  # (fake scores)
    lr: float
    betas: tuple[float, float]
    n_critic: int = 1  # discriminator steps per generator step
    gradient_penalty: float = 0.0
    spectral_norm: bool = False


LOSSES: Registry[GanLoss] = Registry("GAN loss")


def register_loss(loss: GanLoss) -> GanLoss:
    return LOSSES.register(loss.name)(loss)


register_loss(GanLoss(
    "bce",
    d_loss=lambda real, fake: F.softplus(-real).mean() + F.softplus(fake).mean(),
    g_loss=lambda fake: F.softplus(-fake).mean(),
    lr=2e-4, betas=(0.5, 0.999),
))

register_loss(GanLoss(
    "hinge",
    d_loss=lambda real, fake: F.relu(1 - real).mean() + F.relu(1 + fake).mean(),
    g_loss=lambda fake: -fake.mean(),
    lr=2e-4, betas=(0.5, 0.999), spectral_norm=True,
))

register_loss(GanLoss(
    "wgan-gp",
    d_loss=lambda real, fake: fake.mean() - real.mean(),
    g_loss=lambda fake: -fake.mean(),
    lr=1e-4, betas=(0.0, 0.9), n_critic=5, gradient_penalty=10.0,
))


def gradient_penalty(discriminator, real, fake, labels) -> torch.Tensor:
    """(||grad D(x_hat)||_2 - 1)^2 on random interpolates of real and fake images."""
    alpha = batch_rand(real.size(0), 1, 1, 1, device=real.device)
    x_hat = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    scores = discriminator(x_hat, labels)
    (grad,) = torch.autograd.grad(scores.sum(), x_hat, create_graph=True)
    return ((grad.flatten(1).norm(2, dim=1) - 1) ** 2).mean()
