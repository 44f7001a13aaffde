"""The CPU allocator setting: freed tensor memory is reused instead of faulted in again."""

import os
import subprocess
import sys

import pytest

from aigc_cli.core import memory

glibc = pytest.mark.skipif(not memory.is_glibc(), reason="needs Linux with glibc")

# Eight 8 MiB tensors made and freed, round after round, as a training step's activations are:
# 64 MiB a round (16,384 pages of 4 KiB). Page faults per round after three warm-up rounds, in a
# fresh process (mallopt cannot be undone). The control sets glibc's own variables to hand every
# block back: aigc leaves the allocator alone then, and the measurement must see the pages faulted
# in again.
ROUNDS = """
import resource, sys, torch
from aigc_cli.core.memory import tune_cpu_allocator
state = tune_cpu_allocator()
assert state.startswith("glibc" if sys.argv[1] == "tuned" else "system default"), state
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
counts = []
for _ in range(8):
    before = faults()
    xs = [torch.empty(2 << 20).fill_(1.0) for _ in range(8)]  # 8 x (2M floats = 8 MiB)
    del xs
    counts.append(faults() - before)
print(sum(counts[3:]) / 5)
"""
GIVE_BACK = {"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "0"}
BYTES_PER_ROUND = 8 * (8 << 20)  # what ROUNDS makes and frees each round: 64 MiB


def faults_per_round(mode: str) -> float:
    env = {k: v for k, v in os.environ.items() if k not in memory.USER_SETTINGS and k != "AIGC_MALLOC"}
    if mode == "control":
        env.update(GIVE_BACK)
    out = subprocess.run([sys.executable, "-c", ROUNDS, mode], capture_output=True, text=True, check=True,
                         env=env).stdout
    return float(out.split()[-1])


@glibc
def test_tuned_allocator_reuses_freed_tensor_memory():
    control, tuned = faults_per_round("control"), faults_per_round("tuned")
    pages_per_round = BYTES_PER_ROUND / os.sysconf("SC_PAGE_SIZE")
    # Bounds are ratios of what this test measures, not constants of one machine's page size or faults.
    # The control faults the 64 MiB in again every round: at least half of its pages.
    assert control >= pages_per_round / 2, (control, pages_per_round)
    # Tuned, the freed memory is kept and reused: (almost) no page faulted in again.
    assert tuned < control / 10, (tuned, control)


@glibc
def test_user_allocator_settings_and_the_opt_out_are_left_alone(monkeypatch):
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "0")
    assert memory._tune() == "system default (MALLOC_TRIM_THRESHOLD_ is set)"
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_")
    monkeypatch.setenv("LD_PRELOAD", "libjemalloc.so.2")
    assert memory._tune() == "system default (LD_PRELOAD is set)"
    monkeypatch.delenv("LD_PRELOAD")
    monkeypatch.setenv("AIGC_MALLOC", "system")
    assert memory._tune() == "system default (AIGC_MALLOC=system)"


def test_not_glibc_is_left_alone(monkeypatch):
    monkeypatch.setattr(memory.platform, "libc_ver", lambda: ("", ""))
    assert memory._tune() == "system default (not glibc)"
