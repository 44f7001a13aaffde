"""VAE training: aigc's models and loop next to the classic MLP VAE tutorial, trained its way.

The tutorial is PyTorch's examples/vae: an MLP 784-400-20 with a Bernoulli (BCE) decoder,
Adam 1e-3, batch 128, MNIST behind a DataLoader that applies ToTensor to one PIL image at a time
(no workers on CPU, as the example sets). aigc keeps the uint8 digits as one tensor and slices
batches. Data: the 10,000 MNIST digits in ../shared.

    python benches/bench_vae.py speed [--steps 100]
        images/s of: the tutorial model the tutorial way, the tutorial model fed by slicing,
        and aigc's `train vae` models (mlp, conv) at their defaults.
    AIGC_HOME=... python benches/bench_vae.py quality [--epochs 20] [--grid tutorial.png]
        trains the tutorial model the tutorial way, prints its wall time and how the bench digit
        classifier (benches/classifier.py) judges 2,000 of its samples, from N(0, I) as the
        tutorial samples and from aigc's fitted prior (a 30-component mixture on the posterior
        means of 5,000 digits, as `train vae --prior gmm` fits it); judge an aigc run with
        benches/quality.py RUN and compare. --grid saves 64 of the tutorial's N(0, I) samples.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

ROOT = Path(__file__).resolve().parents[1]
MNIST = ROOT.parent / "shared/data/mnist/t10k-images-idx3-ubyte.gz"
TUTORIAL_BATCH = 128


class TutorialVAE(nn.Module):
    """pytorch/examples vae/main.py: 784-400-(20, 20) encoder, 20-400-784 decoder."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc21, self.fc22 = nn.Linear(784, 400), nn.Linear(400, 20), nn.Linear(400, 20)
        self.fc3, self.fc4 = nn.Linear(20, 400), nn.Linear(400, 784)

    def decode(self, z):
        return torch.sigmoid(self.fc4(F.relu(self.fc3(z))))

    def forward(self, x):  # x: (B, 1, 28, 28) in [0, 1]
        h = F.relu(self.fc1(x.view(-1, 784)))
        mu, logvar = self.fc21(h), self.fc22(h)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return self.decode(z), mu, logvar


def tutorial_step(model, opt, x):
    recon, mu, logvar = model(x)
    bce = F.binary_cross_entropy(recon, x.view(-1, 784), reduction="sum")
    kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    loss = bce + kld
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss


class PILDataset(torch.utils.data.Dataset):
    def __init__(self, images):
        from torchvision import transforms

        self.items = [Image.fromarray(im[0].numpy(), mode="L") for im in images]
        self.transform = transforms.ToTensor()

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.transform(self.items[i]), 0


def tutorial_loader(images, workers):
    return torch.utils.data.DataLoader(PILDataset(images), batch_size=TUTORIAL_BATCH, shuffle=True,
                                       num_workers=workers)


def timed(step_fn, batches, steps, batch):
    """Images/s over ``steps`` steps after 5 warm-up steps; ``batches`` yields inputs forever."""
    start = None
    for i in range(steps + 5):
        if i == 5:
            start = time.perf_counter()
        step_fn(next(batches))
    return steps * batch / (time.perf_counter() - start)


def forever(loader):
    while True:
        yield from loader


def sliced(images, batch, as_float):
    from aigc_cli.training.loop import epoch_permutation

    epoch = 0
    while True:
        order = epoch_permutation(len(images), 0, epoch)
        for i in range(0, len(order) - batch + 1, batch):
            b = images[order[i : i + batch]]
            yield b.float() / 255 if as_float else b
        epoch += 1


def aigc_task(arch, shape):
    from aigc_cli.models.registry import get_family

    vae = get_family("vae")
    model, train = vae.make_config({"arch": arch}, {"shape": list(shape), "classes": None})
    config = {"model": model, "train": {**train, "batch_size": 64}, "seed": 0, "dataset": {"size": 10000}}
    return vae.training_task(config, torch.device("cpu"))


def speed(images, steps, workers):
    torch.manual_seed(0)
    rows = []
    m = TutorialVAE()
    opt = torch.optim.Adam(m.parameters(), 1e-3)
    rate = timed(lambda x: tutorial_step(m, opt, x[0]), forever(tutorial_loader(images, workers)), steps, TUTORIAL_BATCH)
    rows.append(("tutorial MLP 784-400-20, DataLoader + ToTensor", TUTORIAL_BATCH, rate))
    m = TutorialVAE()
    opt = torch.optim.Adam(m.parameters(), 1e-3)
    rate = timed(lambda x: tutorial_step(m, opt, x), sliced(images, TUTORIAL_BATCH, True), steps, TUTORIAL_BATCH)
    rows.append(("tutorial MLP 784-400-20, uint8 tensor slicing", TUTORIAL_BATCH, rate))
    for arch in ("mlp", "conv"):
        task = aigc_task(arch, images.shape[1:])
        counter = iter(range(10**9))
        rate = timed(lambda x: task.train_step(x, None, next(counter)), sliced(images, 64, False), steps, 64)
        rows.append((f"aigc train vae --arch {arch} (defaults)", 64, rate))
    print(f"threads {torch.get_num_threads()}, {steps} timed steps each")
    print("| model and input pipeline | batch | images/s |")
    print("| --- | ---: | ---: |")
    for name, batch, rate in rows:
        print(f"| {name} | {batch} | {rate:,.0f} |")


@torch.no_grad()
def sample_tutorial(model, n, seed, prior=None):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 20, generator=g)
    if prior is not None:
        z = prior.codes(z, torch.rand(n, generator=g))
    # The tutorial saves sigmoid means as PNG; quantise exactly as a PNG would.
    return (model.decode(z).view(n, 1, 28, 28) * 255).round().clamp(0, 255).to(torch.uint8)


@torch.no_grad()
def fitted_prior(model, images):
    """aigc's default VAE prior, fitted to the tutorial model's posterior means."""
    from aigc_cli.models.vae.prior import GmmPrior, components_for, fit_subset

    keep = fit_subset(len(images), seed=0)  # the subset a run with seed 0 fits
    x = (images if keep is None else images[keep]).float() / 255
    codes = model.fc21(F.relu(model.fc1(x.view(-1, 784))))  # (N, 20) posterior means
    prior = GmmPrior(components_for(len(images)), 20)
    prior.fit(codes, seed=0)
    return prior


def quality(images, epochs, workers, n, grid=None):
    from classifier import get_classifier, judge, real_reference

    torch.manual_seed(0)
    m = TutorialVAE()
    opt = torch.optim.Adam(m.parameters(), 1e-3)
    loader = tutorial_loader(images, workers)
    start = time.perf_counter()
    for epoch in range(epochs):
        total = 0.0
        for x, _ in loader:
            total += float(tutorial_step(m, opt, x))
        print(f"epoch {epoch + 1}: loss {total / len(images):.2f} nats/image", file=sys.stderr)
    seconds = time.perf_counter() - start
    clf = get_classifier(verbose=False)
    report = {
        "model": "tutorial MLP VAE 784-400-20, BCE",
        "epochs": epochs,
        "train_seconds": round(seconds, 1),
        "samples": judge(clf, sample_tutorial(m.eval(), n, 0)),
        "samples_fitted_prior": judge(clf, sample_tutorial(m, n, 0, fitted_prior(m, images))),
        "real": real_reference(clf),
    }
    print(json.dumps(report, indent=2))
    if grid:
        from aigc_cli.core.images import make_grid, png_bytes
        from aigc_cli.core.io import atomic_write_bytes

        atomic_write_bytes(grid, png_bytes(make_grid(sample_tutorial(m, 64, 0)), {}))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["speed", "quality"])
    p.add_argument("--steps", type=int, default=100, help="speed: timed steps per model")
    p.add_argument("--epochs", type=int, default=20, help="quality: tutorial epochs")
    p.add_argument("--workers", type=int, default=0, help="tutorial DataLoader workers (the example uses 0 on CPU)")
    p.add_argument("-n", type=int, default=2000, help="quality: samples judged")
    p.add_argument("--grid", help="quality: save 64 tutorial samples (N(0, I)) to this PNG")
    args = p.parse_args()
    from aigc_cli.data import load_dataset

    if not MNIST.exists():
        sys.exit(f"no MNIST files at {MNIST}")
    images = load_dataset(str(MNIST)).images  # (10000, 1, 28, 28) uint8
    if args.what == "speed":
        speed(images, args.steps, args.workers)
    else:
        quality(images, args.epochs, args.workers, args.n, args.grid)


if __name__ == "__main__":
    main()
