"""GAN training throughput: aigc's loop next to the common tutorial way.

The tutorial way (PyTorch DCGAN tutorial, PyTorch-GAN) keeps images as PIL objects behind a
Dataset, and a DataLoader applies ToTensor + Normalize per item, then collates. aigc keeps the
uint8 dataset as one tensor on the device and slices batches. Both train the same default
DCGAN (hinge loss, spectral norm) with the same optimisers, on the MNIST digits in ../shared.
The tutorial loop alternates, as the PyTorch DCGAN tutorial does: the discriminator scores the
real and the fake batch and steps, then scores the fakes again for the generator's update.
aigc's default step (--updates simultaneous) scores each batch once and takes both updates from
those scores; aigc's alternating step (real and fake in one batched pass, then the fakes again)
is timed too, to show what each part gives.

aigc also raises glibc's malloc thresholds so that freed activations are reused instead of
page-faulted in again every step (aigc_cli/core/memory.py); each configuration runs in its own
process, and the tutorial is timed both with glibc's defaults and with aigc's setting.

    python benches/bench_train.py [--unconditional] [--steps 60] [--rounds 6] [--batch-size 64] [--width 32]
"""

from __future__ import annotations

import argparse
import mmap
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
MNIST = ROOT.parent / "shared/data/mnist/t10k-images-idx3-ubyte.gz"


def make_task(width: int, shape, classes: int | None, updates: str | None = None):
    from aigc_cli.models.registry import get_family

    gan = get_family("gan")
    options = {"width": width, "updates": updates}  # None: the default
    model, train = gan.make_config(options, {"shape": list(shape), "classes": classes})
    return gan.training_task({"model": model, "train": train, "seed": 0}, torch.device("cpu"))


def aigc_batches(images, labels, batch):
    """aigc's input pipeline: a seeded permutation per epoch, batches sliced from one uint8 tensor."""
    from aigc_cli.training.loop import epoch_permutation

    epoch = 0
    while True:
        order = epoch_permutation(len(images), 0, epoch)
        for i in range(0, len(order) - batch + 1, batch):
            idx = order[i : i + batch]
            yield images[idx], (labels[idx] if labels is not None else None)
        epoch += 1


def tutorial_batches(images, labels, batch, workers):
    loader = torch.utils.data.DataLoader(PILDataset(images, labels), batch_size=batch, shuffle=True,
                                         num_workers=workers, drop_last=True, persistent_workers=workers > 0)
    while True:
        for x, y in loader:
            yield x, (y if labels is not None else None)  # (B, 1, 28, 28) float in [-1, 1], (B,)


def rate(step_fn, batches, steps, batch, counter):
    start = time.perf_counter()
    for _ in range(steps):
        step_fn(*next(batches), next(counter))
    return steps * batch / (time.perf_counter() - start)


class PILDataset(torch.utils.data.Dataset):
    def __init__(self, images, labels):
        from torchvision import transforms

        self.items = [Image.fromarray(im[0].numpy(), mode="L") for im in images]
        self.labels = labels.tolist() if labels is not None else [0] * len(images)
        self.transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))])

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.transform(self.items[i]), self.labels[i]


def tutorial_step(task, real, labels, step):
    """One step of the PyTorch DCGAN tutorial's loop, with aigc's modules, loss and optimisers:
    D on the real batch and on the fake batch in two passes, then G on the same fake batch
    (conditional: the fake batch drawn with the real batch's labels, as aigc's step does)."""
    G, D, loss = task.G, task.D, task.loss
    opt_g, opt_d = task.optim["G"].optimizer, task.optim["D"].optimizer
    opt_d.zero_grad()
    real_scores = D(real, labels)
    fake = G(torch.randn(real.size(0), task.spec.latent_dim), labels)
    d_loss = loss.d_loss(real_scores, D(fake.detach(), labels))
    d_loss.backward()
    opt_d.step()
    opt_g.zero_grad()
    loss.g_loss(D(fake, labels)).backward()
    opt_g.step()
    task.optim["G"].emas[0].update(step)  # the same averaging work as aigc's step


CONFIGS = {  # label -> (loop, allocator, aigc's --updates; "default": the default's)
    "aigc (defaults: tensor slicing, channels-last, malloc tuned)": ("aigc", "tuned", "default"),
    "aigc, glibc malloc defaults": ("aigc", "default", "default"),
    "aigc, --updates alternating (the tutorial's order)": ("aigc", "tuned", "alternating"),
    "tutorial (DataLoader + PIL, tutorial loop)": ("tutorial", "default", "default"),
    "tutorial, malloc tuned as aigc does": ("tutorial", "tuned", "default"),
}


def page_fault_us() -> float:
    """What one minor page fault costs here now (touching fresh anonymous memory), in µs: the
    price of glibc's default of unmapping freed activations varies with it."""
    n, best = 64 << 20, float("inf")
    for _ in range(3):
        m = mmap.mmap(-1, n)
        start = time.perf_counter()
        for off in range(0, n, 4096):
            m[off] = 1
        best = min(best, time.perf_counter() - start)
        m.close()
    return best / (n // 4096) * 1e6


def one_round(args) -> float:
    """Runs in its own process: glibc's malloc settings cannot be undone within one."""
    from aigc_cli.data import load_dataset

    if args.allocator == "tuned":
        from aigc_cli.core.memory import tune_cpu_allocator

        tune_cpu_allocator()
    data = load_dataset(str(MNIST))  # the labels file lies beside: 10 classes
    images, labels = data.images, (None if args.unconditional else data.labels)
    updates = None if args.updates == "default" else args.updates
    task = make_task(args.width, images.shape[1:], None if labels is None else 10, updates)
    counter = iter(range(10**9))
    if args.loop == "aigc":
        batches = aigc_batches(images, labels, args.batch_size)
        fn = task.train_step
    else:
        # The tutorial's modules are plain (channels-first) ones.
        task.G.to(memory_format=torch.contiguous_format)
        task.D.to(memory_format=torch.contiguous_format)
        batches = tutorial_batches(images, labels, args.batch_size, args.workers)
        fn = lambda x, y, i: tutorial_step(task, x, y, i)  # noqa: E731
    rate(fn, batches, 5, args.batch_size, counter)  # warm-up (and the DataLoader workers' start)
    return rate(fn, batches, args.steps, args.batch_size, counter)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=60, help="steps per timed round")
    p.add_argument("--rounds", type=int, default=6, help="rounds of each, interleaved")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--unconditional", action="store_true", help="the unconditional network (default: the "
                   "class-conditional one that `aigc train gan` trains on the labelled digits)")
    p.add_argument("--loop", choices=["aigc", "tutorial"], help=argparse.SUPPRESS)  # one round, in a child
    p.add_argument("--allocator", choices=["tuned", "default"], help=argparse.SUPPRESS)
    p.add_argument("--updates", choices=["default", "alternating"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.loop:
        print(one_round(args))
        return
    from aigc_cli.models.registry import get_family

    get_family("gan").spec.defaults()  # fail here, not after the rounds, if the bench is out of date
    common = [sys.executable, __file__, "--steps", str(args.steps), "--batch-size", str(args.batch_size),
              "--width", str(args.width), "--workers", str(args.workers)] + ["--unconditional"] * args.unconditional
    rates: dict[str, list[float]] = {label: [] for label in CONFIGS}
    for _ in range(args.rounds):
        for label, (loop, allocator, updates) in CONFIGS.items():
            child = common + ["--loop", loop, "--allocator", allocator, "--updates", updates]
            out = subprocess.run(child, check=True,
                                 capture_output=True, text=True).stdout
            rates[label].append(float(out.split()[-1]))
    from aigc_cli.models.registry import get_family

    defaults = get_family("gan").spec.defaults()
    kind = "unconditional" if args.unconditional else "class-conditional"
    print(f"threads {torch.get_num_threads()}, {kind} dcgan width {args.width}, batch {args.batch_size}, "
          f"aigc's default updates {defaults['updates']}, "
          f"{args.rounds} rounds of {args.steps} steps each, interleaved, one process per round; "
          f"a page fault costs {page_fault_us():.1f} µs here now")
    for label, r in rates.items():
        print(f"{label + ':':66s}{statistics.median(r):7.1f} images/s median  (rounds: {', '.join(f'{x:.0f}' for x in r)})")
    # Each round runs the five one after another, so a ratio within a round sees the same
    # machine; this shared VM's speed drifts between rounds.
    a, a0, alt, t, t1 = (rates[label] for label in CONFIGS)
    ratio = lambda x, y: statistics.median(u / v for u, v in zip(x, y))  # noqa: E731
    print(f"{'speed-up over the tutorial (median of per-round ratios):':66s}{ratio(a, t):7.2f}x")
    print(f"{'  both with malloc tuned:':66s}{ratio(a, t1):7.2f}x")
    print(f"{'  aigc with alternating updates, as the tutorial orders them:':66s}{ratio(alt, t):7.2f}x")
    print(f"{'  what the malloc setting alone gives aigc:':66s}{ratio(a, a0):7.2f}x")
    print(f"{'  what simultaneous updates alone give aigc:':66s}{ratio(a, alt):7.2f}x")


if __name__ == "__main__":
    main()
