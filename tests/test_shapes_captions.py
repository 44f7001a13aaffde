import hashlib
import itertools

import pytest
import torch

from aigc_cli.data import load_dataset
from aigc_cli.data.shapes import render_shapes
from aigc_cli.data.shapes_captions import (FACTORS, HELD_OUT, all_combinations, caption, parse_caption,
                                           render_captioned)
from aigc_cli.metrics.shapes_check import agreement, check_factors

TRAIN = [c for c in all_combinations() if c not in HELD_OUT]
TEST = sorted(HELD_OUT)


def degrade(images, seed):
    """A mild 3x3 binomial blur and Gaussian noise of sigma 10/255, as a sampler's output might have."""
    kernel = torch.tensor([1.0, 2.0, 1.0])
    kernel = (kernel[:, None] * kernel[None]) / 16
    x = images.float().reshape(-1, 1, 32, 32)
    x = torch.nn.functional.conv2d(x, kernel[None, None], padding=1).view_as(images)
    noise = 10 * torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))
    return (x + noise).clamp(0, 255).round().to(torch.uint8)


def test_shapes_pixels_unchanged_by_the_shared_rasteriser():
    # sha256 of render_shapes' images, labels and factors, computed before rasterise() was split out
    images, labels, factors = render_shapes(512, 0)
    h = hashlib.sha256(images.numpy().tobytes())
    h.update(labels.numpy().tobytes())
    for name in sorted(factors):
        h.update(name.encode())
        h.update(factors[name].numpy().tobytes())
    assert hashlib.sha256(images.numpy().tobytes()).hexdigest() == (
        "8cb92f9b8f6ebfe1d8b910ce41fc6d61977edd9fa029224ea4e25625dcefa357")
    assert h.hexdigest() == "a549f4e62bd99bc05f51f5139d1cd6570e411f239b5bee4aa2e78563085c73d9"


def test_held_out_is_an_eighth_and_train_covers_every_value_and_pair():
    assert len(all_combinations()) == 144 and len(set(all_combinations())) == 144
    assert len(HELD_OUT) == 18 and HELD_OUT < set(all_combinations())
    names = list(FACTORS)
    for i, j in itertools.combinations(range(4), 2):
        pairs = {(c[i], c[j]) for c in TRAIN}
        assert pairs == set(itertools.product(FACTORS[names[i]], FACTORS[names[j]])), (names[i], names[j])
    for i, name in enumerate(names):  # every value in train, and the held-out cells not all alike
        assert {c[i] for c in TRAIN} == set(FACTORS[name])
        assert len({c[i] for c in HELD_OUT}) == len(FACTORS[name])


def test_captions_match_factors_and_splits_hold_their_combinations():
    for combos in (TRAIN, TEST):
        images, factors, captions = render_captioned(400, 3, combos)
        drawn = {tuple(FACTORS[f][int(factors[f][k])] for f in FACTORS) for k in range(400)}
        assert drawn <= set(combos) and len(drawn) > len(combos) // 2
        for k in range(0, 400, 7):
            assert captions[k] == caption(*(FACTORS[f][int(factors[f][k])] for f in FACTORS))


def test_seed_decides_content():
    a, b, c = (render_captioned(64, s, TRAIN) for s in (5, 5, 6))
    assert torch.equal(a[0], b[0]) and a[2] == b[2]
    assert not torch.equal(a[0], c[0])


def test_load_dataset_and_info():
    ds = load_dataset("shapes-captions", "test")
    assert tuple(ds.images.shape) == (4096, 3, 32, 32) and ds.classes == ["square", "circle", "triangle"]
    assert ds.spec == {"spec": "shapes-captions", "split": "test"} and len(ds.captions) == 4096
    assert torch.equal(ds.labels, ds.factors["shape"])
    assert all(tuple(parse_caption(c)[f] for f in FACTORS) in HELD_OUT for c in ds.captions[:500])
    info = ds.info()
    assert info["captions"] == 4096
    assert {"shape", "colour", "size", "position", "rotation"} <= set(info["factors"])


def test_parse_caption_round_trip_and_rejects():
    for combo in all_combinations():
        assert tuple(parse_caption(caption(*combo))[f] for f in FACTORS) == combo
    assert caption("circle", "red", "small", "top left") == "a small red circle in the top left"
    assert parse_caption("  A Small Red Circle in the top left ") is not None
    for text in ("", "a red circle in the top left", "a small red circle", "a small red circle in top left",
                 "a small purple circle in the top left", "a small red circle in the top left corner",
                 "a big red circle in the top left"):
        assert parse_caption(text) is None, text


@pytest.mark.parametrize("combos", [TRAIN, TEST], ids=["train", "test"])
def test_checker_on_clean_and_noisy_renders(combos):
    for seed in (7, 8):
        images, factors, captions = render_captioned(1500, seed, combos)
        for label, seen, floor in (("clean", images, 0.99), ("noisy", degrade(images, seed), 0.97)):
            found = check_factors(seen)
            for name in FACTORS:
                accuracy = (found[name] == factors[name]).double().mean().item()
                assert accuracy >= floor, (label, seed, name, accuracy)


def test_checker_says_nothing_drawn_and_agreement_counts():
    images, factors, captions = render_captioned(200, 9, TRAIN)
    images[:3] = 0
    found = check_factors(images)
    assert all((found[name][:3] == -1).all() for name in FACTORS)
    assert all((found[name][3:] >= 0).all() for name in FACTORS)

    score = agreement(images, captions[:-2] + ["a dog", ""])
    assert score["unparsed"] == 2 and score["n"] == 198
    assert 0.97 <= score["all"] <= 1 - 3 / 198 + 1e-9 and score["shape"] >= score["all"]
    swapped = agreement(images[3:], captions[4:] + captions[3:4])
    assert swapped["all"] < 0.5
