"""What the bench scripts that drive the ``aigc`` command share: run it as a subprocess on a
fixed number of threads against a bench's own AIGC_HOME, append result rows to a JSON-lines log
(each with the time and the 1-minute load), ask whether a run exists. ``configure`` is called
once by a script's main() (importing a bench, as tests/test_benches.py does, configures nothing).
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

print = functools.partial(print, flush=True)


class Setup:
    """Where and how the aigc commands run (set by ``configure``)."""

    home: str = ""
    threads: int = 1
    part: str = ""
    log: Path = Path()


SETUP = Setup()


def configure(home: str, threads: int, part: str, log_name: str) -> None:
    """Every later call runs aigc with AIGC_HOME=home on ``threads`` threads and logs to
    home/log_name, rows marked with ``part``."""
    SETUP.home, SETUP.threads, SETUP.part, SETUP.log = home, threads, part, Path(home) / log_name


def load1() -> float:
    return round(os.getloadavg()[0], 2)


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def command(*args: str) -> list[str]:
    """The argv of ``aigc --threads N ARGS`` in this interpreter."""
    return [sys.executable, "-m", "aigc_cli", "--threads", str(SETUP.threads), *map(str, args)]


def aigc(*args: str) -> str:
    """Run aigc to its end, printing the command, its time and the tail of its output; its stdout,
    or SystemExit when it fails."""
    print(f"[{now()}] $ AIGC_HOME={SETUP.home} aigc --threads {SETUP.threads} {' '.join(map(str, args))}")
    t0 = time.time()
    out = subprocess.run(command(*args), env=os.environ, capture_output=True, text=True, check=False)
    print(f"  ({time.time() - t0:.0f} s, load {load1()}) {out.stdout.strip()[-300:]}")
    if out.returncode:
        print(out.stderr[-3000:])
        raise SystemExit(f"aigc failed ({out.returncode})")
    return out.stdout


def record(row: dict) -> None:
    """Print a result row and append it to the log, with the date, load and part first."""
    row = {"date": now(), "load1": load1(), "part": SETUP.part, **row}
    print(json.dumps(row))
    SETUP.log.parent.mkdir(parents=True, exist_ok=True)
    with SETUP.log.open("a") as f:
        f.write(json.dumps(row) + "\n")


def exists(name: str) -> bool:
    from aigc_cli.core.errors import RunError
    from aigc_cli.runs.store import resolve_run

    try:
        resolve_run(name)
        return True
    except RunError:
        return False
