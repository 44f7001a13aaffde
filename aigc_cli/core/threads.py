"""CPU threads for a region of work, chosen by the size of its steps.

torch splits each CPU op over its intra-op pool (one thread per core by default), and the threads
meet at the op's end. A split saves microseconds on a small op; but when another job holds one of
the cores, the thread on that core waits for the scheduler's next slice (milliseconds) and every
op waits with it. Token-by-token generation runs hundreds of tiny ops per token: on the 2-core
machine of docs/benchmarks/threads.md, shared with other jobs, the default GPT generated 225
tokens/s on one thread and 9 on two. Large steps (a training batch, diffusion at batch 64) are
made of ops long enough for more cores to pay off on an idle machine, so they keep torch's count;
on a busy machine one thread won there too (``--threads 1``), which the size of a step cannot
tell. SMALL_STEP below says where the line is, and why.

Who decides, the first that applies:

1. ``set_threads(n)`` (``aigc --threads N``, ``AIGC_THREADS``): n threads for everything;
2. ``OMP_NUM_THREADS`` set in the environment, or a rank of several (torchrun and ``--nproc``
   share the cores out among the ranks): torch's count, never changed here;
3. otherwise ``cpu_threads(flops)`` around a region: 1 thread when one sequential step of it
   costs under ``SMALL_STEP`` floating-point operations, torch's count above.

Light to import: torch loads inside the functions that need it.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

# FLOPs of one sequential step (one token of n continuations, one time step of an RNN over a
# batch, one forward of a GPT over B x T tokens) under which one thread runs it. Measured on the
# 2-core machine of docs/benchmarks/threads.md: on a quiet machine two threads first pay 1.2x at
# 26 (GRU) to 103 (GPT) MFLOPs a step and 1.8-1.9x from 1.6 GFLOPs; with another job on a core
# they lose at every size (0.14-0.63x), and a latency-bound loop of small steps loses most. The
# bound sits above the crossover on purpose: token-by-token generation (1.6 MFLOPs a token, 100
# MFLOPs for 64 continuations) and small models' scoring (a GRU's time step at batch 64: 105
# MFLOPs) run on one thread, which costs the GRU's `eval ppl` 1.6x on a quiet machine and saves
# 2.2x here (the report: 100x) with another job running; a GPT scoring batch (6.6
# GFLOPs) and training keep torch's count, where a quiet machine gains 1.8x.
SMALL_STEP = 1e9

_fixed: int | None = None  # set_threads(n): the user's count
_torch_default: int | None = None  # torch's count before set_threads changed it
_used: int | None = None  # the count the last cpu_threads region ran with


def set_threads(n: int | None) -> None:
    """Run everything on ``n`` CPU threads (``aigc --threads N``); None: back to the automatic
    choice (and torch's own count)."""
    global _fixed, _torch_default
    import torch

    from aigc_cli.core.errors import OptionError

    if n is not None and n < 1:
        raise OptionError("threads", f"must be at least 1, got {n}")
    if n is None and _fixed is None:
        return  # already automatic: torch's count stays what it is
    if _torch_default is None:
        _torch_default = torch.get_num_threads()
    _fixed = n
    torch.set_num_threads(n if n is not None else _torch_default)
    if n is None:
        _torch_default = None  # automatic again: the next --threads remembers torch's count then


def chosen_by() -> str | None:
    """Who fixed the thread count (``--threads``, ``OMP_NUM_THREADS``, ``torchrun``), or None
    when aigc chooses it per region."""
    from aigc_cli.core.distributed import launched

    if _fixed is not None:
        return "--threads"
    if os.environ.get("OMP_NUM_THREADS", "").strip():
        return "OMP_NUM_THREADS"
    if launched():
        return "torchrun"
    return None


def describe() -> str:
    """One line for ``aigc info``."""
    import torch

    who = chosen_by()
    if who is not None:
        return f"set by {who}"
    return f"automatic: 1 for steps under {SMALL_STEP:.0e} FLOPs (token-by-token generation), {torch.get_num_threads()} above"


def step_flops(module, rows: int) -> float:
    """About the FLOPs of one step of ``module`` over ``rows`` rows at once (tokens, or sequences
    of an RNN's time step): 2 per parameter and row, what dense and recurrent layers cost."""
    return 2.0 * sum(p.numel() for p in module.parameters()) * rows


def threads_for(flops: float) -> int:
    """The thread count for a region whose sequential steps cost ``flops`` each."""
    import torch

    if chosen_by() is not None or flops >= SMALL_STEP:
        return torch.get_num_threads()
    return 1


@contextmanager
def cpu_threads(flops: float, device=None) -> Iterator[int]:
    """Run the region on ``threads_for(flops)`` threads and restore the count after it; yields
    the count. Work on another device (CUDA, MPS) leaves the CPU threads as they are."""
    global _used
    import torch

    before = torch.get_num_threads()
    n = before if device is not None and torch.device(device).type != "cpu" else threads_for(flops)
    if n != before:
        torch.set_num_threads(n)
    _used = n
    try:
        yield n
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def used() -> int:
    """The thread count of the last ``cpu_threads`` region (torch's count before any ran): what
    ``--json`` output reports."""
    import torch

    return _used if _used is not None else torch.get_num_threads()
