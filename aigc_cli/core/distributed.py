"""Several processes, one job: the process group that ``torchrun`` (or ``aigc train --nproc``)
sets up, and the few things every part of aigc asks of it.

One process (no ``WORLD_SIZE`` above 1 in the environment, no process group) is world 1, rank 0,
and every function here is then a no-op or its obvious single-process value: code written
against this module runs unchanged alone.

- ``init_from_env()``: join the group torchrun describes (gloo on CPU, NCCL on CUDA), with a
  bounded timeout, so that a rank that dies makes the others fail instead of hang forever;
- ``rank()``, ``world()``, ``is_main()``: who am I; rank 0 alone writes files;
- ``batch_randn``/``batch_rand``/``batch_randint``: per-sample noise of the *global* batch,
  every rank drawing it all from the same seeded stream and keeping its own slice, so that N
  ranks compute what one process computes (and their random states never part);
- ``from_main(fn)``: rank 0 computes a value (creates the run), the others receive it, or rank
  0's error as their own; ``main_first(fn)``: rank 0 runs it first (a download), then the others.

Light to import: torch loads inside the functions that need it.
"""

from __future__ import annotations

import datetime
import os
import re
import sys
from typing import Any, Callable, TypeVar

from aigc_cli.core import signals
from aigc_cli.core.errors import AigcError, ConfigError, first_line
from aigc_cli.core.faults import fault_point

T = TypeVar("T")

TIMEOUT_ENV = "AIGC_DIST_TIMEOUT"
DEFAULT_TIMEOUT = 600  # seconds a collective may wait for a missing rank (rank 0 saving, a dead peer)
NO_MPS = "several processes need CUDA or the CPU (gloo cannot reach MPS tensors); use --device cpu"


class RankError(AigcError):
    """Another rank failed; this one stops with its message."""


def own_error(e: BaseException) -> BaseException:
    """Mark ``e`` as this rank's own: an error the other ranks did not meet (the run store not
    visible from this node, a dataset missing here). The CLI says those on every rank, and the
    rest, which every rank meets alike, on rank 0 alone."""
    e.rank_local = True  # type: ignore[attr-defined]
    return e


def lost_rank(e: BaseException) -> str | None:
    """What a failed collective says, in short, when ``e`` is one (a peer died, timed out or
    closed its connection); None for any other error."""
    text = str(e).strip()
    dist_error = False
    if "torch" in sys.modules:
        import torch.distributed as dist

        dist_error = isinstance(e, getattr(dist, "DistError", ()))
    if not (dist_error or (isinstance(e, RuntimeError) and any(w in text.lower() for w in ("gloo", "nccl", "timed out")))):
        return None
    line = re.sub(r"^\[[^\]]*\]\s*", "", first_line(e))  # "[.../pair.cc:545] Read error ..." -> "Read error ..."
    return line.split(". ")[0].rstrip(".")


def launched() -> bool:
    """True in a process that torchrun (or ``aigc ... --nproc``) started as one of several."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        return False


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity, as taskset or a container's cpuset
    sets it), else the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS and Windows have no affinity call
        return os.cpu_count() or 1


def timeout_seconds() -> float:
    value = os.environ.get(TIMEOUT_ENV)
    if value is None:
        return float(DEFAULT_TIMEOUT)
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise ConfigError(f"{TIMEOUT_ENV} must be a number of seconds above 0, got {value!r}")
    return seconds


def check_device(device, nproc: int) -> None:
    """Refuse a process count the device cannot hold: one GPU per rank on CUDA, one core per rank
    on the CPU; MPS not at all.

    On the CPU each rank computes its slice of the batch with its own threads; past one rank per
    core the ranks only take turns on the same cores, and every step still waits for the slowest
    (its all-reduce), so each extra rank makes training slower, not faster (docs/distributed.md).
    To run more ranks than cores on purpose (a test of many ranks on a small machine), start them
    with torchrun itself."""
    import torch

    if device.type == "mps":
        raise ConfigError(NO_MPS)
    if device.type == "cuda" and nproc > torch.cuda.device_count():
        raise ConfigError(f"{nproc} processes need {nproc} GPUs, and {torch.cuda.device_count()} are visible; "
                          f"use --nproc {torch.cuda.device_count()} or --device cpu")
    if device.type == "cpu" and nproc > usable_cores():
        cores = usable_cores()
        raise ConfigError(f"--nproc {nproc} on the CPU needs a core per process, and this process may use {cores}; "
                          f"more processes than cores only slow training down: use --nproc {cores} or fewer")


def init_from_env(device_type: str) -> None:
    """Join the process group torchrun describes (no-op alone, or when already joined)."""
    import torch.distributed as dist

    if not launched() or dist.is_initialized():
        return
    fault_point("rank:join")  # tests/test_distributed.py: no rank starts for a refused command
    for name in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        if name not in os.environ:
            raise ConfigError(f"WORLD_SIZE is set but {name} is not: launch with torchrun or 'aigc train ... --nproc N'")
    if device_type == "mps":
        raise ConfigError(NO_MPS)
    backend = "nccl" if device_type == "cuda" else "gloo"
    if backend == "nccl":
        import torch

        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))  # before NCCL starts: one GPU per rank
    with signals.fatal():  # waits in C++ for every rank: a signal could not be handled before it returns
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_seconds()))


def place(device):
    """This rank's device: ``cuda:LOCAL_RANK`` for CUDA (one GPU per process), else ``device``."""
    import torch

    if device.type != "cuda" or not active():
        return device
    placed = torch.device("cuda", local_rank())
    torch.cuda.set_device(placed)
    return placed


def shutdown() -> None:
    if "torch" not in sys.modules:
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def active() -> bool:
    """A process group of more than one rank is up."""
    if "torch" not in sys.modules:  # nothing imported torch, so nobody set a group up
        return False
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if active() else 0


def world() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0")) if active() else 0


def barrier() -> None:
    import torch.distributed as dist

    if active():
        dist.barrier()


def broadcast_object(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (small picklable values between our own ranks: ids,
    flags, messages; never a file)."""
    import torch.distributed as dist

    if not active():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def from_main(fn: Callable[[], T], what: str) -> T:
    """``fn()`` on rank 0, its result (small, picklable) on every rank; if it raised, rank 0
    raises it and the others a RankError with its message (``what``: what rank 0 was doing)."""
    if not active():
        return fn()
    value, error = None, None
    if is_main():
        try:
            value = fn()
        except BaseException as e:  # noqa: BLE001 - told to the others, then raised here
            error = e
    sent = (value, None) if error is None else (None, str(error) or type(error).__name__)
    try:
        value, message = broadcast_object(sent)
    except Exception:
        if error is not None:  # the others are gone (the same Ctrl-C stopped them): ours is the story
            raise error from None
        raise
    if error is not None:
        raise error
    if message is not None:
        raise RankError(f"rank 0 failed while {what}: {message}")
    return value


def main_first(fn: Callable[[], T], what: str) -> T:
    """``fn()`` on rank 0 first (a download into the shared store, a cache it fills), then on the
    others; if rank 0 failed, they raise a RankError with its message instead of running it."""
    if not active():
        return fn()
    result: list[T] = []
    from_main(lambda: result.append(fn()), what)
    if result:
        return result[0]
    try:
        return fn()
    except Exception as e:  # rank 0 succeeded at it: this failure is this rank's own
        raise own_error(e)


# -- work split over the ranks --------------------------------------------------------------
def shard(n: int, unit: int) -> tuple[int, int]:
    """This rank's [lo, hi) of ``n`` items, in whole ``unit``s (batches): each batch is then
    computed exactly as one process computes it, and the gathered result is the same."""
    units = -(-n // unit)
    r, w = rank(), world()
    return min(n, r * units // w * unit), min(n, (r + 1) * units // w * unit)


def _collective_device():
    """Where this rank's collectives take tensors: its GPU for NCCL, the CPU for gloo."""
    import torch
    import torch.distributed as dist

    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def gather_rows(t):
    """Every rank's rows of ``t`` (n_r, ...), concatenated in rank order, on every rank. Alone:
    ``t`` itself. The rows of equal shape and dtype; their count may differ (even be 0)."""
    import torch
    import torch.distributed as dist

    if not active():
        return t
    home, dev = t.device, _collective_device()
    x = t.to(dev).contiguous()
    counts = [torch.zeros(1, dtype=torch.int64, device=dev) for _ in range(world())]
    dist.all_gather(counts, torch.tensor([x.shape[0]], dtype=torch.int64, device=dev))
    counts = [int(c) for c in counts]
    most = max(counts)
    padded = torch.zeros((most, *x.shape[1:]), dtype=x.dtype, device=dev)
    padded[: x.shape[0]] = x
    parts = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(parts, padded)
    return torch.cat([p[:c] for p, c in zip(parts, counts)]).to(home)


def all_sum(value: int) -> int:
    """The sum of an integer over the ranks (alone: the integer)."""
    import torch
    import torch.distributed as dist

    if not active():
        return value
    t = torch.tensor([value], dtype=torch.int64, device=_collective_device())
    dist.all_reduce(t)
    return int(t)


# -- per-sample noise of the global batch ------------------------------------------------------
def _slice(draw: Callable[[int], Any], b: int):
    # (b*world, ...) drawn by every rank alike; rank r keeps rows [r*b, (r+1)*b).
    n = world()
    if n == 1:
        return draw(b)
    r = rank()
    return draw(b * n)[r * b : (r + 1) * b]


def batch_randn(b: int, *shape: int, device=None, dtype=None):
    """``torch.randn(b, *shape)`` for this rank's ``b`` samples of the global batch."""
    import torch

    return _slice(lambda n: torch.randn(n, *shape, device=device, dtype=dtype), b)


def batch_rand(b: int, *shape: int, device=None, dtype=None):
    """``torch.rand(b, *shape)`` for this rank's ``b`` samples of the global batch."""
    import torch

    return _slice(lambda n: torch.rand(n, *shape, device=device, dtype=dtype), b)


def batch_randint(high: int, b: int, device=None):
    """``torch.randint(0, high, (b,))`` for this rank's ``b`` samples of the global batch."""
    import torch

    return _slice(lambda n: torch.randint(0, high, (n,), device=device), b)
