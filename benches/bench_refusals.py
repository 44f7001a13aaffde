"""How long commands that must be refused take to say so (docs/reliability.md, "Refusals").

Each case is a real ``aigc`` process timed from start to exit; the figure is the median over
``--repeat`` runs. The run that a second ``--resume`` or ``runs rm`` meets "running" is a
finished one-epoch run whose lock this script holds, as a training process would (a run is
``running`` exactly while its lock is held), so the machine is otherwise idle while it measures.

    python benches/bench_refusals.py [--repeat 3] [--skip too-many-ranks]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TINY = ["--arch", "mlp", "--width", "4", "--latent-dim", "8"]


def bars(path: Path) -> Path:
    """256 noisy 8x8 images in 4 classes (tests/conftest.py's bars)."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 256)
    images = rng.integers(0, 40, (256, 8, 8)).astype(np.uint8)
    for i, k in enumerate(labels):
        images[i, 2 * k : 2 * k + 2, :] = 255
    np.savez(path, images=images, labels=labels)
    return path


def timed(home: Path, args: list[str], limit: float) -> tuple[float, int, str]:
    env = {**os.environ, "AIGC_HOME": str(home), "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "aigc_cli", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, err = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)  # the launcher and every rank it started
        proc.communicate()
        return float("inf"), -9, f"still running after {limit:.0f} s"
    return time.perf_counter() - start, proc.returncode, err.strip().splitlines()[-1] if err.strip() else ""


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--limit", type=float, default=60.0, help="seconds before a case counts as not refused")
    p.add_argument("--skip", nargs="*", default=[], help="case names to leave out")
    a = p.parse_args()

    from aigc_cli.core.locks import FileLock

    tmp = Path(tempfile.mkdtemp(prefix="bench_refusals_"))
    home, data = tmp / "home", bars(tmp / "bars.npz")
    base = ["train", "gan", "--dataset", str(data), *TINY]
    made = timed(home, ["-q", *base, "--batch-size", "16", "--epochs", "1"], 300)
    assert made[1] == 0, made
    lock = FileLock(home / "runs/run1/.lock")  # the run is now "running", held by this script
    assert lock.acquire()
    lock.write_holder()

    cases = {
        "uneven batch, --nproc 3": [*base, "--batch-size", "16", "--nproc", "3"],
        "too-many-ranks": ["--device", "cpu", *base, "--batch-size", "64", "--nproc", "64"],
        "bad option, --nproc 2": [*base, "--lr", "-1", "--nproc", "2"],
        "bad option, one process": [*base, "--lr", "-1"],
        "second --resume of a running run": ["train", "gan", "--resume", "run1"],
        "second --resume, --nproc 2": ["train", "gan", "--resume", "run1", "--nproc", "2"],
        "runs rm of a running run": ["runs", "rm", "run1"],
    }
    print(f"{'case':40s} {'median s':>9s} {'exit':>5s}  last stderr line")
    for name, args in cases.items():
        if name in a.skip:
            continue
        results = [timed(home, args, a.limit) for _ in range(a.repeat)]
        median = statistics.median(r[0] for r in results)
        print(f"{name:40s} {median:9.2f} {results[-1][1]:5d}  {results[-1][2][:110]}")
    lock.release()


if __name__ == "__main__":
    main()
