"""LoRA adapters (Hu et al. 2021), as peft attaches them: chosen Linear and Conv2d layers of an
unchanged network gain a low-rank update ``W + (alpha / r) * B @ A`` whose factors alone train.

A layer with an adapter keeps its own parameters under their names (``weight``, ``bias``) and
adds ``lora_A`` and ``lora_B``, so the network's state dict is the base's plus the adapters':
a run holds only the adapter tensors (:func:`saved_state`) and names its base run, and the base
weights load into the same keys as ever. ``B`` starts at zero: a new adapter changes nothing
until it trains. For sampling and export the update is folded into the weights (:func:`merge`)
and the network is plain again: no extra work per call, nothing new in an ONNX graph.

Shapes (as peft's): Linear (out, in): A (r, in), B (out, r). Conv2d (out, in, kh, kw): A is a
convolution of the base's kernel, stride and padding to r channels (r, in, kh, kw), B a 1x1 one
back (out, r, 1, 1).
"""

from __future__ import annotations

import fnmatch
import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from aigc_cli.core.errors import ConfigError

ADAPTER_KEYS = ("lora_A", "lora_B")


def is_adapter_key(key: str) -> bool:
    return key.rsplit(".", 1)[-1] in ADAPTER_KEYS


class _Lora(nn.Module):
    """What the two layer kinds share: the base's parameters, the factors, the scale."""

    def _setup(self, base: nn.Module, a_shape: tuple[int, ...], b_shape: tuple[int, ...], rank: int, alpha: float):
        self.weight, self.bias = base.weight, base.bias  # the same Parameters: frozen, saved by the base run
        self.rank, self.scale = rank, alpha / rank
        like = base.weight
        self.lora_A = nn.Parameter(torch.empty(a_shape, dtype=like.dtype, device=like.device))
        self.lora_B = nn.Parameter(torch.zeros(b_shape, dtype=like.dtype, device=like.device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # as nn.Linear's own init (and peft's)

    def delta(self) -> torch.Tensor:
        """The update the adapter adds to the base weight, shaped like it."""
        raise NotImplementedError


class LoraLinear(_Lora):
    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        super().__init__()
        self.in_features, self.out_features = base.in_features, base.out_features
        self._setup(base, (rank, base.in_features), (base.out_features, rank), rank, alpha)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (..., in) -> (..., out): the base layer, plus the update through the rank-r bottleneck
        return F.linear(x, self.weight, self.bias) + F.linear(F.linear(x, self.lora_A), self.lora_B) * self.scale

    def delta(self) -> torch.Tensor:
        return (self.lora_B @ self.lora_A) * self.scale  # (out, in)

    def plain(self) -> nn.Linear:
        layer = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                          device=self.weight.device, dtype=self.weight.dtype)
        return layer


class LoraConv2d(_Lora):
    def __init__(self, base: nn.Conv2d, rank: int, alpha: float):
        super().__init__()
        if base.groups != 1 or not isinstance(base.padding, (tuple, int)):
            raise ConfigError("LoRA adapts plain convolutions only (no groups, numeric padding)")
        self.conv = dict(stride=base.stride, padding=base.padding, dilation=base.dilation)
        self.in_channels, self.out_channels, self.kernel_size = base.in_channels, base.out_channels, base.kernel_size
        self._setup(base, (rank, base.in_channels, *base.kernel_size), (base.out_channels, rank, 1, 1), rank, alpha)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, in, H, W) -> (B, out, H', W'): the base convolution, plus the update through r channels
        low = F.conv2d(x, self.lora_A, None, **self.conv)
        return F.conv2d(x, self.weight, self.bias, **self.conv) + F.conv2d(low, self.lora_B) * self.scale

    def delta(self) -> torch.Tensor:
        # (out, r) @ (r, in * kh * kw), back to the kernel's shape
        return (self.lora_B.flatten(1) @ self.lora_A.flatten(1)).view_as(self.weight) * self.scale

    def plain(self) -> nn.Conv2d:
        return nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, bias=self.bias is not None,
                         device=self.weight.device, dtype=self.weight.dtype, **self.conv)


_KINDS = {nn.Linear: LoraLinear, nn.Conv2d: LoraConv2d}


def adaptable(module: nn.Module) -> list[str]:
    """Qualified names of the layers an adapter can attach to (Linear and plain Conv2d)."""
    return [name for name, m in module.named_modules()
            if type(m) in _KINDS and (type(m) is nn.Linear or m.groups == 1)]


def select(module: nn.Module, patterns: list[str], what: str) -> list[str]:
    """The adaptable layers whose names match one of the glob ``patterns`` (``blocks.*.fc``); a
    pattern matching none is a one-line error naming some that exist."""
    names = adaptable(module)
    chosen = []
    for pattern in patterns:
        hits = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        if not hits:
            shown = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
            raise ConfigError(f"--lora-targets {pattern!r} matches no Linear or Conv2d layer of {what} "
                              f"(it has: {shown or 'none'})")
        chosen += [n for n in hits if n not in chosen]
    return sorted(chosen, key=names.index)


def inject(module: nn.Module, layers: list[str], rank: int, alpha: float) -> None:
    """Give each of ``layers`` (qualified names) an adapter, in place."""
    for name in layers:
        parent_name, _, child = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        base = getattr(parent, child)
        if type(base) not in _KINDS:
            raise ConfigError(f"layer {name!r} is a {type(base).__name__}; LoRA adapts Linear and Conv2d layers")
        setattr(parent, child, _KINDS[type(base)](base, rank, alpha))


def has_adapters(module: nn.Module) -> bool:
    return any(isinstance(m, _Lora) for m in module.modules())


def saved_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """What a run saves of ``module``: its adapters alone when it has any (the base weights are
    its parent run's), else its whole state."""
    state = module.state_dict()
    if has_adapters(module):
        return {k: v for k, v in state.items() if is_adapter_key(k)}
    return state


@torch.no_grad()
def merge(module: nn.Module) -> nn.Module:
    """Fold every adapter into its layer's weight and put back a plain layer: the same function,
    as a network without adapters (sampling, export). In place; returns ``module``."""
    for name, layer in list(module.named_modules()):
        if not isinstance(layer, _Lora):
            continue
        parent_name, _, child = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        plain = layer.plain()
        plain.weight.copy_(layer.weight + layer.delta().to(layer.weight.dtype))
        if layer.bias is not None:
            plain.bias.copy_(layer.bias)
        if layer.weight.is_contiguous(memory_format=torch.channels_last) and plain.weight.ndim == 4:
            plain.to(memory_format=torch.channels_last)  # as the base was (the U-Net's convolutions)
        setattr(parent, child, plain)
    return module


def resolve_layers(modules: dict[str, nn.Module], defaults: dict[str, tuple[str, ...]],
                   targets: list[str] | None, family: str) -> dict[str, list[str]]:
    """Inference module -> the layers that get adapters: the family's defaults, or ``targets``
    (glob patterns, each matched in the modules that have a layer of that name)."""
    if targets is None:
        if not defaults:
            raise ConfigError(f"the {family} family has no default LoRA layers for this run; name them with "
                              "--lora-targets (glob patterns such as 'net.*'), or fine-tune every weight (no --lora)")
        return {name: select(modules[name], list(patterns), name) for name, patterns in defaults.items()}
    layers: dict[str, list[str]] = {}
    for pattern in targets:
        found = False
        for name, module in modules.items():
            hits = [n for n in adaptable(module) if fnmatch.fnmatchcase(n, pattern)]
            if hits:
                found = True
                layers[name] = layers.get(name, []) + [h for h in hits if h not in layers.get(name, [])]
        if not found:
            some = [f"{m}: {n}" for m, module in modules.items() for n in adaptable(module)[:3]]
            raise ConfigError(f"--lora-targets {pattern!r} matches no Linear or Conv2d layer (some there are: "
                              f"{', '.join(some) or 'none'})")
    return layers


def add_adapters(task, spec: dict) -> Callable[[str], bool]:
    """Give ``task``'s training modules the adapters ``spec`` (a run's config.json 'adapters')
    names, before the loop builds optimizers; returns what the loop freezes: every other
    parameter of those modules."""
    from aigc_cli.models.inherit import training_source

    adapted = set()
    for name, layers in spec["layers"].items():
        target = training_source(task, name)
        inject(task.modules[target], layers, spec["rank"], spec["alpha"])
        adapted.add(target)
    return lambda qualified: qualified.split(".", 1)[0] in adapted and not is_adapter_key(qualified)
