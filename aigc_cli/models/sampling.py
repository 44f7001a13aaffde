"""Load a run's generator and draw images: the one path used by sample, interpolate, eval, export."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from aigc_cli.core.errors import ConfigError, RunError
from aigc_cli.core.images import to_uint8
from aigc_cli.models.registry import get_family
from aigc_cli.runs.checkpoint import load_weights
from aigc_cli.runs.store import Run, resolve_run


@dataclass
class LoadedGenerator:
    run: Run
    config: dict[str, Any]
    module: torch.nn.Module  # (z, labels) -> (B, C, H, W) in [0, 1]
    device: torch.device
    encoder: torch.nn.Module | None = None  # (x in [0, 1], labels) -> z, for families that have one
    prior: torch.nn.Module | None = None  # (eps, u) -> codes, for runs with a fitted prior; None: N(0, I)

    @property
    def family(self) -> str:
        return self.config["family"]

    @property
    def latent_dim(self) -> int:
        return int(self.config["model"]["latent_dim"])

    @property
    def num_classes(self) -> int | None:
        m = self.config["model"]
        return m["num_classes"] if m.get("conditional") else None

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.config["model"]["image_shape"])

    def latents(self, n: int, seed: int, truncation: float | None = None) -> torch.Tensor:
        """(n, latent_dim) latents from ``seed`` alone (CPU generator: same on any device):
        standard normal, or for a run with a fitted prior that prior's samples, built from the
        same standard normal draws (truncated first, when asked)."""
        g = torch.Generator().manual_seed(seed)
        z = torch.randn(n, self.latent_dim, generator=g)
        if truncation is not None:
            z = truncate(z, truncation, g)
        if self.prior is not None:
            z = self.prior.codes(z, torch.rand(n, generator=g))
        return z

    def labels(self, n: int, label: int | None) -> torch.Tensor | None:
        k = self.num_classes
        if k is None:
            if label is not None:
                raise ConfigError(f"{self.run.id} is not class-conditional; drop --label")
            return None
        if label is None:
            return torch.arange(n) % k  # every class in turn
        if not 0 <= label < k:
            raise ConfigError(f"--label must be in 0..{k - 1} for {self.run.id}, got {label}")
        return torch.full((n,), label, dtype=torch.int64)

    @torch.inference_mode()
    def generate(self, z: torch.Tensor, labels: torch.Tensor | None = None, batch_size: int = 256) -> torch.Tensor:
        """(n, latent) -> (n, C, H, W) floats in [0, 1] on the CPU."""
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ConfigError(
                f"latents must have shape (N, {self.latent_dim}) for {self.run.id}, got {tuple(z.shape)}"
            )
        out = []
        for i in range(0, len(z), batch_size):
            zb = z[i : i + batch_size].to(self.device, torch.float32)
            yb = labels[i : i + batch_size].to(self.device) if labels is not None else None
            out.append(self.module(zb, yb).float().cpu())
        return torch.cat(out) if out else torch.empty(0, *self.image_shape)

    @torch.inference_mode()
    def encode(self, images: torch.Tensor, labels: torch.Tensor | None = None, batch_size: int = 256) -> torch.Tensor:
        """(n, C, H, W) uint8 images of the run's shape -> (n, latent) latents on the CPU."""
        if self.encoder is None:
            raise ConfigError(f"{self.run.id} is a {self.family} run: it has no encoder to map images to latents")
        out = []
        for i in range(0, len(images), batch_size):
            xb = images[i : i + batch_size].to(self.device).float() / 255
            yb = labels[i : i + batch_size].to(self.device) if labels is not None else None
            out.append(self.encoder(xb, yb).float().cpu())
        return torch.cat(out) if out else torch.empty(0, self.latent_dim)

    def sample_uint8(self, n: int, seed: int, batch_size: int = 256, label: int | None = None) -> torch.Tensor:
        """(n, C, H, W) uint8, exactly the pixels ``aigc sample`` would write to PNG."""
        return to_uint8(self.generate(self.latents(n, seed), self.labels(n, label), batch_size))


def truncate(z: torch.Tensor, psi: float, generator: torch.Generator) -> torch.Tensor:
    """The truncation trick of BigGAN: redraw every value with |z| > psi until all lie inside."""
    if not psi > 0:
        raise ConfigError(f"--truncation must be positive, got {psi}")
    z = z.clone()
    for _ in range(1000):
        bad = z.abs() > psi
        if not bad.any():
            break
        z[bad] = torch.randn(int(bad.sum()), generator=generator)
    return z.clamp_(-psi, psi)


def load_latents(path: str, latent_dim: int) -> torch.Tensor:
    try:
        array = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise ConfigError(f"no latents file {path}") from None
    except (ValueError, OSError) as e:
        raise ConfigError(f"cannot read latents from {path}: {str(e).splitlines()[0]}") from None
    if array.ndim == 1:
        array = array[None]
    if array.ndim != 2 or array.shape[1] != latent_dim or not np.issubdtype(array.dtype, np.number):
        raise ConfigError(f"{path} must hold an (N, {latent_dim}) numeric array, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ConfigError(f"{path} holds non-finite values")
    return torch.from_numpy(array.astype(np.float32))


def load_generator(run_ref: str | Run, device: torch.device | str = "cpu") -> LoadedGenerator:
    run = run_ref if isinstance(run_ref, Run) else resolve_run(run_ref)
    config = run.read_config()
    if not run.weights_path.exists():
        raise RunError(f"{run.id} has no weights yet (model.safetensors); train it for at least one epoch")
    family = get_family(config["family"])
    modules = family.build(config)
    load_weights(run.weights_path, modules)
    device = torch.device(device)
    module = family.sampler(modules, config).to(device).eval()
    encoder = family.encoder(modules, config).to(device).eval() if hasattr(family, "encoder") else None
    prior = family.latent_prior(modules, config) if hasattr(family, "latent_prior") else None
    return LoadedGenerator(run, config, module, device, encoder, prior)
