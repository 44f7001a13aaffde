"""Size-check a family's networks before a run exists: an impossible shape or a model too large
for the device is refused in words by ``train()``, not found by the first training step (a run
left ``failed``) or by an allocator asking for terabytes.

A family's ``make_config`` calls ``check_network(build, forward, sizes)``:

- ``build()`` -> ``{name: module}``: the networks one training step uses. They are built on the
  ``meta`` device: shapes without storage, so a 23 TB network costs nothing to build.
- ``forward(nets, batch)``: one training step's forward passes at the run's batch, on inputs it
  makes with ``torch.randn``/``torch.zeros`` (meta tensors too, made under the meta device). A
  shape that does not fit fails here, named by the options in ``sizes`` and the layer it failed in.
- ``sizes``: the options that size the networks, as given (``{"width": 3, "channel_mult": "1,2"}``),
  for the messages.

The memory estimate is parameters x 4 fp32 copies (the weights, their gradients and Adam's two
moments) plus the tensors the forward keeps for backward, counted through autograd's saved-tensor
hooks at the per-process batch: for every family's networks, the very bytes the CPU's autograd
keeps (tests/test_sizes.py), with two stand-ins where the meta device works differently
(``_fused_attention``, ``_short_recurrences``). It is a lower bound: backward's temporaries, EMA
copies, the CPU LSTM's oneDNN workspace and the dataset (which lives on the device) come on top,
so a refusal is never wrong, and a run near the limit may still run out. ``train()`` says which
device and batch to size for (``sizing_for``); a ``make_config`` called on its own checks shapes
at a batch of 2 and no memory.
"""

from __future__ import annotations

import contextlib
import functools
import os
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from aigc_cli.core import distributed
from aigc_cli.core.device import auto_precision
from aigc_cli.core.errors import AigcError, ConfigError, first_line, opt

STATE_COPIES = 4  # fp32 weights, gradients, Adam's first and second moments
RNN_STEPS = 2  # time steps a recurrent layer really runs on meta (see _short_recurrences)
DEFAULT_BATCH = 2  # shapes only (make_config outside train()); BatchNorm needs 2 to train


@dataclass(frozen=True)
class Target:
    """What the run will train on: its device and the batch of one process."""

    device: torch.device
    batch: int


_TARGET: ContextVar[Target | None] = ContextVar("aigc_sizing_target", default=None)


@contextlib.contextmanager
def sizing_for(device: torch.device | str, batch: int) -> Iterator[None]:
    """Within this block, ``check_network`` sizes for ``batch`` images (or windows) per step on
    ``device`` and refuses what that device cannot hold."""
    token = _TARGET.set(Target(torch.device(device), max(1, int(batch))))
    try:
        yield
    finally:
        _TARGET.reset(token)


@dataclass(frozen=True)
class Estimate:
    parameters: int
    batch: int
    state_bytes: int  # weights, gradients and Adam's state
    activation_bytes: int | None  # kept for backward at ``batch``; None: the forward was skipped

    @property
    def total_bytes(self) -> int:
        return self.state_bytes + (self.activation_bytes or 0)


def check_network(build: Callable[[], dict[str, nn.Module]],
                  forward: Callable[[dict[str, nn.Module], int], Any],
                  sizes: dict[str, Any], precision: str = "fp32") -> Estimate:
    """Build the networks and run ``forward`` on the meta device; ConfigError in words for a shape
    that does not work or (inside ``sizing_for``) a training too large for the device.
    ``precision``: the run's training arithmetic (bf16/fp16 autocast keeps half-size activations)."""
    target = _TARGET.get()
    batch = target.batch if target is not None else DEFAULT_BATCH
    with torch.device("meta"):
        nets = _build(build, sizes)
        parameters = _count(nets)
        # CUDA's fused attention takes dropout too; the CPU's falls back to the math path with it.
        activations = _forward(nets, forward, batch, sizes, cuda=target is not None and target.device.type == "cuda")
    if activations is not None and target is not None and _half(precision, target.device):
        activations //= 2
    estimate = Estimate(parameters, batch, STATE_COPIES * 4 * parameters, activations)
    # Rank 0 alone judges the memory: the others would see what rank 0 has meanwhile allocated.
    if target is not None and distributed.is_main():
        _check_fits(estimate, target, sizes)
    return estimate


def _build(build, sizes) -> dict[str, nn.Module]:
    try:
        return build()
    except AigcError:
        raise
    except (RuntimeError, ValueError, TypeError, OverflowError, ZeroDivisionError, IndexError) as e:
        raise ConfigError(f"{_subject(sizes)} {_why(e)}; {_change(sizes)}") from None


def _count(nets: dict[str, nn.Module]) -> int:
    seen: dict[int, int] = {}
    for net in nets.values():
        for p in net.parameters():
            seen[id(p)] = p.numel()
    return sum(seen.values())


def _forward(nets, forward, batch: int, sizes, cuda: bool) -> int | None:
    """Bytes kept for backward by one forward at ``batch``; ConfigError naming the failing layer."""
    params = {id(p) for net in nets.values() for p in net.parameters()}
    kept: dict[int, tuple[torch.Tensor, int]] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        base = t._base if t._base is not None else t  # views of one tensor count once
        if id(base) not in params:
            kept[id(base)] = (base, base.numel() * base.element_size())  # the tensor held: ids stay unique
        return t

    stack: list[str] = []  # the modules being run, outermost first: after an error, the last one failed
    handles = []

    def leave(module, args, out) -> None:  # None: the module's output stays as it is
        stack.pop()

    for net_name, net in nets.items():
        for name, module in net.named_modules():
            where = f"{net_name}.{name}" if name else net_name
            handles.append(module.register_forward_pre_hook(lambda m, a, where=where: stack.append(where)))
            handles.append(module.register_forward_hook(leave))
    stretched = [0]  # bytes the shortened recurrences stand for (_short_recurrences)
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), _fused_attention(dropout=cuda), \
                _short_recurrences(nets, lambda: sum(size for _, size in kept.values()), stretched):
            forward(nets, batch)
    except NotImplementedError:
        return None  # an operation without a meta kernel: shapes unchecked, parameters still counted
    except AigcError:
        raise
    except (RuntimeError, ValueError, TypeError, IndexError, ZeroDivisionError) as e:
        layer = stack[-1] if stack else None
        where = f" in {layer} ({type(_module(nets, layer)).__name__})" if layer else ""
        raise ConfigError(f"{_subject(sizes)} cannot train at a batch of {batch}: "
                          f"{first_line(e).rstrip('.')}{where}; {_change(sizes)}") from None
    finally:
        for h in handles:
            h.remove()
    return sum(size for _, size in kept.values()) + stretched[0]


@contextlib.contextmanager
def _short_recurrences(nets, kept_bytes: Callable[[], int], stretched: list[int]) -> Iterator[None]:
    """nn.GRU and nn.LSTM have no fused meta kernel: on meta they run step by step (a 2-layer LSTM
    over 1,024 tokens took 44 s on the shared 2-core machine). Within this block they run
    RNN_STEPS steps, their output is stretched to the sequence's length, and what those steps keep
    for backward counts length / RNN_STEPS times (``stretched``): the same bytes as the whole run
    step by step, measured for contexts of 64 and 256."""
    patched = [m for net in nets.values() for m in net.modules() if isinstance(m, nn.RNNBase)]
    for m in patched:
        m.forward = functools.partial(_short_forward, m, type(m).forward, kept_bytes, stretched)
    try:
        yield
    finally:
        for m in patched:
            del m.forward  # the class's forward again


def _short_forward(module, forward, kept_bytes, stretched, x, hx=None):
    time_dim = 1 if module.batch_first else 0
    if not isinstance(x, torch.Tensor) or x.dim() != 3 or x.shape[time_dim] <= RNN_STEPS:
        return forward(module, x, hx)  # a packed sequence, an unbatched one or a short one: as it is
    length, before = x.shape[time_dim], kept_bytes()
    # A copy, not a view: a view's base (the whole sequence) would count among those steps' bytes.
    out, state = forward(module, x.narrow(time_dim, 0, RNN_STEPS).clone(), hx)
    stretched[0] += (kept_bytes() - before) * (length - RNN_STEPS) // RNN_STEPS
    shape = list(out.shape)
    shape[time_dim] = length
    return out.new_empty(shape).requires_grad_(out.requires_grad), state


class _FusedAttentionKeeps(torch.autograd.Function):
    """An attention output that keeps for backward what a fused kernel keeps: q, k, v, the output
    and one log-sum-exp per row (shapes only: it runs on meta tensors alone)."""

    @staticmethod
    def forward(ctx, q, k, v, shape):
        # (B, H, T, D) laid out as (B, T, H, D), as the kernels give it: merging the heads back is a view.
        if len(shape) == 4:
            out = q.new_empty(shape[0], shape[2], shape[1], shape[3]).transpose(1, 2)
        else:
            out = q.new_empty(shape)
        ctx.save_for_backward(q, k, v, out, q.new_empty(shape[:-1], dtype=torch.float32))
        return out

    @staticmethod
    def backward(ctx, grad):
        raise NotImplementedError("sizing runs no backward")


@contextlib.contextmanager
def _fused_attention(dropout: bool) -> Iterator[None]:
    """Without a mask (and on the CPU without dropout), attention runs a fused (flash) kernel that
    keeps q, k, v, the output and a log-sum-exp per row; on meta it runs the math path, which keeps
    the (T, T) weights as well (4.4 GB instead of 2.4 GB for a 2-layer GPT of width 256 over 1,024
    tokens at a batch of 64). Within this block such a call on meta tensors keeps what the fused
    kernel keeps; the math path (a mask; dropout on the CPU) is counted as it is."""
    real = F.scaled_dot_product_attention

    def attention(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, **options):
        if not q.is_meta or attn_mask is not None or (dropout_p and not dropout):
            return real(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, **options)
        with torch.no_grad():  # the shape checks and the output's shape, nothing kept
            shape = real(q, k, v, is_causal=is_causal, **options).shape
        return _FusedAttentionKeeps.apply(q, k, v, shape)

    F.scaled_dot_product_attention = attention
    try:
        yield
    finally:
        F.scaled_dot_product_attention = real


def _module(nets: dict[str, nn.Module], where: str) -> nn.Module:
    net, _, name = where.partition(".")
    return nets[net].get_submodule(name) if name else nets[net]


def _half(precision: str, device: torch.device) -> bool:
    chosen = auto_precision(device) if precision == "auto" else precision
    return chosen in ("bf16", "fp16")


def _check_fits(estimate: Estimate, target: Target, sizes) -> None:
    have = available_bytes(target.device)
    # CPU ranks on this machine (--nproc, torchrun) each hold a copy in one memory; GPU ranks have a GPU each.
    shared = target.device.type == "cpu" and distributed.active()
    processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1")) if shared else 1
    need = estimate.total_bytes * processes
    if have is None or need <= have:
        return
    parts = [f"{_count_text(estimate.parameters)} parameters: {human_bytes(estimate.state_bytes)} for the weights, "
             "their gradients and Adam's state"]
    if estimate.activation_bytes:
        parts.append(f"{human_bytes(estimate.activation_bytes)} of activations at a batch of {estimate.batch}")
    if processes > 1:
        parts.append(f"times {processes} processes on this machine")
    where = "this machine has" if target.device.type == "cpu" else f"{target.device} has"
    smaller = list(sizes)
    if estimate.activation_bytes and estimate.activation_bytes > estimate.state_bytes:
        smaller.insert(0, "batch_size")  # the activations dominate: the batch is the first lever
    raise ConfigError(f"the model needs at least {human_bytes(need)} to train ({'; '.join(parts)}); {where} "
                      f"{human_bytes(have)} available: use a smaller {_or(smaller)}")


def available_bytes(device: torch.device) -> int | None:
    """Memory a new allocation can have on ``device``: the CPU's MemAvailable (Linux) or free
    physical pages, a CUDA device's free memory; None where unknown (then nothing is refused)."""
    if device.type == "cuda":
        try:
            return int(torch.cuda.mem_get_info(device)[0])
        except (RuntimeError, AssertionError):
            return None
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def human_bytes(n: float) -> str:
    """``23e12`` -> ``"23 TB"``, ``1.5e9`` -> ``"1.5 GB"`` (powers of 1000, as disks and RAM are sold)."""
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if n < 999.5 or unit == "PB":
            return f"{n:.2g} {unit}" if n < 10 else f"{n:.0f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def _count_text(n: int) -> str:
    return f"{n:,}" if n < 1e9 else f"{n:.2g}".replace("e+", "e")


def _why(e: BaseException) -> str:
    text = first_line(e)
    if "overflow" in text.lower():
        return "is too large to describe (a weight of more than 2**63 numbers)"
    return f"cannot be built: {text}"


def _subject(sizes: dict[str, Any]) -> str:
    """``--width 3 with --channel-mult 1,2 gives a network that`` (the CLI spells each marked
    option as its flag), or ``the network`` when no option is named."""
    given = [f"{opt(name)} {value}" for name, value in sizes.items()]
    if not given:
        return "the network"
    return given[0] + (" with " + _and(given[1:]) if len(given) > 1 else "") + " gives a network that"


def _change(sizes: dict[str, Any]) -> str:
    return f"change {_or(list(sizes))}" if sizes else "change the network's options"


def _or(names: list[str]) -> str:
    marked = [opt(n) for n in names]
    return marked[0] if len(marked) == 1 else ", ".join(marked[:-1]) + " or " + marked[-1]


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]

