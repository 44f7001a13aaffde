"""Can the default generator draw the shapes at all? Fit it to them with the factors given.

    python benches/shapes_generator_fit.py [--epochs 12] [--width 32]

No adversary: the class-conditional DCGAN generator that `aigc train gan` builds for the shapes
gets the shape as its class and the other factors (scale, position, rotation, hue) in the first
entries of its latent vector, and is fitted to the matching training images by mean squared
error. The shape judge of benches/shapes_quality.py then classifies what it draws for the test
split's factors. If the fitted generator draws the shapes, its architecture is not what keeps a
GAN from drawing them; the adversarial training is.
"""

from __future__ import annotations

import argparse
import math
import time

import torch
import torch.nn.functional as F

from shapes_quality import train_judge


def factor_code(factors: dict[str, torch.Tensor], latent_dim: int) -> torch.Tensor:
    """(n, latent_dim): factors scaled to about [-1, 1], angles as sines and cosines, zeros after."""
    a, hue = factors["rotation"], 2 * math.pi * factors["hue"]
    cols = [factors["scale"] * 4 - 1, factors["x"] * 4 - 2, factors["y"] * 4 - 2,
            a.cos(), a.sin(), (3 * a).cos(), (3 * a).sin(), (4 * a).cos(), (4 * a).sin(), hue.cos(), hue.sin()]
    z = torch.zeros(len(a), latent_dim)
    z[:, : len(cols)] = torch.stack(cols, 1)
    return z


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--width", type=int, default=32)
    args = p.parse_args()
    from aigc_cli.core.memory import tune_cpu_allocator
    from aigc_cli.data import load_dataset
    from aigc_cli.data.shapes import SHAPES
    from aigc_cli.models.common import NetSpec
    from aigc_cli.models.gan.nets import build_nets
    from aigc_cli.models.registry import get_family

    tune_cpu_allocator()
    torch.manual_seed(0)
    latent = get_family("gan").spec.defaults()["latent_dim"]
    train, test = load_dataset("shapes", "train"), load_dataset("shapes", "test")
    images, labels = train.images, train.labels  # (N, 3, 32, 32) uint8, (N,)
    G, _ = build_nets("dcgan", NetSpec((3, 32, 32), latent, len(SHAPES), args.width), spectral=False)
    G = G.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(G.parameters(), 1e-3)
    code = factor_code(train.factors, latent)
    start = time.perf_counter()
    for epoch in range(args.epochs):
        order, total = torch.randperm(len(images)), 0.0
        for i in range(0, len(order), 64):
            idx = order[i : i + 64]
            loss = F.mse_loss(G(code[idx], labels[idx]), images[idx].float() / 127.5 - 1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        print(f"epoch {epoch + 1}: mean squared error {total / len(order):.4f} ({time.perf_counter() - start:.0f} s)")

    judge, accuracy = train_judge()
    with torch.no_grad():
        drawn = (G.eval()(factor_code(test.factors, latent), test.labels) + 1) / 2  # (n, 3, 32, 32)
        predicted = judge(drawn).argmax(1)
    print(f"judge: accuracy {accuracy:.3f} on the real test split")
    print("fitted generator, test factors, judged as the asked shape: " + ", ".join(
        f"{s} {(predicted[test.labels == k] == k).float().mean():.0%}" for k, s in enumerate(SHAPES)))


if __name__ == "__main__":
    main()
