"""The diffusion sampling defaults judged by distribution quality as well as by the asked class.

Trains the default `aigc train diffusion` once on the 10,000 MNIST digits in ../shared for a time
budget (or takes a trained run), then sweeps on that one checkpoint:

- guidance 1, 1.25, 1.5, 2, 3 (DPM-Solver++ 2M, 25 steps, EMA weights: the other defaults);
- the samplers dpm++, ddim, ddpm at 10, 25, 50 steps (guidance 2, EMA);
- the raw weights (checkpoint.safetensors' ``unet``) against the EMA (model.safetensors);

and judges each row's samples (seed 0, every class in turn) with

- the bench digit classifier (benches/classifier.py; trained on 8,000 of the digits): the share
  drawn as the asked class, the mean confidence, the pixel class diversity of classifier.py;
- an FID-style score on that classifier's penultimate features (128 ReLU units): the Frechet
  distance (aigc_cli/metrics/frechet.py) between the samples' feature mean/covariance and those
  of all 10,000 digits ("judge FD");
- per-class FD: the mean over the ten classes of the Frechet distance between the samples drawn
  for class k and the real digits of class k (what guidance does to each class's spread);
- feature spread: the mean pairwise feature distance between two samples drawn for the same
  class, divided by the same for real digits of one class (1.0: as varied as the real digits;
  below: each class narrowed);
- with ``--inception-weights PATH`` (pt_inception-2015-12-05-6726825d.pth), aigc's own FID
  (the Inception network of `aigc eval fid`, through aigc_cli.metrics.fid_against_dataset)
  against all 10,000 digits.

The real digits' own scores are the floor: the first n digits (n = each row's sample count)
against all 10,000, judged the same way. Every statistic depends on the sample count (an FD of
fewer samples is larger), so compare rows of the same n only.

    AIGC_HOME=... AIGC_THREADS=1 python benches/diffusion_defaults.py --train 30m --out rows.jsonl
    AIGC_HOME=... AIGC_THREADS=1 python benches/diffusion_defaults.py --run RUN --out rows.jsonl
    python benches/diffusion_defaults.py --table rows.jsonl      # the markdown table

Rows are appended to ``--out`` as they finish and a row already there is not sampled again, so an
interrupted sweep goes on where it stopped; they are sampled in that order (guidance, raw weights,
sampler/steps), so a sweep cut short keeps the guidance rows. ``--grid-n`` and ``--raw-n`` set the
samples of the sampler/steps and raw-weights rows (default: ``-n``). A run of another family
(``--run`` of a GAN) gets one row, its defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from classifier import MNIST, class_diversity, get_classifier, load_mnist  # noqa: E402

GUIDANCE = "1,1.25,1.5,2,3"
SAMPLERS = "dpm++,ddim,ddpm"
STEPS = "10,25,50"
DEFAULT = {"sampler": "dpm++", "steps": 25, "guidance": 2.0, "weights": "ema"}


# ---------------------------------------------------------------------------- the judge


@torch.no_grad()
def features(model, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 1, 28, 28) uint8 -> (penultimate features (N, 128) float64, class probabilities (N, 10))."""
    body, head = model.net[:-1], model.net[-1]
    feats, probs = [], []
    for i in range(0, len(images), 500):
        f = body(images[i : i + 500].float() / 255)
        feats.append(f.double())
        probs.append(F.softmax(head(f), 1))
    return torch.cat(feats), torch.cat(probs)


def stats(f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return f.mean(0), torch.cov(f.T)


def fd(a: tuple, b: tuple) -> float:
    from aigc_cli.metrics.frechet import frechet_distance

    return frechet_distance(a[0].numpy(), a[1].numpy(), b[0].numpy(), b[1].numpy())


def mean_pairwise(f: torch.Tensor) -> float:
    d = torch.cdist(f, f)
    return float(d.sum() / (len(f) * (len(f) - 1)))


class DigitJudge:
    def __init__(self):
        self.model = get_classifier(verbose=False)
        self.images, self.labels = load_mnist()
        self.feats, _ = features(self.model, self.images)
        self.all = stats(self.feats)
        self.per_class = [stats(self.feats[self.labels == k]) for k in range(10)]

    def __call__(self, images: torch.Tensor, asked: torch.Tensor, real_spread: float | None = None) -> dict:
        f, probs = features(self.model, images)
        top, cls = probs.max(1)
        per_class_fd = [fd(stats(f[asked == k]), self.per_class[k]) for k in range(10) if (asked == k).sum() > 1]
        spreads = [mean_pairwise(f[asked == k]) for k in range(10) if (asked == k).sum() > 1]
        spread = sum(spreads) / len(spreads)
        row = {
            "judge_fd": round(fd(stats(f), self.all), 2),
            "class_fd": round(sum(per_class_fd) / len(per_class_fd), 2),
            "asked_share": round(float((cls == asked).float().mean()), 4),
            "mean_confidence": round(float(top.mean()), 4),
            "feature_spread_abs": round(spread, 3),
            "pixel_diversity": round(class_diversity(images, cls), 3),
        }
        if real_spread is not None:
            row["feature_spread"] = round(spread / real_spread, 3)
        return row

    def real(self, n: int) -> dict:
        """The first n digits (the classifier's held-out 2,000 come first) as if they were samples."""
        return self(self.images[:n], self.labels[:n])


# ---------------------------------------------------------------------------- sampling


def raw_generator(run_id: str):
    """A Generator whose U-Net holds the raw (not averaged) weights of the run's checkpoint."""
    from safetensors.torch import load_file

    from aigc_cli.generation import load_generator

    gen = load_generator(run_id)
    tensors = load_file(str(gen.run.checkpoint_path))
    state = {k[len("model.unet."):]: v for k, v in tensors.items() if k.startswith("model.unet.")}
    gen.sampler.unet.load_state_dict(state)
    return gen


def configs(args) -> list[dict]:
    rows = []
    for g in args.guidance.split(","):
        rows.append({**DEFAULT, "guidance": float(g), "n": args.n})
    for g in args.raw_guidance.split(","):
        rows.append({**DEFAULT, "weights": "raw", "guidance": float(g), "n": args.raw_n or args.n})
    for s in args.samplers.split(","):
        for k in args.steps.split(","):
            rows.append({**DEFAULT, "sampler": s, "steps": int(k), "n": args.grid_n or args.n})
    seen, out = set(), []
    for r in rows:
        key = json.dumps(r, sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


def key_of(row: dict) -> str:
    return json.dumps({k: row.get(k) for k in ("sampler", "steps", "guidance", "weights", "n")}, sort_keys=True)


def sweep(args, run_id: str) -> None:
    from aigc_cli.data import load_dataset
    from aigc_cli.generation import load_generator

    gens = {"ema": load_generator(run_id)}
    run_id = gens["ema"].run.id  # a name or 'last' resumes the rows of the same run id
    out = Path(args.out)
    done = set()
    if out.exists():
        done = {key_of(json.loads(line)) for line in out.read_text().splitlines()
                if line.strip() and json.loads(line).get("run") == run_id}
    judge = DigitJudge()
    reals: dict[int, dict] = {}
    dataset = load_dataset(str(MNIST)) if args.inception_weights else None

    def emit(row: dict) -> None:
        print(json.dumps(row), flush=True)
        with out.open("a") as fh:
            fh.write(json.dumps(row) + "\n")

    def real_row(n: int) -> dict:
        if n not in reals:
            reals[n] = judge.real(n)
            row = {"run": run_id, "weights": "real digits", "n": n, **reals[n]}
            if key_of(row) not in done:
                emit(row)
        return reals[n]

    family = gens["ema"].config["family"]
    todo = configs(args) if family == "diffusion" else [{"weights": "ema", "n": args.n}]
    for cfg in todo:
        real = real_row(cfg["n"])
        row = {"run": run_id, **cfg}
        if key_of(row) in done:
            continue
        if cfg["weights"] not in gens:
            gens[cfg["weights"]] = raw_generator(run_id)
        gen = gens[cfg["weights"]]
        options = {k: cfg[k] for k in ("sampler", "steps", "guidance") if k in cfg}
        t0 = time.perf_counter()
        images = gen.sample_uint8(cfg["n"], seed=args.seed, **options)
        row["sample_s"] = round(time.perf_counter() - t0, 1)
        asked = gen.conditioning(cfg["n"]).labels
        row.update(judge(images, asked, real["feature_spread_abs"]))
        if args.inception_weights:
            from aigc_cli.metrics import fid_against_dataset

            row["inception_fid"] = round(fid_against_dataset(lambda n: images, dataset, cfg["n"],
                                                             weights_path=args.inception_weights,
                                                             ref_n=len(dataset)), 2)
        emit(row)


# ---------------------------------------------------------------------------- the table


def table(path: str) -> str:
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    cols = [("weights", "weights"), ("sampler", "sampler"), ("steps", "steps"), ("guidance", "guidance"),
            ("n", "samples"), ("judge_fd", "judge FD (all digits)"), ("class_fd", "per-class FD"),
            ("feature_spread", "feature spread"), ("asked_share", "asked digit"),
            ("mean_confidence", "mean confidence"), ("pixel_diversity", "pixel diversity"),
            ("inception_fid", "Inception FID"), ("sample_s", "sampling s")]
    lines = ["| " + " | ".join(c[1] for c in cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = []
        for k, _ in cols:
            v = r.get(k, "")
            if k == "asked_share" and v != "":
                v = f"{100 * v:.1f}%"
            elif k == "feature_spread" and r.get("weights") == "real digits":
                v = "1.00"
            elif k == "inception_fid" and v == "":
                v = "not measured"
            elif isinstance(v, float) and k not in ("guidance",):
                v = f"{v:.3f}" if k in ("mean_confidence", "feature_spread") else f"{v:.2f}" if k != "sample_s" else f"{v:.0f}"
            cells.append(str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--train", metavar="TIME", help="train the default diffusion model for TIME (30m), then sweep")
    what.add_argument("--run", help="sweep an already trained run (id or name)")
    what.add_argument("--table", metavar="JSONL", help="print the markdown table of a sweep's rows")
    p.add_argument("--out", default="diffusion_defaults.jsonl", help="rows are appended here (and resumed from)")
    p.add_argument("-n", type=int, default=2000, help="samples per row")
    p.add_argument("--grid-n", type=int, default=None, help="samples per sampler/steps row (default: -n)")
    p.add_argument("--raw-n", type=int, default=None, help="samples per raw-weights row (default: -n)")
    p.add_argument("--guidance", default=GUIDANCE)
    p.add_argument("--raw-guidance", default="2,1", help="guidance of the raw-weights rows (dpm++, 25 steps)")
    p.add_argument("--samplers", default=SAMPLERS)
    p.add_argument("--steps", default=STEPS)
    p.add_argument("--seed", type=int, default=0, help="training and sampling seed")
    p.add_argument("--name", default=None, help="--train: the run's name")
    p.add_argument("--inception-weights", default=None, metavar="PATH",
                   help="pt_inception-2015-12-05-6726825d.pth: also aigc's own Inception FID")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="--train: a family or loop option (tiny checks: --set width=8)")
    args = p.parse_args()
    if args.table:
        print(table(args.table))
        return
    if os.environ.get("AIGC_THREADS"):
        from aigc_cli.core.threads import set_threads

        set_threads(int(os.environ["AIGC_THREADS"]))
    run_id = args.run
    if args.train:
        from quality_curve import parse_value

        from aigc_cli.training import train

        options = {k.replace("-", "_"): parse_value(v) for k, v in (kv.split("=", 1) for kv in args.set)}
        t0 = time.perf_counter()
        run = train("diffusion", str(MNIST), epochs=options.pop("epochs", 1000), time=args.train, seed=args.seed,
                    name=args.name, **options)
        meta = run.read_meta()
        print(json.dumps({"run": run.id, "train_s": round(time.perf_counter() - t0, 1), "step": meta.get("step"),
                          "epoch": meta.get("epoch")}), flush=True)
        run_id = run.id
    sweep(args, run_id)


if __name__ == "__main__":
    main()
