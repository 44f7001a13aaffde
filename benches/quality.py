"""Judge a trained MNIST run's samples with the bench digit classifier.

    AIGC_HOME=... python benches/quality.py RUN [-n 2000] [--seed 0] [--steps 25]

Prints the classifier's mean confidence, share of confident samples and the class histogram
for the run's samples next to the same figures for 2,000 real held-out digits.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from classifier import get_classifier, judge, real_reference  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run")
    parser.add_argument("-n", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (diffusion runs)")
    args = parser.parse_args()

    from aigc_cli.generation import load_generator

    gen = load_generator(args.run)
    if gen.image_shape != (1, 28, 28):
        sys.exit(f"{args.run} is not an MNIST-shaped run: {gen.image_shape}")
    model = get_classifier(verbose=False)
    options = {} if args.steps is None else {"steps": args.steps}
    samples = gen.sample_uint8(args.n, seed=args.seed, **options)
    report = {
        "run": gen.run.id,
        "config": {k: gen.config["model"].get(k) for k in ("arch", "loss", "latent_dim", "width", "beta")},
        "epochs": gen.run.read_meta().get("epoch"),
        **options,
        "samples": judge(model, samples, gen.conditioning(args.n).labels),
        "real": real_reference(model),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
