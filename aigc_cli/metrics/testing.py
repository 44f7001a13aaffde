"""Seeded random FID-Inception weights, for tests and benchmarks where the real file is absent.

Same keys and shapes as ``pt_inception-2015-12-05-6726825d.pth``; He-scaled convolutions and
unit BatchNorm statistics keep the activations finite and varied through the 94 layers.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from aigc_cli.core.io import atomic_path
from aigc_cli.metrics.inception import expected_shapes


def random_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for key, shape in expected_shapes().items():
        if key.endswith("num_batches_tracked"):
            out[key] = torch.tensor(0, dtype=torch.long)
        elif key.endswith("conv.weight"):
            fan_in = shape[1] * shape[2] * shape[3]
            out[key] = torch.randn(shape, generator=g) * math.sqrt(2.0 / fan_in)
        elif key.endswith("bn.weight"):
            out[key] = 1.0 + 0.1 * torch.randn(shape, generator=g)
        elif key.endswith("bn.bias"):
            out[key] = 0.1 * torch.randn(shape, generator=g)
        elif key.endswith("running_mean"):
            out[key] = 0.05 * torch.randn(shape, generator=g)
        elif key.endswith("running_var"):
            out[key] = 1.0 + 0.1 * torch.rand(shape, generator=g)
        elif key == "fc.weight":
            out[key] = torch.randn(shape, generator=g) * math.sqrt(1.0 / shape[1])
        elif key == "fc.bias":
            out[key] = 0.01 * torch.randn(shape, generator=g)
        else:  # pragma: no cover - every key is covered above
            raise KeyError(key)
    return out


def write_random_weights(path: str | Path, seed: int = 0) -> Path:
    """Save a seeded random state dict as a plain ``torch.save`` file (loadable weights-only)."""
    path = Path(path)
    state = random_state_dict(seed)
    with atomic_path(path, parents=True) as tmp:
        torch.save(state, tmp)
    return path
