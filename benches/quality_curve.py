"""Quality over training: train one run on the MNIST digits in ../shared (or the built-in shapes)
and judge its samples at chosen epochs, from the checkpoint each epoch leaves.

    AIGC_HOME=... python benches/quality_curve.py gan [--epochs 1,2,3,5,8,12,20] [--set key=value ...]
    AIGC_HOME=... python benches/quality_curve.py gan --dataset shapes --epochs 1,2,3

Prints one row per judged epoch: the wall time of training so far and, on MNIST, the share of
samples classified as the class they were asked for, the mean confidence, the share with
p > 0.9, the class entropy and the class diversity (benches/classifier.py); on the shapes, the
share recognised as the asked shape by the shapes judge (benches/shapes_quality.py), per shape
and overall. The judging time is not counted. ``--set`` passes family options (``--set lr=1e-4``); ``--threads`` pins
torch's thread count so that two curves can be taken side by side.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from classifier import MNIST, get_classifier, judge  # noqa: E402
from shapes_quality import train_judge  # noqa: E402


def parse_value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(text.lower(), text)


class Judge:
    """A progress sink that judges the run's checkpoint at the chosen epochs."""

    def __init__(self, epochs: set[int], n: int, seed: int, dataset: str, steps: list[int | None]):
        self.epochs, self.n, self.seed, self.dataset, self.steps = epochs, n, seed, dataset, steps
        self.model = train_judge()[0] if dataset == "shapes" else get_classifier(verbose=False)
        self.run_id, self.rows = None, []
        self.train_s, self.t0 = 0.0, None

    def start(self, *a, **k):
        self.t0 = time.perf_counter()

    def update(self, *a):
        pass

    def message(self, text):
        print(text, file=sys.stderr)

    def close(self):
        pass

    def epoch_end(self, epoch, epochs, previews):
        self.train_s += time.perf_counter() - self.t0
        if epoch in self.epochs:
            from aigc_cli.generation import load_generator

            gen = load_generator(self.run_id)
            labels = gen.conditioning(self.n).labels
            for steps in self.steps:
                options = {} if steps is None else {"steps": steps}
                t0 = time.perf_counter()
                images = gen.sample_uint8(self.n, seed=self.seed, **options)
                sample_s = time.perf_counter() - t0
                report = (self.judge_shapes(images, labels) if self.dataset == "shapes"
                          else judge(self.model, images, labels))
                row = {"epoch": epoch, "train_s": round(self.train_s, 1), **options,
                       "images_per_s": round(self.n / sample_s, 1), **report}
                self.rows.append(row)
                print(json.dumps(row), flush=True)
        self.t0 = time.perf_counter()


    @torch.no_grad()
    def judge_shapes(self, images: torch.Tensor, labels: torch.Tensor) -> dict:
        from aigc_cli.data.shapes import SHAPES

        got = self.model(images.float() / 255).argmax(1)  # the judge takes [0, 1] floats
        per_shape = {s: round(float((got[labels == k] == k).float().mean()), 4) for k, s in enumerate(SHAPES)}
        return {"asked_share": round(float((got == labels).float().mean()), 4), **per_shape}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("family", nargs="?", default="gan")
    p.add_argument("--epochs", default="1,2,3,5,8,12,20", help="epochs to judge; the run trains to the last")
    p.add_argument("--dataset", default=str(MNIST), help="the MNIST file in ../shared (default) or shapes")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a family or loop option")
    p.add_argument("-n", type=int, default=2000, help="samples judged per epoch")
    p.add_argument("--steps", default=None, help="sampling steps to judge, comma-separated (diffusion: 10,25,50)")
    p.add_argument("--seed", type=int, default=0, help="the training seed")
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    epochs = sorted({int(e) for e in args.epochs.split(",")})
    options = dict(kv.split("=", 1) for kv in args.set)
    options = {k.replace("-", "_"): parse_value(v) for k, v in options.items()}

    from aigc_cli.training import train

    steps = [int(s) for s in args.steps.split(",")] if args.steps else [None]
    sink = Judge(set(epochs), args.n, 0, "shapes" if args.dataset == "shapes" else "mnist", steps)
    print(json.dumps({"family": args.family, "seed": args.seed, "options": options}), flush=True)
    train(args.family, args.dataset, epochs=epochs[-1], seed=args.seed, progress=sink,
          on_run=lambda run: setattr(sink, "run_id", run.id), **options)


if __name__ == "__main__":
    main()
