"""Judge a run trained on the built-in shapes: does it draw the shape it is asked for?

    AIGC_HOME=... python benches/shapes_quality.py RUN [-n 600] [--seed 0]

Trains a small seeded CNN on the shapes train split (three epochs, about a minute on two cores;
it scores the test split too, as a check of the judge), then classifies n samples of the run
per class (conditional runs) or n samples in all (unconditional ones) and prints, for each
asked class, the share of samples classified as each shape and the mean top probability.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import nn


def train_judge(seed: int = 0) -> tuple[nn.Module, float]:
    from aigc_cli.data import load_dataset

    torch.manual_seed(seed)
    train, test = load_dataset("shapes", "train"), load_dataset("shapes", "test")
    net = nn.Sequential(
        nn.Conv2d(3, 32, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3, 1, 1), nn.ReLU(), nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(64, 3),
    )
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    x, y = train.images.float() / 255, train.labels  # (N, 3, 32, 32) in [0, 1], (N,)
    for _ in range(3):
        order = torch.randperm(len(x))
        for i in range(0, len(x), 128):
            idx = order[i : i + 128]
            loss = F.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        accuracy = (net(test.images.float() / 255).argmax(1) == test.labels).float().mean().item()
    return net, accuracy


def main():
    p = argparse.ArgumentParser()
    p.add_argument("run")
    p.add_argument("-n", type=int, default=600, help="samples per asked class")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    from aigc_cli.data.shapes import SHAPES
    from aigc_cli.generation import load_generator

    judge, accuracy = train_judge()
    print(f"judge: accuracy {accuracy:.3f} on the shapes test split; classes {', '.join(SHAPES)}")
    gen = load_generator(args.run)
    asked = range(gen.num_classes) if gen.num_classes else [None]
    with torch.no_grad():
        for k in asked:
            images = gen.generate(gen.latents(args.n, args.seed), gen.conditioning(args.n, label=k))  # (n, 3, 32, 32) in [0, 1]
            p = F.softmax(judge(images), 1)
            share = p.argmax(1).bincount(minlength=3).float() / args.n
            what = f"asked {SHAPES[k]:8s}" if k is not None else "unconditional  "
            print(f"{what} classified as: " + ", ".join(f"{s} {v:.0%}" for s, v in zip(SHAPES, share.tolist()))
                  + f"; mean top probability {p.max(1).values.mean():.3f}")


if __name__ == "__main__":
    main()
