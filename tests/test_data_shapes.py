import torch

from aigc_cli.data import load_dataset
from aigc_cli.data.base import ImageDataset
from aigc_cli.data.shapes import render_shapes


def fp(images, labels):
    return ImageDataset(images, labels, "x", {}).fingerprint


def test_shapes_train_split():
    ds = load_dataset("shapes")
    assert tuple(ds.images.shape) == (16384, 3, 32, 32) and ds.images.dtype == torch.uint8
    assert ds.classes == ["square", "circle", "triangle"] and ds.spec == {"spec": "shapes", "split": "train"}
    assert ds.labels.bincount().min() > 5000  # all three shapes, roughly balanced


def test_shapes_seed_decides_content():
    a, b, c = render_shapes(256, 5), render_shapes(256, 5), render_shapes(256, 6)
    assert fp(*a[:2]) == fp(*b[:2]) != fp(*c[:2])
