"""Images/s of exported generators in ONNX Runtime next to PyTorch eager, on CPU.

    .venv/bin/python benches/bench_onnx.py                 # default-size GANs, random weights
    .venv/bin/python benches/bench_onnx.py --run run3      # a trained run (AIGC_HOME)
    .venv/bin/python benches/bench_onnx.py --markdown      # the table for docs/benchmarks/export.md

Speed does not depend on the weights, so by default the generators are built at the sizes that
``aigc train gan`` uses by default (width 32, latent 64) with their initial weights. Each model is
exported with the same code path as ``aigc export onnx`` (dynamo exporter, opset 18) and checked
against PyTorch before it is timed. Both sides get the same number of threads.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from aigc_cli.export import onnx as ox

CONFIGS = [
    # name, arch, image_shape, num_classes
    ("mlp 1x28x28", "mlp", [1, 28, 28], None),
    ("dcgan 1x28x28", "dcgan", [1, 28, 28], None),
    ("dcgan 3x32x32", "dcgan", [3, 32, 32], None),
    ("dcgan 3x32x32, 10 classes", "dcgan", [3, 32, 32], 10),
]


def build(arch: str, shape: list[int], classes: int | None, latent: int = 64, width: int = 32):
    """A Generator of a GAN with initial weights (what export_module and trace_to_onnx use), no run."""
    from aigc_cli.generation import Generator
    from aigc_cli.models.registry import get_family

    family = get_family("gan")
    model, train = family.make_config({"arch": arch, "latent_dim": latent, "width": width},
                                      {"shape": list(shape), "classes": classes})
    config = {"family": "gan", "model": model, "train": train, "seed": 0}
    device = torch.device("cpu")
    sampler = family.impl.sampler(family.impl.build(config), config, device)
    return Generator(SimpleNamespace(id=f"{arch}-untrained"), config, family, sampler, device)


def from_run(ref: str):
    from aigc_cli.generation import load_generator

    return load_generator(ref, "cpu")


def rate(fn, n: int, seconds: float) -> float:
    """Images/s: best of 3 rounds, each repeating ``fn`` for about ``seconds / 3``."""
    fn()  # warm-up
    best = 0.0
    for _ in range(3):
        count, start = 0, time.perf_counter()
        while True:
            fn()
            count += 1
            elapsed = time.perf_counter() - start
            if elapsed >= seconds / 3:
                break
        best = max(best, count * n / elapsed)
    return best


def bench(name: str, gen, batches: list[int], seconds: float, threads: int, folder: Path) -> list[dict]:
    import onnxruntime as ort

    graph = ox.decoder_graph(gen, "images")
    module, names = graph.module, ox.input_names(graph)
    model = ox.trace_to_onnx(graph, ox.DEFAULT_OPSET)
    path = folder / f"{name.replace(' ', '_').replace(',', '')}.onnx"
    path.write_bytes(model.SerializeToString())
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    rows = []
    for n in batches:
        feed = ox.verification_inputs(graph, n)
        args = [torch.from_numpy(feed[k]) for k in names]
        with torch.inference_mode():
            ref = module(*args).numpy()
        out = session.run(["images"], feed)[0]
        diff = float(np.abs(out - ref).max())

        def run_torch():
            with torch.inference_mode():
                module(*args)

        def run_ort():
            session.run(["images"], feed)

        pt, rt = rate(run_torch, n, seconds), rate(run_ort, n, seconds)
        rows.append({"model": name, "batch": n, "pytorch_images_s": pt, "onnxruntime_images_s": rt,
                     "speedup": rt / pt, "max_abs_diff": diff})
        print(f"{name:28s} batch {n:4d}  pytorch {pt:10.0f}/s  onnxruntime {rt:10.0f}/s  x{rt / pt:.2f}  "
              f"(max diff {diff:.1e})", file=sys.stderr, flush=True)
    return rows


def markdown(rows: list[dict], env: dict) -> str:
    lines = [
        f"Machine: {env['machine']}; {env['threads']} threads each; torch {env['torch']}, "
        f"onnxruntime {env['onnxruntime']}; opset {env['opset']}; load average at start {env['load']}.",
        "",
        "| generator | batch | PyTorch eager (images/s) | ONNX Runtime (images/s) | ORT / PyTorch |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(f"| {r['model']} | {r['batch']} | {r['pytorch_images_s']:,.0f} | "
                     f"{r['onnxruntime_images_s']:,.0f} | {r['speedup']:.2f}x |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", action="append", help="Benchmark a trained run instead (repeatable).")
    p.add_argument("--batches", default="1,64,256", help="Comma-separated batch sizes.")
    p.add_argument("--seconds", type=float, default=1.5, help="Timing budget per measurement.")
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="Threads for both runtimes.")
    p.add_argument("--markdown", action="store_true", help="Print a Markdown table on stdout.")
    p.add_argument("--json", action="store_true", help="Print the rows as JSON on stdout.")
    a = p.parse_args()
    import onnxruntime as ort

    torch.set_num_threads(a.threads)
    batches = [int(b) for b in a.batches.split(",")]
    models = [(r, from_run(r)) for r in a.run] if a.run else [(n, build(*rest)) for n, *rest in CONFIGS]
    env = {
        "machine": f"{platform.machine()} {platform.processor() or ''} ({os.cpu_count()} cores)".replace("  ", " "),
        "threads": a.threads,
        "torch": torch.__version__,
        "onnxruntime": ort.__version__,
        "opset": ox.DEFAULT_OPSET,
        "load": " ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a",
    }
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, gen in models:
            rows += bench(name, gen, batches, a.seconds, a.threads, Path(tmp))
    if a.json:
        print(json.dumps({"env": env, "rows": rows}, indent=2))
    if a.markdown:
        print(markdown(rows, env))


if __name__ == "__main__":
    main()
