"""Time `aigc --help` (must stay well under half a second: no torch import).

    python benches/bench_startup.py [--repeat 10]
"""

import argparse
import statistics
import subprocess
import sys
import time


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--repeat", type=int, default=10)
    args = p.parse_args()
    times = []
    for _ in range(args.repeat):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "aigc_cli", "--help"], capture_output=True, check=True)
        times.append(time.perf_counter() - t)
    print(f"aigc --help: median {statistics.median(times) * 1000:.0f} ms, min {min(times) * 1000:.0f} ms "
          f"over {args.repeat} runs")


if __name__ == "__main__":
    main()
