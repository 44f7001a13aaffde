"""Device choice: CUDA, then MPS, then CPU, unless the user names one."""

from __future__ import annotations

import re

from aigc_cli.core.errors import ConfigError

DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def resolve_device(spec: str = "auto"):
    import torch

    spec = (spec or "auto").strip().lower()
    if not DEVICE_PATTERN.match(spec):
        raise ConfigError(f"unknown device {spec!r}; use auto, cpu, cuda, cuda:N or mps")
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {spec!r} asked for, but CUDA is not available; use --device cpu")
        index = int(spec.split(":")[1]) if ":" in spec else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(
                f"device {spec!r} asked for, but only {torch.cuda.device_count()} CUDA device(s) exist"
            )
    if spec == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("device 'mps' asked for, but MPS is not available; use --device cpu")
    return torch.device(spec)


def auto_precision(device) -> str:
    """What ``--precision auto`` trains in: bf16 autocast where the hardware multiplies bf16 fast
    (a CUDA GPU that has it; a CPU with AMX), fp16 on older CUDA GPUs, fp32 elsewhere (CPU
    autocast without AMX is slower than fp32). Measured on an AMX CPU (docs/benchmarks/README.md): the
    GPT 1.4x tokens/s, the diffusion U-Net 1.29x steps, each as good or better at equal time."""
    import torch

    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)  # a private probe: guarded
    return "bf16" if device.type == "cpu" and amx() else "fp32"


PRECISIONS = ("auto", "fp32", "bf16", "fp16")
AUTOCAST = {"bf16": "bfloat16", "fp16": "float16"}  # torch dtype names of the autocast precisions


def resolve_precision(precision: str, device, fp16: bool = True) -> str:
    """The arithmetic a ``--precision`` trains in on ``device``: an explicit choice as it is;
    auto: ``auto_precision``, with fp32 instead of fp16 for a model that cannot train in fp16
    (``fp16=False``: a text model's logits and attention scores outrun its range)."""
    if precision != "auto":
        return precision
    chosen = auto_precision(device)
    return "fp32" if chosen == "fp16" and not fp16 else chosen


def autocast(device, precision: str):
    """The autocast context of a resolved precision (fp32: one that does nothing)."""
    import torch

    name = AUTOCAST.get(precision)
    return torch.autocast(device.type, dtype=getattr(torch, name) if name else None, enabled=name is not None)
