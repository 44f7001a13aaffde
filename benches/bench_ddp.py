"""Data-parallel training throughput: images/s and scaling efficiency per world size.

Each configuration is a real ``aigc train`` invocation (``--nproc W`` through torchrun's
launcher, or one plain process), reading the training throughput rank 0 logs in metrics.jsonl
(global images per second over each --log-every window; the first window, warm-up, is left
out). Configurations run in interleaved rounds; the figure is the median over rounds, and the
ratio against one process the median of the per-round ratios.

- On CUDA: W = 1, 2, 4, ... up to the GPUs found, one GPU per rank (NCCL).
- On the CPU: the cores are shared out, so the question is how to spend them: one process with
  all the cores' threads against W ranks with cores/W threads each (gloo).

Scaling efficiency = (images/s with W ranks) / (W x images/s with one rank); on the CPU the
honest comparison is images/s at equal cores, printed as "vs 1 process".

    python benches/bench_ddp.py [--family gan] [--dataset digits] [--batch-size 256] [--epochs 1] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_once(family: str, args: list[str], world: int, threads: int, device: str) -> tuple[float, float]:
    """(training images/s, wall seconds) of one invocation in a fresh AIGC_HOME."""
    home = Path(tempfile.mkdtemp(prefix="bench_ddp_"))
    env = {**os.environ, "AIGC_HOME": str(home), "OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, "-m", "aigc_cli", "-q", "--device", device, "train", family, *args]
    if world > 1:
        cmd += ["--nproc", str(world)]
    start = time.perf_counter()
    result = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    try:
        if result.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{result.stderr}")
        rows = [json.loads(line) for line in (home / "runs/run1/metrics.jsonl").read_text().splitlines()]
        rates = [r["images_per_s"] for r in rows if "images_per_s" in r][1:]
        if not rates:
            raise SystemExit("too few logged windows: train longer (--epochs) or log more often")
        return statistics.median(rates), wall
    finally:
        shutil.rmtree(home, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--family", default="gan")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--log-every", type=int, default=5)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--max-world", type=int, default=None, help="largest world size (default: GPUs, or 2 on CPU; --nproc refuses more ranks than cores there)")
    p.add_argument("--set", action="append", default=[], metavar="FLAG=VALUE",
                   help="more training flags, e.g. --set width=32")
    a = p.parse_args()

    import torch

    cuda = torch.cuda.is_available()
    cores = os.cpu_count() or 1
    extra = [x for kv in a.set for x in (f"--{kv.split('=', 1)[0].replace('_', '-')}", kv.split("=", 1)[1])]
    args = ["--dataset", a.dataset, "--batch-size", str(a.batch_size), "--epochs", str(a.epochs),
            "--log-every", str(a.log_every), *extra]
    if cuda:
        top = a.max_world or torch.cuda.device_count()
        worlds = [w for w in (1, 2, 4, 8, 16, 32) if w <= top]
        configs = [(w, max(1, cores // w)) for w in worlds]
        device = "cuda"
        print(f"# {torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}, torch {torch.__version__}, NCCL")
    else:
        top = a.max_world or 2
        worlds = [w for w in (1, 2, 4, 8) if w <= top]
        configs = [(w, max(1, cores // w)) for w in worlds]
        device = "cpu"
        print(f"# CPU, {cores} cores, torch {torch.__version__}, gloo; threads per rank = cores / ranks")
    print(f"# aigc train {a.family} {' '.join(args)}; {a.rounds} interleaved rounds")
    rates: dict[tuple[int, int], list[float]] = {c: [] for c in configs}
    walls: dict[tuple[int, int], list[float]] = {c: [] for c in configs}
    for r in range(a.rounds):
        for c in configs:
            ips, wall = run_once(a.family, args, c[0], c[1], device)
            rates[c].append(ips)
            walls[c].append(wall)
            print(f"round {r + 1}: {c[0]} rank(s) x {c[1]} thread(s): {ips:8.1f} images/s  ({wall:.1f} s wall)",
                  flush=True)
    base = configs[0]
    print("\n| ranks x threads | images/s (median) | vs 1 process (median of ratios) | scaling efficiency | wall s |")
    print("|---|---|---|---|---|")
    for c in configs:
        ratio = statistics.median(x / y for x, y in zip(rates[c], rates[base]))
        # On the CPU the ranks share the same cores: the ratio is the figure, not ratio / W.
        efficiency = f"{ratio / c[0]:.0%}" if cuda else "n/a (same cores)"
        print(f"| {c[0]} x {c[1]} | {statistics.median(rates[c]):.1f} | {ratio:.2f}x | {efficiency} | "
              f"{statistics.median(walls[c]):.1f} |")


if __name__ == "__main__":
    main()
