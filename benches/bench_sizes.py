"""How close models/sizing.py's training-memory estimate comes to a real training step, and what
the check costs.

For each family's default network (MNIST-sized images, or the text family's windows) at a batch,
one process per case: the estimate ``train()`` would make (meta device, no memory), then the real
task built on the CPU and three training steps run; the growth of the process's peak resident
memory over those steps (gradients, optimizer state, activations and backward's temporaries:
everything but the weights, already built) is set against the estimate less one weight copy.

    python benches/bench_sizes.py [--batch 64] [--case diffusion ...]
"""

from __future__ import annotations

import argparse
import importlib
import json
import resource
import statistics
import subprocess
import sys
import time

CASES = {
    "gan": ("gan", {}),
    "vae": ("vae", {}),
    "diffusion": ("diffusion", {"precision": "fp32"}),
    "text-gpt": ("text", {"arch": "gpt", "precision": "fp32"}),
    "text-gru": ("text", {"arch": "gru", "precision": "fp32"}),
}
IMAGES = {"name": "mnist-like", "shape": [1, 28, 28], "classes": 10, "size": 10_000}
TEXT = {"name": "text", "shape": [1, 1, 1], "classes": None, "size": 100_000,
        "alphabet": "".join(map(chr, range(32, 97)))}  # 65 characters, as Tiny Shakespeare has


def measure(case: str, batch: int) -> dict:
    import torch

    from aigc_cli.models import sizing
    from aigc_cli.models.registry import get_family

    torch.set_num_threads(1)
    name, options = CASES[case]
    fam = get_family(name)
    info = TEXT if name == "text" else IMAGES
    module = importlib.import_module(fam.spec.implementation.partition(":")[0])
    real, estimates, seconds = module.check_network, [], []

    def timed(*a, **k):
        start = time.perf_counter()
        estimates.append(real(*a, **k))
        seconds.append(time.perf_counter() - start)

    module.check_network = timed
    for _ in range(6):  # the first call imports torch._dynamo (a training does so anyway): not counted
        with sizing.sizing_for("cpu", batch):
            model, train = fam.make_config(options, info)
    est = estimates[-1]
    config = {"model": model, "train": {**train, "epochs": 1, "batch_size": batch, "items": 10 * batch},
              "seed": 0, "dataset": {"size": info["size"]}}
    task = fam.impl.make_task(config, torch.device("cpu"))
    if name == "text":
        items = torch.randint(0, model["vocab_size"], (batch, 2 * model["context"]))
        labels = None
    else:
        items = torch.randint(0, 256, (batch, *info["shape"]), dtype=torch.uint8)
        labels = torch.randint(0, info["classes"], (batch,))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    for step in range(3):
        task.train_step(items.clone(), labels, step)
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    return {"case": case, "batch": batch, "parameters": est.parameters, "activations": est.activation_bytes,
            "estimate_beyond_weights": est.total_bytes - 4 * est.parameters, "measured_growth": grown,
            "check_s": statistics.median(seconds[1:])}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--case", nargs="*", default=list(CASES))
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.batch)))
        return
    from aigc_cli.models.sizing import human_bytes

    print("| case | batch | parameters | activations counted | estimate (less the weights) | peak RSS growth | "
          "estimate / growth | check |")
    print("|---|---|---|---|---|---|---|---|")
    for case in args.case:
        out = subprocess.run([sys.executable, __file__, "--one", case, "--batch", str(args.batch)],
                             capture_output=True, text=True, check=True).stdout
        r = json.loads(out.splitlines()[-1])
        print(f"| {case} | {r['batch']} | {r['parameters']:,} | {human_bytes(r['activations'])} | "
              f"{human_bytes(r['estimate_beyond_weights'])} | {human_bytes(r['measured_growth'])} | "
              f"{r['estimate_beyond_weights'] / max(r['measured_growth'], 1):.2f} | {r['check_s'] * 1000:.0f} ms |")


if __name__ == "__main__":
    main()
