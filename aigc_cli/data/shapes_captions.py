"""The built-in captioned dataset: the ``shapes`` renders with discrete, named factors and a caption.

Each 32x32 RGB image holds one shape (square, circle, triangle) of one of six hues, small or
large, in one quadrant, turned at random, on black; its caption names the four factors: "a small
red circle in the top left". The 144 combinations are split compositionally: ``test`` draws only
the 18 in HELD_OUT, ``train`` only the others, and every factor value and every pair of values of
two factors still appears in train, so a text-to-image model is asked for new combinations of
words it has seen (docs/text-to-image.md). ``metrics/shapes_check.py`` reads the factors back from
pixels, to score what such a model draws.
"""

from __future__ import annotations

import itertools
import math
import re

import torch

from aigc_cli.core.errors import DatasetError
from aigc_cli.data.base import ImageDataset, register_dataset
from aigc_cli.data.shapes import SHAPES, SIZE, rasterise

COLOURS = ("red", "yellow", "green", "cyan", "blue", "magenta")  # hues 0, 1/6, ... 5/6
SIZES = ("small", "large")
POSITIONS = ("top left", "top right", "bottom left", "bottom right")
FACTORS = {"shape": SHAPES, "colour": COLOURS, "size": SIZES, "position": POSITIONS}

# Half-size ranges (units of the image width, as shapes.py's ``scale``). Small: a circle 7-8 px
# across, the smallest at which square, circle and triangle still tell apart at 32 px; large: about
# twice that, so the area alone separates them whatever the shape.
SCALES = {"small": (0.13, 0.15), "large": (0.21, 0.25)}
HUE_JITTER = 0.02  # +-7 degrees around each named hue, a quarter of the way to the next
MIDLINE_GAP = 2 / SIZE  # the centre stays 2 px off the middle lines: its quadrant is never in doubt
REACH = 0.8 * math.sqrt(2)  # the farthest any shape reaches from its centre, in units of scale (the square's corner)

COUNTS = {"train": 16384, "test": 4096}
SEEDS = {"train": 0, "test": 1}
TEMPLATE = "a {size} {colour} {shape} in the {position}"


def all_combinations() -> list[tuple[str, str, str, str]]:
    """The 144 (shape, colour, size, position) name tuples, in factor order."""
    return list(itertools.product(SHAPES, COLOURS, SIZES, POSITIONS))


def _held_out() -> frozenset[tuple[str, str, str, str]]:
    # One of the eight (size, position) cells per (shape, colour) pair: cell 4*size + position ==
    # (shape + 3*colour) mod 8. Exactly 1/8 held out, every shape-colour pair kept 7 times in train,
    # and the held-out cells spread over all sizes and quadrants (tests/test_shapes_captions.py).
    held = set()
    for s, c in itertools.product(range(len(SHAPES)), range(len(COLOURS))):
        z, p = divmod((s + 3 * c) % 8, len(POSITIONS))
        held.add((SHAPES[s], COLOURS[c], SIZES[z], POSITIONS[p]))
    return frozenset(held)


HELD_OUT = _held_out()


def caption(shape: str, colour: str, size: str, position: str) -> str:
    """"a small red circle in the top left"."""
    return TEMPLATE.format(shape=shape, colour=colour, size=size, position=position)


_PATTERN = re.compile(
    r"a (?P<size>{}) (?P<colour>{}) (?P<shape>{}) in the (?P<position>{})".format(
        *("|".join(FACTORS[f]) for f in ("size", "colour", "shape", "position"))))


def parse_caption(text: str) -> dict[str, str] | None:
    """{"shape": "circle", "colour": "red", "size": "small", "position": "top left"} for a caption
    of the template (surrounding blanks and case ignored), or None for any other text."""
    found = _PATTERN.fullmatch(text.strip().lower())
    return found.groupdict() if found else None


def render_captioned(n: int, seed: int, combinations: list[tuple[str, str, str, str]]):
    """(images (n, 3, 32, 32) uint8, factors, captions) for ``n`` images drawn uniformly from
    ``combinations`` (name tuples), all decided by ``seed``."""
    g = torch.Generator().manual_seed(seed)
    index = torch.tensor([[FACTORS[f].index(v) for f, v in zip(FACTORS, combo)] for combo in combinations])
    drawn = index[torch.randint(0, len(combinations), (n,), generator=g)]
    shape, colour, size, position = drawn.unbind(1)

    low, high = (torch.tensor([SCALES[s][i] for s in SIZES]) for i in (0, 1))
    scale = low[size] + (high[size] - low[size]) * torch.rand(n, generator=g)
    cx = _in_quadrant(position % 2, scale, torch.rand(n, generator=g))
    cy = _in_quadrant(position // 2, scale, torch.rand(n, generator=g))
    angle = 2 * math.pi * torch.rand(n, generator=g)
    hue = (colour / len(COLOURS) + HUE_JITTER * (2 * torch.rand(n, generator=g) - 1)) % 1.0

    images = rasterise(shape, scale, cx, cy, angle, hue)
    factors = {"shape": shape, "colour": colour, "size": size, "position": position,
               "scale": scale, "x": cx, "y": cy, "rotation": angle, "hue": hue}
    captions = [caption(*(FACTORS[f][i] for f, i in zip(FACTORS, row))) for row in drawn.tolist()]
    return images, factors, captions


def _in_quadrant(side: torch.Tensor, scale: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    # A centre coordinate in the near half (side 0) or far half (side 1): from where the shape's
    # farthest reach touches the border to MIDLINE_GAP short of the middle line, at ``t`` in [0, 1).
    near = REACH * scale + 0.5 / SIZE
    offset = near + (0.5 - MIDLINE_GAP - near) * t
    return torch.where(side == 0, offset, 1.0 - offset)


@register_dataset("shapes-captions", "built-in 32x32 RGB shapes with captions naming shape, colour, size "
                  "and position; test holds out 18 of the 144 combinations; no download")
def load_shapes_captions(split: str) -> ImageDataset:
    if split not in COUNTS:
        raise DatasetError(f"unknown split {split!r} for shapes-captions; use train or test")
    wanted = [c for c in all_combinations() if (c in HELD_OUT) == (split == "test")]
    images, factors, captions = render_captioned(COUNTS[split], SEEDS[split], wanted)
    return ImageDataset(
        images=images,
        labels=factors["shape"].to(torch.int64),
        name=f"shapes-captions ({split})",
        spec={"spec": "shapes-captions", "split": split},
        classes=list(SHAPES),
        factors=factors,
        captions=captions,
    )
