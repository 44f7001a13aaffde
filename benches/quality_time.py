"""Quality at equal wall time: aigc's default GAN against the PyTorch DCGAN tutorial, on the
MNIST digits in ../shared, each trained alone on the machine for the same budgets.

    AIGC_HOME=... python benches/quality_time.py [--budgets 2m,5m,10m]

The tutorial side is the tutorial as a user would run it on these digits: its networks (G:
ConvTranspose + BatchNorm + ReLU from nz = 100, D: Conv + BatchNorm + LeakyReLU, ngf = ndf = 64,
N(0, 0.02) weights), its loss (BCE on a sigmoid output), its optimisers (Adam 2e-4, betas 0.5
and 0.999), its loop (D on the real batch, then on the fake batch, then G against the updated D)
and its data path (PIL images, ToTensor + Normalize in a DataLoader with 2 workers, batch 128).
The tutorial draws 64x64 images by resizing; here the layers are those for 28x28 (7 -> 14 -> 28),
the usual adaptation, so both sides draw the digits at their size. It is unconditional and has
no weight average; aigc runs its defaults (class-conditional, since the labels lie beside the
images) through ``train(..., time=...)``, as ``aigc train gan --time`` does.

Each budget trains both sides from scratch, one after the other, in this process's order aigc,
tutorial; both are judged by the bench digit classifier on 2,000 samples (benches/classifier.py):
mean confidence, share with p > 0.9, class entropy, class diversity, and for aigc the share drawn
as the asked class. The judging is not counted in the budget.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_train import PILDataset  # noqa: E402
from classifier import MNIST, get_classifier, judge, load_mnist  # noqa: E402

NZ, NGF, NDF, BATCH = 100, 64, 64, 128


def tutorial_nets() -> tuple[nn.Module, nn.Module]:
    g = nn.Sequential(
        nn.ConvTranspose2d(NZ, NGF * 2, 7, 1, 0, bias=False), nn.BatchNorm2d(NGF * 2), nn.ReLU(True),  # (B, 128, 7, 7)
        nn.ConvTranspose2d(NGF * 2, NGF, 4, 2, 1, bias=False), nn.BatchNorm2d(NGF), nn.ReLU(True),  # (B, 64, 14, 14)
        nn.ConvTranspose2d(NGF, 1, 4, 2, 1, bias=False), nn.Tanh(),  # (B, 1, 28, 28)
    )
    d = nn.Sequential(
        nn.Conv2d(1, NDF, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True),  # (B, 64, 14, 14)
        nn.Conv2d(NDF, NDF * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(NDF * 2), nn.LeakyReLU(0.2, True),  # (B, 128, 7, 7)
        nn.Conv2d(NDF * 2, 1, 7, 1, 0, bias=False), nn.Sigmoid(), nn.Flatten(0),  # (B,)
    )
    for m in list(g.modules()) + list(d.modules()):  # the tutorial's weights_init
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
    return g, d


def train_tutorial(seconds: float, seed: int) -> tuple[nn.Module, int]:
    """The tutorial's loop until ``seconds`` of training have passed; (G, steps taken)."""
    torch.manual_seed(seed)
    images, labels = load_mnist()
    loader = torch.utils.data.DataLoader(PILDataset(images, labels), batch_size=BATCH, shuffle=True,
                                         num_workers=2, drop_last=True, persistent_workers=True)
    g, d = tutorial_nets()
    criterion = nn.BCELoss()
    opt_d = torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_g = torch.optim.Adam(g.parameters(), lr=2e-4, betas=(0.5, 0.999))
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for real, _ in loader:
            b = real.size(0)
            d.zero_grad()
            err_real = criterion(d(real), torch.ones(b))
            fake = g(torch.randn(b, NZ, 1, 1))
            err_fake = criterion(d(fake.detach()), torch.zeros(b))
            (err_real + err_fake).backward()
            opt_d.step()
            g.zero_grad()
            criterion(d(fake), torch.ones(b)).backward()
            opt_g.step()
            steps += 1
            if time.perf_counter() - start >= seconds:
                break
    return g.eval(), steps


@torch.no_grad()
def tutorial_samples(g: nn.Module, n: int, seed: int) -> torch.Tensor:
    from aigc_cli.core.images import to_uint8

    z = torch.randn(n, NZ, 1, 1, generator=torch.Generator().manual_seed(seed))
    return to_uint8((g(z) + 1) / 2)  # (n, 1, 28, 28), quantised as aigc's samples are


def parse_budget(text: str) -> float:
    from aigc_cli.core.options import parse_duration

    return parse_duration("budget", text)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--budgets", default="2m,5m,10m")
    p.add_argument("-n", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    from aigc_cli.generation import load_generator
    from aigc_cli.training import train

    model = get_classifier(verbose=False)
    keys = ("asked_share", "mean_confidence", "confident_share", "class_entropy", "class_diversity")
    print(f"{'budget':>7s} {'side':9s} {'steps':>6s} " + " ".join(f"{k:>15s}" for k in keys))
    for budget in args.budgets.split(","):
        seconds = parse_budget(budget)
        run = train("gan", str(MNIST), epochs=1000, time=budget, seed=args.seed)
        gen = load_generator(run.id)
        ours = judge(model, gen.sample_uint8(args.n, seed=args.seed), gen.conditioning(args.n).labels)
        steps = run.read_meta()["step"]
        g, t_steps = train_tutorial(seconds, args.seed)
        theirs = judge(model, tutorial_samples(g, args.n, args.seed))
        for side, n_steps, r in (("aigc", steps, ours), ("tutorial", t_steps, theirs)):
            print(f"{budget:>7s} {side:9s} {n_steps:6d} " + " ".join(f"{r.get(k, float('nan')):15.4f}" for k in keys),
                  flush=True)
            print(json.dumps({"budget": budget, "side": side, "steps": n_steps, **r}), file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
