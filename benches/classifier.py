"""A small digit classifier, trained on 8,000 of the 10,000 MNIST test digits in ../shared,
used to judge generated digits: how confidently it recognises them, and how evenly they
spread over the ten classes. The other 2,000 digits are the real-data reference.

    python benches/classifier.py            # trains (about a minute on 2 cores), reports held-out accuracy

Weights are cached as safetensors in $AIGC_HOME/cache/bench-classifier.safetensors.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import torch
from torch import nn
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
MNIST = ROOT.parent / "shared/data/mnist/t10k-images-idx3-ubyte.gz"
HELD_OUT = 2000


def load_mnist():
    from aigc_cli.data import load_dataset

    if not MNIST.exists():
        sys.exit(f"no MNIST files at {MNIST}")
    ds = load_dataset(str(MNIST))
    return ds.images, ds.labels  # (10000, 1, 28, 28) uint8, (10000,)


class DigitNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (B, 32, 14, 14)
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (B, 64, 7, 7)
            nn.Flatten(), nn.Dropout(0.3), nn.Linear(64 * 49, 128), nn.ReLU(), nn.Linear(128, 10),
        )

    def forward(self, x):  # x: (B, 1, 28, 28) uint8
        return self.net(x.float() / 255)


def _cache() -> Path:
    from aigc_cli.core.paths import cache_dir

    return cache_dir() / "bench-classifier.safetensors"


def get_classifier(verbose: bool = True) -> DigitNet:
    from safetensors.torch import load_file, save_file

    model = DigitNet()
    path = _cache()
    if path.exists():
        model.load_state_dict(load_file(str(path)))
        return model.eval()
    images, labels = load_mnist()
    x, y = images[HELD_OUT:], labels[HELD_OUT:]
    torch.manual_seed(0)
    # Light augmentation (random shifts) so the classifier does not only know these 8,000 digits.
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    for epoch in range(6):
        perm = torch.randperm(len(x))
        model.train()
        for i in range(0, len(x), 128):
            idx = perm[i : i + 128]
            xb = torch.roll(x[idx], shifts=(int(torch.randint(-2, 3, ())), int(torch.randint(-2, 3, ()))), dims=(2, 3))
            loss = F.cross_entropy(model(xb), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        if verbose:
            print(f"epoch {epoch + 1}: held-out accuracy {accuracy(model.eval(), images[:HELD_OUT], labels[:HELD_OUT]):.4f}")
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(model.state_dict(), str(path))
    return model.eval()


@torch.no_grad()
def accuracy(model, images, labels) -> float:
    return float((model(images).argmax(1) == labels).float().mean())


@torch.no_grad()
def judge(model, images: torch.Tensor, asked: torch.Tensor | None = None) -> dict:
    """images: (N, 1, 28, 28) uint8. Mean top-class probability, share of confident (p > 0.9)
    images, the class histogram and its normalised entropy (1.0 = all classes equally often),
    and a blur measure: the share of the ink pixels (value > 31) that are mid-grey (32..223);
    real digits are near-binary strokes with grey only on their edges, blurry samples are not.
    With ``asked`` (N,), the classes the images were drawn for: the share classified as asked."""
    probs = torch.cat([F.softmax(model(images[i : i + 500]), 1) for i in range(0, len(images), 500)])
    top, cls = probs.max(1)
    hist = torch.bincount(cls, minlength=10)
    p = hist.float() / hist.sum()
    entropy = float(-(p[p > 0] * p[p > 0].log()).sum() / math.log(10))
    report = {} if asked is None else {"asked_share": round(float((cls == asked).float().mean()), 4)}
    return report | {
        "mean_confidence": round(float(top.mean()), 4),
        "confident_share": round(float((top > 0.9).float().mean()), 4),
        "class_histogram": hist.tolist(),
        "class_entropy": round(entropy, 4),
        "grey_share": round(float(((images > 31) & (images < 224)).sum() / (images > 31).sum()), 4),
        "class_diversity": round(class_diversity(images, cls), 3),
    }


def class_diversity(images: torch.Tensor, cls: torch.Tensor) -> float:
    """Mean distance between two images of the same (predicted) class, pixels in [0, 1]: the
    classifier cannot see a model that draws one prototype per class, this can (real digits
    about 8.7; a model that draws one prototype per class far less)."""
    x = images.flatten(1).float() / 255
    per_class = []
    for k in cls.unique():
        xk = x[cls == k]
        if len(xk) >= 2:
            d = torch.cdist(xk, xk)
            per_class.append(float(d.sum() / (len(xk) * (len(xk) - 1))))
    return sum(per_class) / max(1, len(per_class))


def real_reference(model) -> dict:
    images, labels = load_mnist()
    return judge(model, images[:HELD_OUT], labels[:HELD_OUT])


if __name__ == "__main__":
    os.environ.setdefault("AIGC_HOME", str(Path.home() / ".cache/aigc-bench"))
    m = get_classifier()
    images, labels = load_mnist()
    print("held-out accuracy", accuracy(m, images[:HELD_OUT], labels[:HELD_OUT]))
    print("real held-out digits:", real_reference(m))
