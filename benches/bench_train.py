"""GAN training throughput: aigc's loop next to the common tutorial way.

The tutorial way (PyTorch DCGAN tutorial, PyTorch-GAN) keeps images as PIL objects behind a
Dataset, and a DataLoader applies ToTensor + Normalize per item, then collates. aigc keeps the
uint8 dataset as one tensor on the device and slices batches. Both train the same default
DCGAN (hinge loss, spectral norm) with the same optimisers, on the MNIST digits in ../shared;
the tutorial loop scores real and fake images in separate discriminator passes, as the PyTorch
DCGAN tutorial does, where aigc's step batches them into one.

    python benches/bench_train.py [--steps 60] [--batch-size 64] [--width 32]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
MNIST = ROOT.parent / "shared/data/mnist/t10k-images-idx3-ubyte.gz"


def make_task(width: int, shape):
    from aigc_cli.models.gan.family import GanFamily

    model, train = GanFamily.make_config({"width": width}, {"shape": list(shape), "classes": None})
    return GanFamily.make_task({"model": model, "train": train, "seed": 0}, torch.device("cpu"))


def aigc_batches(images, batch):
    """aigc's input pipeline: a seeded permutation per epoch, batches sliced from one uint8 tensor."""
    from aigc_cli.core.trainer import epoch_permutation

    epoch = 0
    while True:
        order = epoch_permutation(len(images), 0, epoch)
        for i in range(0, len(order) - batch + 1, batch):
            yield images[order[i : i + batch]]
        epoch += 1


def tutorial_batches(images, batch, workers):
    loader = torch.utils.data.DataLoader(PILDataset(images), batch_size=batch, shuffle=True, num_workers=workers,
                                         drop_last=True, persistent_workers=workers > 0)
    while True:
        for x, _ in loader:
            yield x  # (B, 1, 28, 28) float in [-1, 1]


def rate(step_fn, batches, steps, batch, counter):
    start = time.perf_counter()
    for _ in range(steps):
        step_fn(next(batches), next(counter))
    return steps * batch / (time.perf_counter() - start)


class PILDataset(torch.utils.data.Dataset):
    def __init__(self, images):
        from torchvision import transforms

        self.items = [Image.fromarray(im[0].numpy(), mode="L") for im in images]
        self.transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))])

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.transform(self.items[i]), 0


def tutorial_step(task, real, step):
    """One step of the PyTorch DCGAN tutorial's loop, with aigc's modules, loss and optimisers:
    D on the real batch and on the fake batch in two passes, then G on the same fake batch."""
    G, D, loss = task.G, task.D, task.loss
    opt_g, opt_d = task.optimizers["G"], task.optimizers["D"]
    opt_d.zero_grad()
    real_scores = D(real)
    fake = G(torch.randn(real.size(0), task.spec.latent_dim))
    d_loss = loss.d_loss(real_scores, D(fake.detach()))
    d_loss.backward()
    opt_d.step()
    opt_g.zero_grad()
    loss.g_loss(D(fake)).backward()
    opt_g.step()
    task.ema.update(G, step)  # the same averaging work as aigc's step


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=30, help="steps per timed round")
    p.add_argument("--rounds", type=int, default=4, help="rounds of each, interleaved; the best is reported")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    from aigc_cli.data import load_dataset

    images = load_dataset(str(MNIST)).images
    ours = make_task(args.width, images.shape[1:])
    theirs = make_task(args.width, images.shape[1:])
    # The tutorial's modules are plain (channels-first) ones.
    theirs.G.to(memory_format=torch.contiguous_format)
    theirs.D.to(memory_format=torch.contiguous_format)
    ours_in, theirs_in = aigc_batches(images, args.batch_size), tutorial_batches(images, args.batch_size, args.workers)
    n_ours, n_theirs = iter(range(10**9)), iter(range(10**9))
    ours_fn = lambda x, i: ours.train_step(x, None, i)  # noqa: E731
    theirs_fn = lambda x, i: tutorial_step(theirs, x, i)  # noqa: E731
    rate(ours_fn, ours_in, 5, args.batch_size, n_ours)  # warm-up (and the DataLoader workers' start)
    rate(theirs_fn, theirs_in, 5, args.batch_size, n_theirs)
    a, b = [], []
    for _ in range(args.rounds):
        a.append(rate(ours_fn, ours_in, args.steps, args.batch_size, n_ours))
        b.append(rate(theirs_fn, theirs_in, args.steps, args.batch_size, n_theirs))
    print(f"threads {torch.get_num_threads()}, dcgan width {args.width}, batch {args.batch_size}, "
          f"{args.rounds} rounds of {args.steps} steps each, interleaved")
    print(f"aigc (tensor slicing, one D pass, channels-last): {max(a):8.1f} images/s  (rounds: {', '.join(f'{r:.0f}' for r in a)})")
    print(f"tutorial (DataLoader + PIL, tutorial loop):       {max(b):8.1f} images/s  (rounds: {', '.join(f'{r:.0f}' for r in b)}; {args.workers} workers)")
    print(f"speed-up (best of each):                          {max(a) / max(b):8.2f}x")


if __name__ == "__main__":
    main()
