"""LoRA against full fine-tuning (issue 29, benchmark 2): the text case of bench_finetune.py
(the same pre-trained byte-level GPT, the same small other corpus), each arm one
``aigc train text --init PARENT`` process at the same ``--time``.

Per arm: the held-out loss (bits per character, the run's own ``val_loss`` on the corpus' last
10%), the steps the budget gave and the median seconds per training step (``--log-every 1``: one
metrics row a step; the median leaves out the steps that carried an epoch's checkpoint, score
and previews), the process' peak RSS (``wait4``: each arm in its own process, so peaks never
mix), the trained parameters and the run's file sizes (``model.safetensors``,
``checkpoint.safetensors``). Arms: full fine-tuning at the default lr, and LoRA at each of
``--ranks`` and each of ``--lrs`` (the default lr 2e-3, and a higher one: LoRA usually wants it);
every arm with ``--warmup 10`` (``--warmup``), so that the learning rate compared is the one reached.
The arms are interleaved over ``--rounds`` seeds, the order reversed every other round.

    AIGC_HOME=... python benches/bench_lora.py --parent RUN [--corpus PATH] [--time 60s] [--rounds 2] \\
        [--ranks 4,16] [--lrs 2e-3,1e-2] [--warmup 10]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_finetune as ft

print = functools.partial(print, flush=True)


def trained_parameters(name: str) -> int:
    """The parameters a run trains: every tensor of its model.safetensors (a LoRA run's holds the
    adapters alone)."""
    from safetensors import safe_open

    from aigc_cli.runs.store import resolve_run

    with safe_open(str(resolve_run(name).path / "model.safetensors"), "pt") as f:
        total = 0
        for key in f.keys():  # noqa: SIM118  (a safe_open handle, not a dict)
            shape = f.get_slice(key).get_shape()
            n = 1
            for d in shape:
                n *= d
            total += n
    return total


def lora_arms(parent: str, corpus: str, budget: str, ranks: list[int], lrs: list[str],
              warmup: int = 10) -> dict[str, list[str]]:
    common = ["train", "text", "--init", parent, "--dataset", corpus, "--time", budget, "--epochs", ft.EPOCHS,
              "--log-every", "1", "--warmup", str(warmup)]
    arms = {"full, lr 2e-3": [*common, "--lr", "2e-3"]}
    for lr in lrs:
        for r in ranks:
            arms[f"LoRA r{r}, lr {lr}"] = [*common, "--lora", str(r), "--lr", lr]
    return arms


def report(results: dict[str, list[dict]], budget: str) -> None:
    print(f"\n## {budget} each: medians over seeds (per-seed bpc in brackets)")
    print("| arm | held-out bpc | steps | s/step | peak RSS MiB | trained parameters | model.safetensors KiB "
          "| checkpoint.safetensors KiB |")
    print("|---|---|---|---|---|---|---|---|")
    for arm, figs in results.items():
        def med(key, figs=figs):
            return statistics.median(f[key] for f in figs)

        per = ", ".join(f"{f['val_bpc']:.3f}" for f in figs)
        files = figs[0]["files_kib"]
        print(f"| {arm} | **{med('val_bpc'):.3f}** ({per}) | {med('steps'):.0f} | {med('s_per_step'):.3f} | "
              f"{med('peak_rss_mib'):.0f} | {figs[0]['trained']:,} | {files.get('model.safetensors', 0):,.1f} | "
              f"{files.get('checkpoint.safetensors', 0):,.1f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--parent", required=True, help="the pre-trained text run (bench_finetune.py text trains one)")
    p.add_argument("--corpus", default=ft.DEFAULT_CORPUS)
    p.add_argument("--time", default="60s")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--ranks", default="4,16")
    p.add_argument("--lrs", default="2e-3,1e-2", help="LoRA learning rates (full fine-tuning: the default 2e-3)")
    p.add_argument("--warmup", type=int, default=10, help="every arm's --warmup (the default 100 steps is more "
                   "than a minute gives on a shared 2-core machine: the lr would never reach its peak)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--logs", type=Path, default=None)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    ft.THREADS[1] = str(args.threads)
    if args.logs:
        args.logs.mkdir(parents=True, exist_ok=True)
    import torch

    print(f"torch {torch.__version__}, {args.threads} thread(s) per arm, load {os.getloadavg()[0]:.2f}, "
          f"{time.strftime('%Y-%m-%d %H:%M')}")
    corpus = str(Path(args.corpus).resolve())
    arms = lora_arms(args.parent, corpus, args.time, [int(r) for r in args.ranks.split(",")], args.lrs.split(","),
                     args.warmup)
    results = ft.interleave(arms, args.rounds, "lora", args.logs)
    for figs in results.values():
        for f in figs:
            f["trained"] = trained_parameters(f["name"])
    report(results, args.time)
    if args.json:
        args.json.write_text(json.dumps({"parent": args.parent, "corpus": corpus, "results": results}, indent=1))


if __name__ == "__main__":
    main()
