"""Fine-tuning pays: a run started from a pre-trained parent (``--init``) against the same network
from scratch, on a small *other* data set, at equal wall time (issue 29, benchmark 1).

Each arm is one ``aigc train`` command in its own process (printed before it runs), so the
figures are the tool's own: the same ``--time`` for both, the loop's per-epoch work (checkpoint,
held-out score, previews) inside the budget as a user gets it. The arms are interleaved (A B,
then B A, ...) over ``--rounds`` seeds so that load from other jobs hits both alike.

Text (``text``): a byte-level GPT (width 128, 4 layers, context 64) pre-trained on the built-in
``bard`` (Shakespeare), then ``--init`` from it against scratch on ``--corpus`` (default: the
GNU Free Documentation License 1.2 from ``/usr/share/common-licenses``, 20,432 ASCII
characters: legal English prose, nothing like a play). Judged by the run's own ``val_loss`` on the
corpus' last 10% (the text family's held-out part), in bits per character (ASCII: a byte is a
character). Byte tokens because a char run's alphabet is the corpus it was trained on, and
``--init`` refuses text outside it: bytes take any text.

Diffusion (``diffusion``): the default U-Net pre-trained on the built-in ``digits`` of classes 0-4
(their train split, about 4,000 images), then ``--init`` from it against scratch on 1,000 digits
of classes 5-9 (200 a class, relabelled 0-4: a 5-class data set of digits the parent never
saw). Judged by the bench classifier (``classifier.py``): ``-n`` samples, an equal share per
class, the share classified as the digit asked for and the share with p > 0.9.

    AIGC_HOME=... python benches/bench_finetune.py text [--parent RUN | --pretrain-time 4m] [--time 60s] [--rounds 3] [--warmup N]
    AIGC_HOME=... python benches/bench_finetune.py diffusion [--parent RUN | --pretrain-time 3m] [--time 90s] [--rounds 1] [-n 500]

Without ``--parent`` the bench trains the parent first (``--pretrain-time``) and prints its
command. ``--json PATH`` writes every arm's figures.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

print = functools.partial(print, flush=True)

DEFAULT_CORPUS = "/usr/share/common-licenses/GFDL-1.2"
# The text parent's architecture: nanoGPT's CPU Shakespeare size (benches/bench_text.py), byte tokens.
TEXT_ARCH = ["--arch", "gpt", "--tokenizer", "byte", "--width", "128", "--layers", "4"]
EPOCHS = "100000"  # so that --time, not the epoch count, ends every arm
LN2 = 0.6931471805599453


# -- running one arm -----------------------------------------------------------------------------
THREADS = ["--threads", "1"]  # set by --threads: on a shared 2-core machine 1 thread ran 4x the tokens/s of 2


def aigc(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "aigc_cli", *THREADS, *args]


def run_arm(argv: list[str], name: str, log: Path | None = None) -> dict:
    """Run ``aigc train ... --name name`` in its own process; its wall time, peak RSS (the
    process' own, from wait4: arms never share a peak) and what the run recorded."""
    cmd = aigc([*argv, "--name", name])
    print("$ " + " ".join(["aigc", *cmd[3:]]))  # without "python -m aigc_cli"
    load = os.getloadavg()[0]
    start = time.perf_counter()
    with open(log if log else os.devnull, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"{name} failed (exit {code})" + (f"; see {log}" if log else ""))
    return {"name": name, "wall_s": round(wall, 1), "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
            "load_before": round(load, 2), **run_figures(name)}


def run_figures(name: str) -> dict:
    """Steps, the last held-out loss, the median training step time and file sizes of a run."""
    from aigc_cli.runs.store import resolve_run

    run = resolve_run(name)
    meta = run.read_meta()
    rows = [json.loads(line) for line in run.metrics_path.read_text().splitlines() if line.strip()]
    vals = [r for r in rows if "val_loss" in r]
    config = json.loads((run.path / "config.json").read_text())
    rates = [v for r in rows for k, v in r.items() if k.endswith("_per_s")]  # tokens_per_s, images_per_s
    figures = {"run": run.id, "steps": meta.get("step"), "epochs": meta.get("epoch"),
               "files_kib": {f: round((run.path / f).stat().st_size / 1024, 1)
                             for f in ("model.safetensors", "checkpoint.safetensors") if (run.path / f).exists()}}
    per_step = config["train"]["batch_size"] * (config["model"].get("context") or 1)
    if rates:  # --log-every 1: one row a step, the median skips the steps that carried an epoch's end
        figures["s_per_step"] = round(per_step / statistics.median(rates), 4)
    if vals:
        figures["val_loss"] = round(vals[-1]["val_loss"], 4)
        figures["val_bpc"] = round(vals[-1]["val_loss"] / LN2, 4)
    return figures


def stamp() -> str:
    return time.strftime("%H%M%S")


# -- text ----------------------------------------------------------------------------------------
def text_parent(args) -> str:
    if args.parent:
        return args.parent
    name = f"ft-bard-{stamp()}"
    run_arm(["train", "text", "--dataset", "bard", *TEXT_ARCH, "--time", args.pretrain_time, "--epochs", EPOCHS,
             "--seed", "0"], name)
    return name


def arms(family: str, parent: str, dataset: str, budget: str, arch: list[str],
         extra: list[str] | None = None) -> dict[str, list[str]]:
    """The two commands: --init PARENT, and the parent's architecture (``arch``) from scratch;
    ``extra``: options both take (``--warmup 10``)."""
    common = ["--dataset", dataset, "--time", budget, "--epochs", EPOCHS, "--log-every", "1", *(extra or [])]
    return {"init": ["train", family, "--init", parent, *common],
            "scratch": ["train", family, *arch, *common]}


def interleave(commands: dict[str, list[str]], rounds: int, tag: str, logs: Path | None = None) -> dict[str, list[dict]]:
    """Every arm once a round (seed = round), the order reversed every other round."""
    results: dict[str, list[dict]] = {k: [] for k in commands}
    names = list(commands)
    for r in range(rounds):
        for arm in names if r % 2 == 0 else names[::-1]:
            name = f"{tag}-{re.sub(r'[^A-Za-z0-9._]+', '-', arm)}-s{r}-{stamp()}"  # a valid run name
            fig = run_arm([*commands[arm], "--seed", str(r)], name, logs / f"{name}.log" if logs else None)
            fig["seed"] = r
            results[arm].append(fig)
            print("   " + json.dumps({k: v for k, v in fig.items() if k != "name"}))
    return results


def report_text(results: dict[str, list[dict]], budget: str) -> None:
    print(f"\n## held-out bits per character after {budget} each (per seed, then the median)")
    keys = list(results)
    print("| seed | " + " | ".join(f"{k}: bpc (steps)" for k in keys) + " |")
    print("|---|" + "---|" * len(keys))
    for i in range(len(results[keys[0]])):
        print(f"| {results[keys[0]][i]['seed']} | "
              + " | ".join(f"{results[k][i]['val_bpc']:.3f} ({results[k][i]['steps']})" for k in keys) + " |")
    print("| median | " + " | ".join(f"**{statistics.median(f['val_bpc'] for f in results[k]):.3f}** "
                                     f"({statistics.median(f['steps'] for f in results[k]):.0f})" for k in keys) + " |")


def main_text(args) -> dict:
    corpus = str(Path(args.corpus).resolve())
    parent = text_parent(args)
    print(f"parent: {parent}; corpus: {corpus} ({len(Path(corpus).read_bytes()):,} bytes)")
    results = interleave(arms("text", parent, corpus, args.time, TEXT_ARCH, warmup(args)), args.rounds, "ft-text", args.logs)
    report_text(results, args.time)
    return {"parent": parent, "corpus": corpus, "results": results}


# -- diffusion -----------------------------------------------------------------------------------
def digit_sets(folder: Path, small: int = 200) -> tuple[Path, Path]:
    """``digits04.npz``: the built-in digits' train split of classes 0-4; ``digits59.npz``:
    ``small`` of each of classes 5-9 from it (the first ones), labelled 0-4."""
    import numpy as np

    from aigc_cli.data import load_dataset

    folder.mkdir(parents=True, exist_ok=True)
    pre, other = folder / "digits04.npz", folder / f"digits59-{small}.npz"
    if not (pre.exists() and other.exists()):
        ds = load_dataset("digits", "train")
        images, labels = ds.images.numpy(), ds.labels.numpy()
        low = labels < 5
        np.savez(pre, images=images[low], labels=labels[low])
        picked = np.concatenate([np.flatnonzero(labels == c)[:small] for c in range(5, 10)])
        np.savez(other, images=images[picked], labels=labels[picked] - 5)
    return pre, other


def judge_digits(run: str, n: int, classifier) -> dict:
    """``n`` samples (n / 5 per class, seed 0) judged by the digit classifier: class k was asked
    to draw digit k + 5."""
    import torch
    from classifier import judge

    from aigc_cli.generation import load_generator

    gen = load_generator(run)
    per = max(n // 5, 1)
    images = torch.cat([gen.sample_uint8(per, seed=k, label=k) for k in range(5)])
    asked = torch.arange(5).repeat_interleave(per) + 5
    j = judge(classifier, images, asked)
    return {"asked_share": j["asked_share"], "confident_share": j["confident_share"],
            "grey_share": j["grey_share"]}


def main_diffusion(args) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from classifier import get_classifier

    from aigc_cli.core.paths import home

    pre, other = digit_sets(home() / "bench-data", args.small)
    if args.parent:
        parent = args.parent
    else:
        parent = f"ft-digits04-{stamp()}"
        run_arm(["train", "diffusion", "--dataset", str(pre), "--time", args.pretrain_time, "--epochs", EPOCHS,
                 "--seed", "0"], parent)
    classifier = get_classifier(verbose=True)
    # the default U-Net on both sides (the parent's)
    results = interleave(arms("diffusion", parent, str(other), args.time, [], warmup(args)), args.rounds, "ft-diff", args.logs)
    for figs in results.values():
        for f in figs:
            f.update(judge_digits(f["name"], args.n, classifier))
    print(f"\n## digits 5-9 drawn as asked after {args.time} each ({args.n} samples, per seed, then the median)")
    print("| seed | " + " | ".join(f"{k}: as asked / p > 0.9 (steps)" for k in results) + " |")
    print("|---|" + "---|" * len(results))
    for i in range(args.rounds):
        print(f"| {i} | " + " | ".join(f"{results[k][i]['asked_share']:.1%} / {results[k][i]['confident_share']:.1%} "
                                       f"({results[k][i]['steps']})" for k in results) + " |")
    print("| median | " + " | ".join(f"**{statistics.median(f['asked_share'] for f in results[k]):.1%}** / "
                                     f"{statistics.median(f['confident_share'] for f in results[k]):.1%}"
                                     for k in results) + " |")
    return {"parent": parent, "data": [str(pre), str(other)], "results": results}


def warmup(args) -> list[str]:
    return [] if args.warmup is None else ["--warmup", str(args.warmup)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("family", choices=("text", "diffusion"))
    p.add_argument("--parent", help="a pre-trained run to start from (default: train one first)")
    p.add_argument("--pretrain-time", default=None, help="the parent's --time (text 4m, diffusion 3m)")
    p.add_argument("--corpus", default=DEFAULT_CORPUS, help="the small other text (text)")
    p.add_argument("--small", type=int, default=200, help="images per class of the other digits (diffusion)")
    p.add_argument("--time", default=None, help="each arm's --time (text 60s, diffusion 90s)")
    p.add_argument("--rounds", type=int, default=None, help="seeds, both arms each (text 3, diffusion 1)")
    p.add_argument("-n", type=int, default=500, help="samples judged per diffusion run")
    p.add_argument("--logs", type=Path, default=None, help="a folder for each arm's output")
    p.add_argument("--warmup", type=int, default=None, help="both arms' --warmup (text; default: the family's 100)")
    p.add_argument("--threads", type=int, default=1, help="aigc --threads of every arm")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    THREADS[1] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)  # the bench's own sampling and judging too
    text = args.family == "text"
    args.pretrain_time = args.pretrain_time or ("4m" if text else "3m")
    args.time = args.time or ("60s" if text else "90s")
    args.rounds = args.rounds or (3 if text else 1)
    if args.logs:
        args.logs.mkdir(parents=True, exist_ok=True)
    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load {os.getloadavg()[0]:.2f}, "
          f"{time.strftime('%Y-%m-%d %H:%M')}")
    out = main_text(args) if text else main_diffusion(args)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
