"""The CPU allocator setting: freed tensor memory is reused instead of faulted in again."""

import platform
import subprocess
import sys

import pytest

from aigc_cli.core import memory

glibc = pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="needs Linux with glibc"
)

# Eight 8 MiB tensors made and freed, as a training step's activations are; page faults per
# round after two warm-up rounds. A fresh process each: mallopt cannot be undone.
ROUNDS = """
import resource, sys, torch
from aigc_cli.core.memory import tune_cpu_allocator
if sys.argv[1] == "tuned":
    assert tune_cpu_allocator().startswith("glibc"), tune_cpu_allocator()
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
counts = []
for _ in range(6):
    before = faults()
    xs = [torch.empty(2 << 20).fill_(1.0) for _ in range(8)]  # 8 x (2M floats = 8 MiB)
    del xs
    counts.append(faults() - before)
print(sum(counts[2:]) / 4)
"""


def faults_per_round(mode: str) -> float:
    out = subprocess.run([sys.executable, "-c", ROUNDS, mode], capture_output=True, text=True, check=True).stdout
    return float(out.split()[-1])


@glibc
def test_tuned_allocator_reuses_freed_tensor_memory():
    default, tuned = faults_per_round("default"), faults_per_round("tuned")
    assert default > 4000  # glibc unmaps the 64 MiB and faults it in again: 16,384 pages a round
    assert tuned < default / 20


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
