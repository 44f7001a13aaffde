"""GAN training throughput: aigc's loop next to the common tutorial way.

The tutorial way (PyTorch DCGAN tutorial, PyTorch-GAN) keeps images as PIL objects behind a
Dataset, and a DataLoader applies ToTensor + Normalize per item, then collates. aigc keeps the
uint8 dataset as one tensor on the device and slices batches. Both train the same default
DCGAN (hinge loss, spectral norm) with the same optimisers, on the MNIST digits in ../shared.

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


def bench_aigc(images, steps, batch, width):
    from aigc_cli.core.trainer import epoch_permutation

    task = make_task(width, images.shape[1:])
    order = epoch_permutation(len(images), 0, 0)
    start = None
    for step in range(steps + 5):
        if step == 5:
            start = time.perf_counter()  # skip warm-up steps
        idx = order[step * batch : (step + 1) * batch]
        task.train_step(images[idx], None, step)
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


def bench_tutorial(images, steps, batch, width, workers):
    task = make_task(width, images.shape[1:])
    loader = torch.utils.data.DataLoader(PILDataset(images), batch_size=batch, shuffle=True, num_workers=workers,
                                         drop_last=True)
    it = iter(loader)
    start = None
    for step in range(steps + 5):
        if step == 5:
            start = time.perf_counter()
        x, _ = next(it)  # (B, 1, 28, 28) in [-1, 1]
        # The task takes uint8; hand it the same pixels so the model work is identical.
        task.train_step(((x + 1) * 127.5).round().to(torch.uint8), None, step)
    return steps * batch / (time.perf_counter() - start)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    from aigc_cli.data import load_dataset

    images = load_dataset(str(MNIST)).images
    ours = bench_aigc(images, args.steps, args.batch_size, args.width)
    tut = bench_tutorial(images, args.steps, args.batch_size, args.width, args.workers)
    print(f"threads {torch.get_num_threads()}, dcgan width {args.width}, batch {args.batch_size}, {args.steps} steps")
    print(f"aigc (tensor slicing):         {ours:8.1f} images/s")
    print(f"tutorial (DataLoader + PIL):   {tut:8.1f} images/s  ({args.workers} workers)")
    print(f"speed-up:                      {ours / tut:8.2f}x")


if __name__ == "__main__":
    main()
