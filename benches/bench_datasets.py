"""The image data path (data/folder.py, data/cache.py): decoding a folder, training from the
memory-mapped cache, and training from a prepared dataset larger than the memory allowed.

``--part decode``: a folder of 2,000 JPEGs, 1024x768, quality 90 (smooth gradients, noise and
shapes; made once in --work), decoded at --resolution 64, images/s of
  (a) aigc: ``data.folder.load_folder`` as it is (a thread pool);
  (b) processes: ``ProcessPoolExecutor(2)`` mapping ``core.images.decode_file`` over chunks of
      files (written here: would switching aigc to processes pay?);
  (c) the peer: torchvision ``ImageFolder`` + ``DataLoader(num_workers=2, batch_size=64)`` with
      ``Resize(64, antialias=True)``, ``CenterCrop(64)``, ``PILToTensor()``;
  (d) for scale, ``decode_file`` over the files on one thread.
Rounds interleave the four (rotated each round); medians, and the median of the per-round
ratios aigc / peer. Then the second run's start: ``data.cache.load_folder_cached`` twice (the
first decodes and writes the entry; the second is timed), and as CLI subprocesses ``aigc datasets
prepare`` (cold: decodes), ``prepare`` again (cached) and ``aigc datasets info NAME --json``.

``--part mmap``: 20,000 random 3x32x32 images, written as a prepared dataset (``cache.write_dataset``
and prepared.json, as ``aigc datasets prepare`` leaves them) and as an .npz (loaded into memory);
``aigc train gan --arch mlp --epochs 1`` on each, in turn; the rate is aigc's own: the median of
metrics.jsonl's ``images_per_s`` rows (the first window, with the warm-up, left out). Medians
over the rounds and the median of the per-round ratios mmap / in memory.

``--part memory``: a prepared dataset of --big images of 3x64x64 (490,000: 6.0 GB) written straight
into the cache format (chunks; the file's page cache dropped after writing), trained on for
--time by ``aigc train gan --arch mlp`` inside a cgroup v1 memory controller limited to --limit
(2G), under ``/usr/bin/time -v``. Records: exit status, images/s, the cgroup's
memory.max_usage_in_bytes and its peak anon RSS / mapped file (memory.stat, polled), time's maximum
resident set size; and the same model for the same time on 10,000 such images in an .npz. aigc
maps the file advised MADV_RANDOM (data/cache.py map_npy); random batches indexed out of it with
the kernel's default read-around and with the advice show what the advice buys. The
cgroup and the 6 GB are removed afterwards. Needs root (the cgroup) and 7 GB free in --work.

Every figure is printed with the 1-minute load average measured beside it: other jobs may share
the machine. AIGC_HOME is a temporary folder (made and removed here).

    python benches/bench_datasets.py [--part decode,mmap,memory] [--rounds 3] [--work /tmp/aigc-bench-data]
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

print = functools.partial(print, flush=True)  # (figures appear as each part ends)

N_JPEGS, JPEG_SIZE, RES = 2000, (1024, 768), 64
MMAP_N, MMAP_RES = 20_000, 32
SMALL_N = 10_000
CGROUP = Path("/sys/fs/cgroup/memory/aigc_bench")


def load() -> float:
    return os.getloadavg()[0]


def rotate(items: list, k: int) -> list:
    k %= len(items)
    return items[k:] + items[:k]


def aigc_cmd() -> list[str]:
    exe = shutil.which("aigc")
    return [exe] if exe else [sys.executable, "-m", "aigc_cli"]


# -- part 1: decode -----------------------------------------------------------------------------

def make_jpegs(folder: Path) -> Path:
    """N_JPEGS photos-like JPEGs in folder/all/ (one class subfolder, as ImageFolder wants)."""
    from PIL import Image, ImageDraw

    cls = folder / "all"
    done = folder / ".complete"
    if done.exists():
        return folder
    cls.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    w, h = JPEG_SIZE
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    t = time.perf_counter()
    for i in range(N_JPEGS):
        c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        ang = rng.uniform(0, 2 * np.pi)
        g = (np.cos(ang) * xx / w + np.sin(ang) * yy / h + 1.5) / 3  # 0..1 along a random direction
        img = g[..., None] * c0 + (1 - g[..., None]) * c1
        img += rng.normal(0, 8, (h, w, 1)).astype(np.float32)  # sensor-like noise
        im = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
        d = ImageDraw.Draw(im)
        for _ in range(rng.integers(3, 9)):
            x0, y0 = rng.integers(0, w - 50), rng.integers(0, h - 50)
            box = [int(x0), int(y0), int(x0 + rng.integers(40, 400)), int(y0 + rng.integers(40, 300))]
            fill = tuple(int(v) for v in rng.integers(0, 256, 3))
            (d.ellipse if rng.random() < 0.5 else d.rectangle)(box, fill=fill)
        im.save(cls / f"{i:05d}.jpg", quality=90)
    done.touch()
    print(f"made {N_JPEGS} JPEGs in {folder} ({time.perf_counter() - t:.0f} s)")
    return folder


def _decode_chunk(paths: list[str]) -> np.ndarray:
    from aigc_cli.core.images import decode_file

    return np.stack([decode_file(Path(p), (RES, RES), RES)[0] for p in paths])


def decode_aigc(folder: Path) -> float:
    from aigc_cli.data.folder import load_folder

    t = time.perf_counter()
    ds = load_folder(folder, resolution=RES)
    assert len(ds) == N_JPEGS
    return N_JPEGS / (time.perf_counter() - t)


def decode_processes(folder: Path, chunk: int = 50) -> float:
    t = time.perf_counter()  # the pool's start counts, as it would for aigc
    files = sorted(str(p) for p in (folder / "all").iterdir())
    with ProcessPoolExecutor(2) as pool:
        parts = list(pool.map(_decode_chunk, [files[i:i + chunk] for i in range(0, len(files), chunk)]))
    images = np.concatenate(parts)
    assert len(images) == N_JPEGS
    return N_JPEGS / (time.perf_counter() - t)


def decode_serial(folder: Path) -> float:
    """decode_file on this thread alone: what the pools have to beat."""
    t = time.perf_counter()
    images = _decode_chunk(sorted(str(p) for p in (folder / "all").iterdir()))
    assert len(images) == N_JPEGS
    return N_JPEGS / (time.perf_counter() - t)


def decode_torchvision(folder: Path) -> float:
    import torch
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    t = time.perf_counter()
    tf = transforms.Compose([transforms.Resize(RES, antialias=True), transforms.CenterCrop(RES),
                             transforms.PILToTensor()])
    loader = DataLoader(datasets.ImageFolder(str(folder), transform=tf), batch_size=64, num_workers=2)
    images = torch.cat([x for x, _ in loader])
    assert len(images) == N_JPEGS
    return N_JPEGS / (time.perf_counter() - t)


def run_cli(args: list[str], env: dict) -> tuple[float, subprocess.CompletedProcess]:
    t = time.perf_counter()
    p = subprocess.run(aigc_cmd() + args, env=env, capture_output=True, text=True, check=False)
    dt = time.perf_counter() - t
    if p.returncode:
        print(f"FAILED ({p.returncode}): aigc {' '.join(args)}\n{p.stderr[-2000:]}")
    return dt, p


def part_decode(a, home: Path) -> None:
    folder = make_jpegs(Path(a.work) / "jpegs")
    sides = {"aigc (threads)": decode_aigc, "processes (2)": decode_processes, "torchvision": decode_torchvision,
             "decode_file, 1 thread": decode_serial}
    decode_aigc(folder)  # warm-up: the files into the page cache, imports done
    decode_torchvision(folder)
    rates: dict[str, list[float]] = {k: [] for k in sides}
    loads: list[float] = []
    for r in range(a.rounds):
        for name in rotate(list(sides), r):
            rates[name].append(sides[name](folder))
        loads.append(load())
        print(f"round {r + 1} of {a.rounds}: " + ", ".join(f"{k} {v[-1]:.0f}" for k, v in rates.items())
              + f" images/s; load {loads[-1]:.1f}")
    peer = rates["torchvision"]
    print(f"\n| decode {N_JPEGS} JPEGs 1024x768 at {RES} | images/s (median) | median ratio to torchvision | load (1 min) |")
    print("|---|---|---|---|")
    for name, v in rates.items():
        ratio = statistics.median(x / p for x, p in zip(v, peer))
        print(f"| {name} | {statistics.median(v):.0f} | {ratio:.2f}x | {statistics.median(loads):.1f} |")

    # the second run's start
    from aigc_cli.data.cache import load_folder_cached

    env = {**os.environ, "AIGC_HOME": str(home)}
    os.environ["AIGC_HOME"] = str(home)
    t = time.perf_counter()
    load_folder_cached(folder, resolution=RES)
    first = time.perf_counter() - t
    seconds = []
    for _ in range(a.rounds):
        t = time.perf_counter()
        load_folder_cached(folder, resolution=RES)
        seconds.append(time.perf_counter() - t)
    print(f"\nload_folder_cached: first (decode + write) {first:.2f} s; again (entry exists) median "
          f"{statistics.median(seconds) * 1000:.0f} ms of {', '.join(f'{s * 1000:.0f}' for s in seconds)}; "
          f"load {load():.1f}")
    cold, _ = run_cli(["datasets", "prepare", str(folder), "--name", "bench-jpegs", "--resolution", str(RES)],
                      {**env, "AIGC_HOME": str(home / "cli")})
    again, info = [], []
    for _ in range(a.rounds):
        again.append(run_cli(["datasets", "prepare", str(folder), "--name", "bench-jpegs", "--resolution",
                              str(RES)], {**env, "AIGC_HOME": str(home / "cli")})[0])
        dt, _ = run_cli(["datasets", "info", "bench-jpegs", "--json"], {**env, "AIGC_HOME": str(home / "cli")})
        info.append(dt)
    print(f"aigc datasets prepare (cold, decodes): {cold:.2f} s; prepare again: median {statistics.median(again):.2f} s; "
          f"aigc datasets info --json: median {statistics.median(info):.2f} s "
          f"({', '.join(f'{s:.2f}' for s in info)}); load {load():.1f}")
    torch_import = []
    for _ in range(a.rounds):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import torch"], check=True)
        torch_import.append(time.perf_counter() - t)
    print(f"for scale: aigc --help {run_cli(['--help'], env)[0]:.2f} s; python -c 'import torch' median "
          f"{statistics.median(torch_import):.2f} s; load {load():.1f}")


# -- part 2 and 3: training --------------------------------------------------------------------

def register(home: Path, name: str, images, fingerprint: str | None = None) -> None:
    """images (N, C, H, W) uint8 as the prepared dataset ``name`` (write_dataset + prepared.json)."""
    import torch

    from aigc_cli.core.io import atomic_write_json
    from aigc_cli.data import cache
    from aigc_cli.data.base import ImageDataset

    os.environ["AIGC_HOME"] = str(home)
    ds = ImageDataset(images=torch.from_numpy(images), labels=None, name=name, spec={"spec": name, "split": "train"})
    inputs = {"bench": name, "shape": list(images.shape)}
    key = cache.key_of(inputs)
    cache.write_dataset(key, ds, inputs)
    reg = cache.registry()
    reg[name] = {"key": key, "source": "", "resolution": None}
    atomic_write_json(cache.root() / cache.REGISTRY, reg)


def train_rate(args: list[str], home: Path, wrap: list[str] | None = None,
               aigc: list[str] | None = None) -> tuple[float | None, dict]:
    """aigc's own images/s of ``aigc train gan ARGS --json``: the median of metrics.jsonl's rows,
    the first window left out."""
    env = {**os.environ, "AIGC_HOME": str(home)}
    cmd = (wrap or []) + (aigc or aigc_cmd()) + ["train", "gan", "--arch", "mlp", "--json"] + args
    t = time.perf_counter()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    out = {"rc": p.returncode, "wall_s": time.perf_counter() - t, "stderr": p.stderr, "load": load()}
    if p.returncode:
        return None, out
    run = json.loads(p.stdout)
    out["run"] = run
    path = Path(run.get("path") or run.get("dir") or "")
    metrics = path / "metrics.jsonl" if path.name else None
    if metrics is None or not metrics.exists():
        found = sorted(home.glob("runs/**/metrics.jsonl"), key=lambda q: q.stat().st_mtime)
        metrics = found[-1]
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    rates = [r["images_per_s"] for r in rows if "images_per_s" in r]
    out["steps"] = max((r.get("step", 0) for r in rows), default=0)
    return statistics.median(rates[1:] if len(rates) > 2 else rates), out


def part_mmap(a, home: Path) -> None:
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (MMAP_N, 3, MMAP_RES, MMAP_RES), dtype=np.uint8)
    register(home, "bench-mmap", images)
    npz = home / "bench-mmap.npz"
    np.savez(npz, images=images)
    del images
    common = ["--epochs", "1", "--batch-size", "64", "--unconditional"]
    sides = {"mmap (prepared)": ["--dataset", "bench-mmap"], "in memory (.npz)": ["--dataset", str(npz)]}
    train_rate(sides["mmap (prepared)"] + common, home)  # warm-up
    rates: dict[str, list[float]] = {k: [] for k in sides}
    loads: list[float] = []
    for r in range(a.rounds):
        for name in rotate(list(sides), r):
            rate, out = train_rate(sides[name] + common, home)
            if rate is None:
                print(f"{name}: failed (rc {out['rc']}): {out['stderr'][-1500:]}")
                return
            rates[name].append(rate)
        loads.append(load())
        print(f"round {r + 1} of {a.rounds}: " + ", ".join(f"{k} {v[-1]:.0f}" for k, v in rates.items())
              + f" images/s; load {loads[-1]:.1f}")
    m, mem = rates["mmap (prepared)"], rates["in memory (.npz)"]
    print(f"\n| GAN mlp, {MMAP_N:,} x 3x{MMAP_RES}x{MMAP_RES}, 1 epoch, batch 64 | images/s (median) | load (1 min) |")
    print("|---|---|---|")
    for name, v in rates.items():
        print(f"| {name} | {statistics.median(v):.0f} | {statistics.median(loads):.1f} |")
    print(f"median of ratios mmap / in memory: {statistics.median(x / y for x, y in zip(m, mem)):.3f} "
          f"(rounds: {', '.join(f'{x / y:.3f}' for x, y in zip(m, mem))})")


def write_big(home: Path, name: str, n: int, res: int) -> Path:
    """n random-ish 3 x res x res images straight into the cache format, never whole in memory."""
    from aigc_cli.core.io import atomic_write_json
    from aigc_cli.data import cache

    os.environ["AIGC_HOME"] = str(home)
    shape = (n, 3, res, res)
    inputs = {"bench": name, "shape": list(shape)}
    key = cache.key_of(inputs)
    root = cache.root()
    root.mkdir(parents=True, exist_ok=True)
    npy, head = root / f"{key}.npy", root / f"{key}.json"
    rng = np.random.default_rng(2)
    block = rng.integers(0, 256, (4096, 3, res, res), dtype=np.uint8)
    h = hashlib.sha256(str(shape).encode())  # cache.pixel_hash's bytes, in its order
    t = time.perf_counter()
    with open(npy, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False, "shape": shape})
        for i in range(0, n, len(block)):
            chunk = (block[: min(len(block), n - i)] + np.uint8(i // len(block) % 251)).tobytes()
            h.update(chunk)
            f.write(chunk)
        f.flush()
        os.fsync(f.fileno())
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)  # its pages out of the page cache
    header = {"shape": list(shape), "dtype": "uint8", "bytes": npy.stat().st_size, "labels": None,
              "classes": None, "class_names": None, "fingerprint": h.hexdigest(), "skipped": 0,
              "skipped_why": {}, "files": 0, "upscaled": 0, "resolution": None, "key": inputs}
    header["checksum"] = cache._checksum(header)
    atomic_write_json(head, header)
    reg = cache.registry()
    reg[name] = {"key": key, "source": "", "resolution": None}
    atomic_write_json(root / cache.REGISTRY, reg)
    print(f"wrote {npy} ({npy.stat().st_size / 1e9:.2f} GB) in {time.perf_counter() - t:.0f} s")
    return npy


def time_v(timev: Path, field: str = "Maximum resident set size") -> str:
    """A field of /usr/bin/time -v's report (maximum resident set size: KiB), or '?'."""
    if not timev.exists():
        return "?"
    return next((line.split(":")[1].strip() for line in timev.read_text().splitlines()
                 if field in line), "?")


def max_rss(timev: Path) -> str:
    return time_v(timev)


def read_bytes() -> int:
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("read_bytes"))


def index_only(spec: str) -> None:
    """``--index-only NPY:ADVICE:SECONDS``: random batches of 64 indexed out of the cache file
    mapped copy-on-write (np.load, mmap_mode="c", torch.from_numpy), with the
    kernel's default read-around (``normal``) or madvise(MADV_RANDOM) (``random``) on the mapping;
    its page cache dropped first. Prints images/s and bytes read from disk per image."""
    import mmap

    import torch

    npy, advice, seconds = spec.rsplit(":", 2)
    with open(npy, "rb") as f:
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    a = np.load(npy, mmap_mode="c", allow_pickle=False)
    if advice == "random":
        a._mmap.madvise(mmap.MADV_RANDOM)
    images = torch.from_numpy(a)
    g = torch.Generator().manual_seed(0)
    start_bytes, t, n = read_bytes(), time.perf_counter(), 0
    while time.perf_counter() - t < float(seconds):
        idx = torch.randint(0, len(images), (64,), generator=g)
        batch = images[idx].float()
        n += len(batch)
    dt, got = time.perf_counter() - t, read_bytes() - start_bytes
    print(json.dumps({"advice": advice, "images_per_s": n / dt, "read_bytes_per_image": got / max(n, 1),
                      "image_bytes": int(np.prod(a.shape[1:])), "images": n}))


def readahead() -> str:
    out = []
    for q in sorted(Path("/sys/block").glob("*/queue/read_ahead_kb")):
        if not q.parts[3].startswith(("loop", "ram")):
            out.append(f"{q.parts[3]} {q.read_text().strip()}")
    return ", ".join(out) or "?"


class CgroupPoll:
    """Peak anon RSS and mapped file of the cgroup, from memory.stat every half second."""

    def __init__(self):
        self.peak: dict[str, int] = {}
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                for line in (CGROUP / "memory.stat").read_text().splitlines():
                    k, v = line.split()
                    if k in ("total_rss", "total_cache", "total_mapped_file"):
                        self.peak[k] = max(self.peak.get(k, 0), int(v))
            except OSError:
                pass
            self._stop.wait(0.5)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


def part_memory(a, home: Path) -> None:
    free = shutil.disk_usage(a.work).free
    need = a.big * 3 * 64 * 64
    if free < need + (2 << 30):
        print(f"memory: {free / 1e9:.1f} GB free in {a.work}, {need / 1e9:.1f} GB needed; not run")
        return
    big_home = Path(a.work) / "aigc-home-memory"  # on the --work disk (the 6 GB)
    shutil.rmtree(big_home, ignore_errors=True)
    try:
        npy = write_big(big_home, "bench-big", a.big, 64)
        common = ["--time", a.time, "--batch-size", "64", "--unconditional", "--epochs", "1"]
        CGROUP.mkdir(exist_ok=True)
        (CGROUP / "memory.limit_in_bytes").write_text(a.limit)
        limit = int((CGROUP / "memory.limit_in_bytes").read_text())
        fails_before = int((CGROUP / "memory.failcnt").read_text())
        timev = Path(a.work) / "time-v.txt"
        wrap = ["sh", "-c", f'echo $$ > {CGROUP}/cgroup.procs; exec "$@"', "sh"]
        if Path("/usr/bin/time").exists():
            wrap += ["/usr/bin/time", "-v", "-o", str(timev)]
        print(f"training on {npy.stat().st_size / 1e9:.2f} GB under a {limit / 2**30:.2f} GiB cgroup limit, "
              f"--time {a.time}; load {load():.1f}")
        with CgroupPoll() as poll:
            rate, out = train_rate(["--dataset", "bench-big"] + common, big_home, wrap)
        maxrss = max_rss(timev)
        print(f"exit status {out['rc']}; wall {out['wall_s']:.0f} s; images/s {rate}; steps {out.get('steps')}; "
              f"load {out['load']:.1f}")
        inputs = time_v(timev, "File system inputs")
        if inputs != "?" and out.get("steps"):
            print(f"read from disk: {int(inputs) * 512 / 1e9:.1f} GB (time -v file system inputs), "
                  f"{int(inputs) * 512 / (out['steps'] * 64) / 1e6:.2f} MB per trained image of "
                  f"{3 * 64 * 64 / 1e3:.1f} kB; major page faults {time_v(timev, 'Major (requiring I/O) page faults')}; "
                  f"read_ahead_kb of the disks: {readahead()}")
        print(f"cgroup memory.max_usage_in_bytes {int((CGROUP / 'memory.max_usage_in_bytes').read_text()) / 2**20:.0f} MiB; "
              f"failcnt {int((CGROUP / 'memory.failcnt').read_text()) - fails_before}; peaks from memory.stat: "
              + ", ".join(f"{k} {v / 2**20:.0f} MiB" for k, v in poll.peak.items())
              + f"; /usr/bin/time maximum resident set size {maxrss} KiB")
        oom = (CGROUP / "memory.oom_control").read_text().split()
        print(f"memory.oom_control: {' '.join(oom)}")
        if out["rc"]:
            print(f"stderr tail:\n{out['stderr'][-3000:]}")
        # the indexing alone, in the same cgroup: the kernel's read-around against MADV_RANDOM
        for advice in ("normal", "random", "normal", "random"):
            p = subprocess.run(["sh", "-c", f'echo $$ > {CGROUP}/cgroup.procs; exec "$@"', "sh", sys.executable,
                                __file__, "--index-only", f"{npy}:{advice}:{a.index_seconds}"],
                               capture_output=True, text=True, check=False)
            res = json.loads(p.stdout) if p.returncode == 0 else {"advice": advice, "rc": p.returncode,
                                                                  "stderr": p.stderr[-500:]}
            if "images_per_s" in res:
                print(f"indexing random batches of 64 from the mapped file, {advice}: {res['images_per_s']:.0f} "
                      f"images/s, {res['read_bytes_per_image'] / 1e3:.0f} kB read per {res['image_bytes'] / 1e3:.1f} kB "
                      f"image; load {load():.1f}")
            else:
                print(f"indexing, {advice}: failed {res}")
        # the same model, the same time, a small set in memory
        rng = np.random.default_rng(3)
        npz = big_home / "small.npz"
        np.savez(npz, images=rng.integers(0, 256, (SMALL_N, 3, 64, 64), dtype=np.uint8))
        timev.unlink(missing_ok=True)
        small_wrap = ["/usr/bin/time", "-v", "-o", str(timev)] if Path("/usr/bin/time").exists() else None
        small = ["--time", a.small_time, "--batch-size", "64", "--unconditional", "--epochs", "1000"]
        rate2, out2 = train_rate(["--dataset", str(npz)] + small, big_home, small_wrap)
        print(f"the same for --time {a.small_time} on {SMALL_N:,} images in memory (.npz, no cgroup): images/s {rate2}; steps {out2.get('steps')}; "
              f"rc {out2['rc']}; maximum resident set size {max_rss(timev)} KiB; load {out2['load']:.1f}")
        if rate and rate2:
            print(f"ratio big mmap under the limit / small in memory: {rate / rate2:.3f}")
    finally:
        shutil.rmtree(big_home, ignore_errors=True)
        if CGROUP.exists():
            try:
                CGROUP.rmdir()
            except OSError as e:
                print(f"could not remove {CGROUP}: {e}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", default="decode,mmap,memory", help="decode, mmap, memory (comma-separated)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--work", default="/tmp/aigc-bench-data", help="where the JPEGs (kept) and the big set go")
    p.add_argument("--big", type=int, default=490_000, help="images of 3x64x64 in the memory part")
    p.add_argument("--limit", default="2G", help="the memory part's cgroup limit")
    p.add_argument("--time", default="3m", help="the memory part's training budget")
    p.add_argument("--small-time", default="1m", help="the memory part's in-memory run's budget")
    p.add_argument("--index-seconds", type=float, default=20, help="the memory part's indexing arms")
    p.add_argument("--index-only", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.index_only:
        index_only(a.index_only)
        return
    Path(a.work).mkdir(parents=True, exist_ok=True)
    import torch

    print(f"{os.cpu_count()} CPUs; torch {torch.__version__}; {time.strftime('%Y-%m-%d %H:%M %Z')}; load {load():.1f}")
    home = Path(tempfile.mkdtemp(prefix="aigc-bench-home-"))
    try:
        parts = a.part.split(",")
        if "decode" in parts:
            part_decode(a, home)
        if "mmap" in parts:
            part_mmap(a, home)
        if "memory" in parts:
            part_memory(a, home)
    finally:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
