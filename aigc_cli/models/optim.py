"""Optimization, owned by the training loop: a task declares what each of its optimizers trains
(:class:`OptimizerSpec`: parameter groups, Adam or AdamW, clipping, a learning-rate schedule,
loss scaling, weight averages), and the loop builds it (:func:`build_optimizers`), leaving out
the parameters it freezes. The task steps through the :class:`Optim` handle it is given:
``zero_grad()``, ``backward(loss)``, ``step(index)``.

Why handles and not one generic step: a GAN's update touches two optimizers in an order the
family chooses (and backpropagates into one network at a time), so the loop cannot do the
backward pass itself; it owns everything around it instead.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from aigc_cli.core.errors import ConfigError

OPTIMIZERS = ("adam", "adamw")


@dataclass(frozen=True)
class WarmupCosine:
    """A linear warm-up over ``warmup`` steps, then a cosine from the peak to ``floor`` times the
    peak at the horizon (the run's last step: its epochs, or what its --time budget allows)."""

    warmup: int
    floor: float = 0.1

    def factor(self, step: int, horizon: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        progress = min((step - self.warmup) / max(horizon - self.warmup, 1), 1.0)
        return self.floor + (1 - self.floor) * 0.5 * (1 + math.cos(math.pi * progress))


@dataclass
class OptimizerSpec:
    """What one optimizer trains and how. ``groups``: torch parameter groups (``{"params":
    [...], "lr": ..., "weight_decay": ...}``), in a fixed order (checkpoints index its state by
    it). ``ema``: training module name -> decay of the weight average the loop keeps of it, as
    the module ``<name>_ema``, updated after each step of this optimizer."""

    groups: list[dict]
    kind: str = "adam"
    betas: tuple[float, float] = (0.9, 0.999)
    fused: bool = False  # one kernel for every parameter (CPU and CUDA): most of a small model's step
    grad_clip: float | None = None  # clip the gradient's norm to this
    schedule: WarmupCosine | None = None  # the learning rate of every group, by the step index
    loss_scaling: bool = False  # fp16 training: a GradScaler, kept in the checkpoint
    ema: dict[str, float] = field(default_factory=dict)


class EMA:
    """Exponential moving average of a module's weights, with a warm-up so short runs benefit.

    Buffers (BatchNorm statistics) are not averaged; see ``models.common.recalibrate_batchnorm``.
    """

    def __init__(self, module: nn.Module, decay: float):
        self.decay = decay
        self.module = module
        self.shadow = copy.deepcopy(module).eval().requires_grad_(False)
        # Frozen parameters (a LoRA run's base) never change: only what trains is averaged.
        self.pairs = [(s, p) for s, p in zip(self.shadow.parameters(), module.parameters()) if p.requires_grad]

    @torch.no_grad()
    def update(self, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        for s, p in self.pairs:
            s.lerp_(p.detach(), 1 - d)


class Optim:
    """One optimizer as a task steps it: its gradient clipping, learning-rate schedule, loss
    scaling and weight averages come with it. ``horizon``: the step the schedule ends at (set
    by the loop)."""

    def __init__(self, optimizer: torch.optim.Optimizer, spec: OptimizerSpec, emas: list[EMA],
                 device: torch.device, params: list[nn.Parameter]):
        self.optimizer, self.spec, self.emas = optimizer, spec, emas
        self.params = params  # what it trains, in its modules' order (the order clipping sums in)
        self.base_lr = [g["lr"] for g in optimizer.param_groups]
        self.scaler = torch.amp.GradScaler(device.type, enabled=spec.loss_scaling)
        self.horizon = 1

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def backward(self, loss: torch.Tensor, **kwargs) -> None:
        """``loss.backward(**kwargs)``, scaled when the spec asks for loss scaling."""
        self.scaler.scale(loss).backward(**kwargs)

    def step(self, index: int) -> torch.Tensor | None:
        """Update the weights: the schedule's learning rate at ``index`` (this optimizer's own step
        count, from 0), the gradient clipped, the step, the weight averages. Returns the
        gradient's norm before clipping when the spec clips, else None."""
        if self.spec.schedule is not None:
            f = self.spec.schedule.factor(index, self.horizon)
            for group, lr in zip(self.optimizer.param_groups, self.base_lr):
                group["lr"] = lr * f
        norm = None
        if self.spec.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)  # a no-op without loss scaling
            norm = torch.nn.utils.clip_grad_norm_(self.params, self.spec.grad_clip)
        self.scaler.step(self.optimizer)  # without loss scaling: optimizer.step()
        self.scaler.update()
        for ema in self.emas:
            ema.update(index)
        return norm

    def state(self) -> dict:
        """What the checkpoint keeps besides the optimizer's own state: the loss scale."""
        return {"scaler": self.scaler.state_dict()} if self.scaler.is_enabled() else {}

    def load_state(self, state: dict) -> None:
        if self.scaler.is_enabled() and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])


def _make(spec: OptimizerSpec, groups: list[dict], device: torch.device) -> torch.optim.Optimizer:
    if spec.kind not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {spec.kind!r}; choose one of {', '.join(OPTIMIZERS)}")
    cls = torch.optim.AdamW if spec.kind == "adamw" else torch.optim.Adam
    kwargs = {"fused": True} if spec.fused and device.type in ("cpu", "cuda") else {}
    return cls(groups, betas=spec.betas, **kwargs)


def build_optimizers(modules: dict[str, nn.Module], specs: dict[str, OptimizerSpec], device: torch.device,
                     frozen: Callable[[str], bool] | None = None) -> dict[str, Optim]:
    """The task's optimizers from its ``specs``. Parameters whose qualified name (``G.net.0.weight``)
    ``frozen`` accepts stop requiring gradients and are left out of every group (a group left
    empty is dropped). Each spec's ``ema`` modules get their average, added to ``modules`` as
    ``<name>_ema``."""
    names = {id(p): f"{m}.{n}" for m, module in modules.items() for n, p in module.named_parameters()}
    order = {key: i for i, key in enumerate(names)}
    out = {}
    for opt_name, spec in specs.items():
        groups = []
        for group in spec.groups:
            params = list(group["params"])
            if frozen is not None:
                for p in params:
                    if frozen(names.get(id(p), "")):
                        p.requires_grad_(False)
                params = [p for p in params if p.requires_grad]
            if params:
                groups.append({**group, "params": params})
        if not groups:
            raise ConfigError(f"optimizer {opt_name!r} has nothing left to train: every parameter is frozen")
        emas = []
        for module_name, decay in spec.ema.items():
            ema = EMA(modules[module_name], decay)
            modules[f"{module_name}_ema"] = ema.shadow
            emas.append(ema)
        params = sorted((p for g in groups for p in g["params"]), key=lambda p: order.get(id(p), len(order)))
        out[opt_name] = Optim(_make(spec, groups, device), spec, emas, device, params)
    return out


def attach(task, device: torch.device, frozen: Callable[[str], bool] | None = None) -> dict[str, Optim]:
    """Build ``task``'s optimizers from its ``param_groups()`` and hand them to it (``task.optim``):
    what the loop does before the first step, for anything else that steps a task (benches)."""
    task.optim = build_optimizers(task.modules, task.param_groups(), device, frozen)
    return task.optim
