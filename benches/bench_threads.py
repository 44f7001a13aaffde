"""CPU threads against the size of the work (core/threads.py, issue 27), on the machine as it is
and with a competing job.

Workloads, at the families' default sizes with random weights (speed does not depend on training):

- ``gen-gpt``, ``gen-gru``: tokens/s of token-by-token generation, one continuation of --length;
- ``ppl-gpt``, ``ppl-gru``: seconds to score --chars characters (``aigc eval ppl``'s token_losses);
- ``sample-gan``: images/s of the default GAN (DCGAN, 1x28x28, 10 classes), one batch of 64;
- ``sample-diffusion``: images/s of the default U-Net (the same shape), batch 64, --diffusion-steps
  DPM++ steps with guidance 2 (the defaults but the steps).

Each runs on 1 thread, on torch's count (N: one per core, or OMP_NUM_THREADS) and on aigc's
automatic choice (what ``aigc`` does without --threads), in two conditions: ``as-is`` (whatever
else the machine runs) and ``loaded`` (this bench adds a busy loop pinned to the last core, as
another job would hold it). Rounds interleave the conditions, workloads and settings; the figures
are medians over the rounds, each with the median 1-minute load average measured after it.

``--part sweep``: one step of the default GPT over r tokens at once and one time step of the
default GRU over r rows, r = 1 to 4096, at 1 and N threads, both conditions: ms per step against
its FLOPs (core.threads.step_flops), the mean and the fastest call, and the smallest FLOPs at
which N threads beat one by 1.2x in the fastest calls as-is (an idle machine's speed-up, even on
a busy one): what SMALL_STEP should be.

    python benches/bench_threads.py [--part workloads,sweep] [--rounds 3] [--chars 50000] [--length 200]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import platform
import statistics
import subprocess
import sys
import time
from types import SimpleNamespace

import torch

from aigc_cli.core import threads
from aigc_cli.generation import Generator
from aigc_cli.models.registry import get_family
from aigc_cli.models.text import sampling
from aigc_cli.models.text.family import DEFAULT_LAYERS, DEFAULT_WIDTH, GPT_DEFAULTS, build_model

print = functools.partial(print, flush=True)  # noqa: A001  (figures appear as each part ends)

VOCAB, CONTEXT = 65, 64  # Tiny Shakespeare's alphabet, the default context
IMAGE = {"shape": (1, 28, 28), "classes": 10}  # MNIST
BATCH = 64
SWEEP_ROWS = (1, 4, 16, 64, 256, 1024, 4096)
PAYS_OFF = 1.2  # N threads' speed-up over one from which a step counts as large


@contextlib.contextmanager
def competitor():
    """Another job: a Python busy loop pinned to the last core this process may use."""
    core = max(os.sched_getaffinity(0))
    job = subprocess.Popen([sys.executable, "-c", f"import os\nos.sched_setaffinity(0, {{{core}}})\nwhile True: pass"])
    time.sleep(0.5)
    try:
        yield
    finally:
        job.kill()
        job.wait()


def text_model(arch: str):
    torch.manual_seed(0)
    return build_model({"arch": arch, "vocab_size": VOCAB, "width": DEFAULT_WIDTH[arch],
                        "layers": DEFAULT_LAYERS[arch], "heads": 4, "context": CONTEXT, "dropout": 0.0,
                        **GPT_DEFAULTS}).eval()


def image_generator(family_name: str, **decode):
    """A Generator as ``aigc sample`` loads one (no run behind it), and its decode options."""
    family = get_family(family_name)
    model, train = family.make_config({}, IMAGE)
    config = {"model": model, "train": train, "seed": 0}
    torch.manual_seed(0)
    modules = family.impl.build(config)
    sampler = family.impl.sampler(modules, config, torch.device("cpu"))
    return Generator(SimpleNamespace(id=f"{family_name}-untrained"), config, family, sampler, torch.device("cpu")), decode


def workloads(a) -> dict[str, tuple[str, callable]]:
    """name -> (unit, a function doing the work once and returning its figure in that unit)."""
    out = {}
    for arch in ("gpt", "gru"):
        model = text_model(arch)

        def gen(model=model):
            t = time.perf_counter()
            sampling.generate(model, torch.tensor([0]), 1, a.length, torch.Generator().manual_seed(0))
            return a.length / (time.perf_counter() - t)

        tokens = torch.randint(0, VOCAB, (a.chars,), generator=torch.Generator().manual_seed(0))

        def ppl(model=model):
            t = time.perf_counter()
            sampling.token_losses(model, tokens, CONTEXT)
            return time.perf_counter() - t

        out[f"gen-{arch}"] = ("tokens/s", gen)
        out[f"ppl-{arch}"] = ("s", ppl)
    for family, decode in (("gan", {}), ("diffusion", {"steps": a.diffusion_steps})):
        gen_, options = image_generator(family, **decode)
        z = gen_.latents(BATCH, seed=0)
        cond = gen_.conditioning(BATCH)  # every class in turn

        def sample(gen_=gen_, z=z, cond=cond, options=options):
            t = time.perf_counter()
            gen_.generate(z, cond, batch_size=BATCH, **options)
            return BATCH / (time.perf_counter() - t)

        out[f"sample-{family}"] = ("images/s", sample)
    return out


def rotate(items: list, k: int) -> list:
    k %= len(items)
    return items[k:] + items[:k]


def part_workloads(a, many: int) -> None:
    settings = {"1": 1, str(many): many, "auto": None}
    jobs = workloads(a)
    for _, fn in jobs.values():  # warm-up: first calls allocate and pick kernels
        threads.set_threads(1)
        fn()
    figures: dict[tuple[str, str, str], list[tuple[float, float]]] = {}
    for r in range(a.rounds):
        for condition in rotate(["as-is", "loaded"], r):
            with competitor() if condition == "loaded" else contextlib.nullcontext():
                for name in rotate(list(jobs), r):
                    for label in rotate(list(settings), r):
                        threads.set_threads(settings[label])
                        value = jobs[name][1]()
                        figures.setdefault((name, condition, label), []).append((value, os.getloadavg()[0]))
        print(f"round {r + 1} of {a.rounds} done, load {os.getloadavg()[0]:.1f}")
    threads.set_threads(None)
    print(f"\n| work | unit | condition | 1 thread | {many} threads | auto | load (1 min) |")
    print("|---|---|---|---|---|---|---|")
    for name, (unit, _) in jobs.items():
        for condition in ("as-is", "loaded"):
            cells, loads = [], []
            for label in settings:
                values = figures[(name, condition, label)]
                cells.append(statistics.median(v for v, _ in values))
                loads += [load for _, load in values]
            fmt = "{:.2f}" if unit == "s" else "{:,.0f}" if min(cells) >= 100 else "{:.1f}"
            print(f"| {name} | {unit} | {condition} | " + " | ".join(fmt.format(c) for c in cells)
                  + f" | {statistics.median(loads):.1f} |")


def step_functions():
    """(name, rows -> (FLOPs, a function doing one step over that many rows))."""
    gpt, gru = text_model("gpt"), text_model("gru")

    def gpt_step(rows):
        b, t = max(rows // CONTEXT, 1), min(rows, CONTEXT)  # r tokens: (r / 64, 64) windows, or (1, r)
        x = torch.randint(0, VOCAB, (b, t))
        return threads.step_flops(gpt, b * t), lambda: gpt(x)

    def gru_step(rows):
        x = torch.randint(0, VOCAB, (rows, 1))
        state = gru(x)[1]
        return threads.step_flops(gru, rows), lambda: gru(x, state)

    return (("gpt", gpt_step), ("gru", gru_step))


def time_step(fn, min_seconds: float) -> tuple[float, float]:
    """(mean, fastest) milliseconds per call of fn, over at least min_seconds."""
    fn()
    calls, start, fastest = 0, time.perf_counter(), float("inf")
    while calls == 0 or time.perf_counter() - start < min_seconds:
        t = time.perf_counter()
        fn()
        fastest = min(fastest, time.perf_counter() - t)
        calls += 1
    return 1000 * (time.perf_counter() - start) / calls, 1000 * fastest


@torch.inference_mode()
def part_sweep(a, many: int) -> None:
    cases = [(name, rows, *make(rows)) for name, make in step_functions() for rows in SWEEP_ROWS]
    ms: dict[tuple[str, int, str, int], list[tuple[float, float]]] = {}
    loads = {"as-is": [], "loaded": []}
    for r in range(a.rounds):
        for condition in rotate(["as-is", "loaded"], r):
            with competitor() if condition == "loaded" else contextlib.nullcontext():
                for name, rows, _, fn in rotate(cases, r):
                    for n in rotate([1, many], r):
                        threads.set_threads(n)
                        ms.setdefault((name, rows, condition, n), []).append(time_step(fn, a.step_seconds))
                loads[condition].append(os.getloadavg()[0])
        print(f"round {r + 1} of {a.rounds} done, load {os.getloadavg()[0]:.1f}")
    threads.set_threads(None)
    # Mean: what a run meets on this machine as it is. Fastest call: what it meets in the moments
    # when nothing else runs, close to an idle machine's speed, where the threads are not kept waiting.
    print(f"\n| model | rows | MFLOPs/step | as-is: mean ms at 1 / {many} threads | speed-up | fastest call: "
          f"ms at 1 / {many} | speed-up | loaded: mean ms at 1 / {many} | speed-up |")
    print("|---|---|---|---|---|---|---|---|---|")
    smallest = {}
    for name, rows, flops, _ in cases:
        row = [name, f"{rows:,}", f"{flops / 1e6:,.1f}"]
        for condition, pick in (("as-is", 0), ("as-is", 1), ("loaded", 0)):
            values = [[m[pick] for m in ms[(name, rows, condition, n)]] for n in (1, many)]
            one, more = (statistics.median(v) if pick == 0 else min(v) for v in values)
            row += [f"{one:.3g} / {more:.3g}", f"{one / more:.2f}x"]
            if pick == 1 and one / more >= PAYS_OFF and name not in smallest:
                smallest[name] = flops
        print("| " + " | ".join(row) + " |")
    print(f"load (1 min) as-is {statistics.median(loads['as-is']):.1f}, loaded {statistics.median(loads['loaded']):.1f}")
    for name, _ in step_functions():
        where = f"{smallest[name] / 1e6:,.0f} MFLOPs" if name in smallest else "never in this sweep"
        print(f"{name}: {many} threads first pay off ({PAYS_OFF}x, fastest calls) at {where}")
    print(f"SMALL_STEP now: {threads.SMALL_STEP / 1e6:,.0f} MFLOPs")


def machine() -> str:
    model = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
        model = next(line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name"))
        amx = "AMX" if "amx_tile" in info else "no AMX"
    except (OSError, StopIteration):
        amx = "AMX unknown"
    return f"{model}, {os.cpu_count()} CPUs, {amx}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", default="workloads,sweep", help="workloads, sweep, or both (comma-separated)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--chars", type=int, default=50_000, help="characters scored by ppl-*")
    p.add_argument("--length", type=int, default=200, help="tokens generated by gen-*")
    p.add_argument("--diffusion-steps", type=int, default=10)
    p.add_argument("--step-seconds", type=float, default=0.3, help="time each sweep cell for at least this")
    a = p.parse_args()
    if threads.chosen_by() is not None:
        sys.exit(f"unset {threads.chosen_by()} first: the bench sets the counts itself")
    many = torch.get_num_threads()
    print(f"{machine()}; torch {torch.__version__}, {many} threads by default; "
          f"{time.strftime('%Y-%m-%d %H:%M')}; load {os.getloadavg()[0]:.1f}")
    parts = a.part.split(",")
    if "workloads" in parts:
        part_workloads(a, many)
    if "sweep" in parts:
        part_sweep(a, many)


if __name__ == "__main__":
    main()
