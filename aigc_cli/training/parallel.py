"""Data-parallel training over a torch.distributed process group (docs/distributed.md).

The loop calls ``DataParallel(task)`` when more than one rank runs; a family's task is written
for one process and needs nothing else, besides drawing its per-sample noise with
``core.distributed.batch_randn`` and friends. Three things make N ranks compute what one process
computes with the same global batch:

- **gradients**: every backward pass ends with one flat all-reduce (mean) of the gradients it
  produced, before anything reads them (an optimizer step, GradScaler's inf check, clipping);
- **BatchNorm**: statistics over the global batch (``SyncBatchNorm`` here, since PyTorch's own
  refuses CPU tensors, and gloo on CPU is what the tests run);
- **what is logged**: the step's losses are averaged over the ranks, in the same all-reduce that
  lets the ranks agree to stop (a signal, the --time budget) after the same step.

Why not ``nn.parallel.DistributedDataParallel``: a GAN step runs D several times before one
backward, toggles ``requires_grad``, backpropagates with ``inputs=`` into one network at a time
and takes input gradients for the gradient penalty; DDP's reducer expects one forward and one
backward that reaches every parameter, and would need each family's step rewritten around it.
Averaging at the end of each backward gives the same gradients for any step a family writes
(StyleGAN3's training loop reduces its gradients this way for the same reason). What is lost is
DDP's overlap of communication with the backward pass; for the models here (a few million
parameters) one all-reduce per backward costs little (benches/bench_ddp.py).
"""

from __future__ import annotations

import contextlib
import signal
from typing import Iterable, Iterator

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from aigc_cli.core import distributed

_sync_enabled = [True]


@contextlib.contextmanager
def local_batchnorm() -> Iterator[None]:
    """BatchNorm normalises with this rank's batch only inside the block: for what rank 0 does
    alone (re-estimating an EMA generator's statistics) while the others wait."""
    _sync_enabled.append(False)
    try:
        yield
    finally:
        _sync_enabled.pop()


class SyncBatchNorm(_BatchNorm):
    """BatchNorm over the global batch: one all-reduce of per-channel sums (differentiable, so
    the backward pass is synchronised too). Parameter and buffer names are BatchNorm's: the
    weights load into a plain BatchNorm for sampling."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {x.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and _sync_enabled[-1] and distributed.active()):
            return super().forward(x)
        self._check_input_dim(x)
        c = x.size(1)
        dims = [0, *range(2, x.dim())]
        shape = [1, c] + [1] * (x.dim() - 2)
        xf = x.float()
        # Shifted sums (the shift: the running mean, equal on every rank) keep E[x^2] - E[x]^2
        # from cancelling when the mean is large against the spread.
        shift = (self.running_mean if self.running_mean is not None else xf.mean(dims)).detach().float()
        d = xf - shift.view(shape)
        count = torch.full((1,), x.numel() // c, dtype=torch.float32, device=x.device)
        stats = _AllReduceSum.apply(torch.cat([d.sum(dims), (d * d).sum(dims), count]))  # (2C + 1,)
        n = stats[-1]
        mean_d = stats[:c] / n
        var = (stats[c : 2 * c] / n - mean_d * mean_d).clamp_min(0)  # biased, as BatchNorm normalises
        mean = shift + mean_d
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * n / (n - 1).clamp_min(1), alpha=m)
        y = (xf - mean.view(shape)) * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


class _AllReduceSum(torch.autograd.Function):
    """Sum over the ranks, differentiable: each rank's input reaches every rank's output, so the
    gradient of an input is the sum of the output gradients over the ranks."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def convert_batchnorm(module: nn.Module) -> nn.Module:
    """``module`` with every BatchNorm replaced by a SyncBatchNorm holding the same Parameter and
    buffer objects (optimizers and EMA keep pointing at them)."""
    if isinstance(module, _BatchNorm) and not isinstance(module, SyncBatchNorm):
        sync = SyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                             module.track_running_stats)
        if module.affine:
            sync.weight, sync.bias = module.weight, module.bias
        sync.running_mean, sync.running_var = module.running_mean, module.running_var
        sync.num_batches_tracked = module.num_batches_tracked
        sync.train(module.training)
        return sync
    for name, child in module.named_children():
        new = convert_batchnorm(child)
        if new is not child:
            setattr(module, name, new)
    return module


class GradientAverager:
    """Averages gradients over the ranks at the end of every backward pass that produced some.

    Each trained parameter gets a hook that fires when its gradient is complete; the first one of
    a backward pass queues a callback for the pass's end, which all-reduces the touched
    parameters' gradients in one flat tensor, in parameter order (the same on every rank,
    whatever order the hooks fired in). A gradient accumulated over several passes is averaged
    correctly: the part averaged before is equal on every rank, and averaging it again keeps it.
    """

    def __init__(self, params: Iterable[nn.Parameter]):
        self.params = list(dict.fromkeys(params))  # (each once, in the optimizers' order)
        self.touched: set[int] = set()
        self.queued = False
        self.handles = [p.register_post_accumulate_grad_hook(self._ready) for p in self.params]

    def _ready(self, param: torch.Tensor) -> None:
        self.touched.add(id(param))
        if not self.queued:
            self.queued = True
            torch.autograd.Variable._execution_engine.queue_callback(self._reduce)

    def _reduce(self) -> None:
        params = [p for p in self.params if id(p) in self.touched and p.grad is not None]
        self.touched.clear()
        self.queued = False
        if not params:
            return
        flat = torch.cat([p.grad.reshape(-1) for p in params])
        dist.all_reduce(flat)
        flat /= distributed.world()
        offset = 0
        for p in params:
            n = p.grad.numel()
            p.grad.copy_(flat[offset : offset + n].view_as(p.grad))
            offset += n

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def broadcast_state(modules: Iterable[nn.Module]) -> None:
    """Rank 0's parameters and buffers on every rank (as DDP does at the start)."""
    for module in modules:
        for t in module.state_dict().values():
            if isinstance(t, torch.Tensor):
                dist.broadcast(t, src=0)


class DataParallel:
    """Puts a task's modules and optimizers in step across the ranks (see the module's doc)."""

    def __init__(self, modules: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer]):
        for m in modules.values():
            convert_batchnorm(m)
        broadcast_state(modules.values())
        params = [p for opt in optimizers.values() for g in opt.param_groups for p in g["params"]]
        self.averager = GradientAverager(params)

    def close(self) -> None:
        self.averager.remove()


def agree(values: dict[str, float], signum: int | None, out_of_time: bool,
          device: torch.device | None = None) -> tuple[dict[str, float], int | None, bool]:
    """The step's losses averaged over the ranks; the signal any rank was sent (SIGTERM before
    SIGINT), and whether rank 0's --time budget ran out: every rank then stops after this same
    step. One all-reduce; alone, the arguments come back as they are."""
    if not distributed.active():
        return values, signum, out_of_time
    keys = sorted(values)
    flags = [float(signum == signal.SIGINT), float(signum == signal.SIGTERM),
             float(out_of_time and distributed.is_main())]
    flat = torch.tensor([values[k] for k in keys] + flags, dtype=torch.float64, device=device)
    dist.all_reduce(flat)
    flat = flat.tolist()
    n = distributed.world()
    averaged = {k: flat[i] / n for i, k in enumerate(keys)}
    sigint, sigterm, late = flat[-3:]
    agreed = signal.SIGTERM if sigterm else signal.SIGINT if sigint else None
    return averaged, agreed, late > 0

