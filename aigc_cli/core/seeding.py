"""Seeds and RNG state, so a --seed reproduces images and a resumed run continues exactly."""

from __future__ import annotations

import hashlib
import random

import numpy as np
import torch


def fresh_seed() -> int:
    """A random seed for an option left out; under torchrun rank 0's, so that every rank draws alike."""
    import secrets

    from aigc_cli.core import distributed

    return distributed.broadcast_object(secrets.randbelow(2**31))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def keyed_generator(*key: object) -> torch.Generator:
    """A CPU generator seeded from ``key`` alone ('aigc-flip', seed, epoch, batch): draws that are
    a pure function of where they are made, so N ranks draw what one process draws and a resumed
    run needs no saved state for them."""
    digest = hashlib.sha256("/".join(map(str, key)).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def get_rng_state() -> dict[str, torch.Tensor]:
    """Tensors only, so the state fits in a safetensors checkpoint."""
    state = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            state[f"torch_cuda_{i}"] = s
    return state


def set_rng_state(state: dict[str, torch.Tensor]) -> None:
    if "torch_cpu" in state:
        torch.set_rng_state(state["torch_cpu"].to(torch.uint8).cpu())
    cuda = [state[k] for k in sorted(state) if k.startswith("torch_cuda_")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.to(torch.uint8).cpu() for s in cuda])
