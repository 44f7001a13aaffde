"""Read the factors of ``shapes-captions`` images back from their pixels: analytic, not a model.

``check_factors`` judges each image's shape, colour, size and position from its brightest blob;
``agreement`` compares that with captions, to score what a text-to-image model drew
(docs/text-to-image.md, "The built-in captioned shapes", has the method and its accuracy).

Every measure is a moment of the blob's brightness, so that a blur (which moves no mass and, being
symmetric, adds nothing to the third and fourth circular moments) or mild noise barely moves it:
- shape: a triangle has 3-fold symmetry, so its third circular moment |sum w (z - c)^3| is large
  and its fourth is ~0; a square, 4-fold, the other way round; a circle has neither.
- size: the blob's mass over the area a shape of scale 1 covers gives its scale, whatever the shape.
- colour: the hue of the blob's mean colour, to the nearest of the six named hues.
- position: the quadrant of the blob's centre of mass.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import ndimage

from aigc_cli.data.shapes_captions import COLOURS, FACTORS, SCALES, parse_caption

BRIGHT = 96  # max channel (0-255) of a drawn pixel: shapes are drawn at full value on black
# Thresholds on the scale-free circular moments M3 and M4 (_judge_shape), measured on 6,000 renders
# of all combinations: triangles 0.035-0.10 in M3, squares and circles below 0.02; squares 0.006-0.03
# in M4 (median 1/60, a continuous square's), circles below 0.011, mostly below 0.004 (small ones,
# jagged at 8 px across, are the overlap).
TRIANGLE_M3 = 0.026
SQUARE_M4 = 0.008
# Area of each shape at scale 1, in units of the image area (data/shapes.py's rasteriser):
# a square of half-side 0.8, a circle of radius 1, an equilateral triangle of circumradius 1.
UNIT_AREA = (2.56, math.pi, 3 * math.sqrt(3) / 4)
SMALL_BELOW = math.sqrt(SCALES["small"][1] * SCALES["large"][0])  # halfway, in ratio, between the ranges


def check_factors(images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Factor name -> (N,) int64 value index (into data.shapes_captions.FACTORS), -1 for an image
    with nothing bright in it; ``images`` (N, 3, H, W) uint8, as shapes-captions renders them."""
    images = images.cpu()  # a sampler's output may still be on its device
    weight = _blob_weights(images)  # (N, H, W) brightness of the largest bright blob, else 0
    mass = weight.sum((1, 2))
    empty = mass == 0
    n, h, w = weight.shape
    ys = (torch.arange(h, dtype=torch.float64) + 0.5)[None, :, None]
    xs = (torch.arange(w, dtype=torch.float64) + 0.5)[None, None, :]
    safe = mass.clamp_min(1e-9)
    cy = (weight * ys).sum((1, 2)) / safe
    cx = (weight * xs).sum((1, 2)) / safe

    shape = _judge_shape(weight, mass, cx, cy)
    found = {
        "shape": shape,
        "colour": _judge_colour(images, weight, safe),
        "size": _judge_size(shape, mass / (h * w)),
        "position": (cx >= w / 2).long() + 2 * (cy >= h / 2).long(),
    }
    return {name: torch.where(empty, -1, value) for name, value in found.items()}


def _blob_weights(images: torch.Tensor) -> torch.Tensor:
    # The largest 8-connected bright blob (a speck of noise elsewhere is not the shape), grown by one
    # pixel so that a blurred edge keeps its mass; weights are the max channel in [0, 1] over it.
    value = images.max(1).values.numpy()  # (N, H, W) uint8
    bright = value >= BRIGHT
    within_image = np.zeros((3, 3, 3), bool)
    within_image[1] = True  # connect pixels of one image, never across images
    labels, count = ndimage.label(bright, structure=within_image)
    if count == 0:
        return torch.zeros(value.shape, dtype=torch.float64)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    sizes[0] = 0
    image_of = np.zeros(count + 1, np.int64)
    image_of[labels.ravel()] = np.repeat(np.arange(len(value)), value[0].size)
    largest = np.zeros(len(value), np.int64)  # label of each image's largest blob (0: none)
    order = np.lexsort((sizes[1:], image_of[1:])) + 1  # by image, then by size
    last = np.append(image_of[order][1:] != image_of[order][:-1], True)  # each image's largest
    largest[image_of[order[last]]] = order[last]
    blob = labels == largest[:, None, None]
    blob &= largest[:, None, None] > 0
    grown = ndimage.binary_dilation(blob, structure=within_image)
    return torch.from_numpy(np.where(grown, value / 255.0, 0.0))


def _judge_shape(weight: torch.Tensor, mass: torch.Tensor, cx: torch.Tensor, cy: torch.Tensor) -> torch.Tensor:
    # Circular moments sum w (z - c)^k, made scale-free by mass^(1 + k/2): rotation only turns their phase.
    h, w = weight.shape[1:]
    zy = torch.arange(h, dtype=torch.float64)[None, :, None] + 0.5 - cy[:, None, None]
    zx = torch.arange(w, dtype=torch.float64)[None, None, :] + 0.5 - cx[:, None, None]
    z = torch.complex(zx.expand_as(weight), zy.expand_as(weight))
    safe = mass.clamp_min(1e-9)
    m3 = (weight * z**3).sum((1, 2)).abs() / safe**2.5
    m4 = (weight * z**4).sum((1, 2)).abs() / safe**3
    square, circle, triangle = (FACTORS["shape"].index(s) for s in ("square", "circle", "triangle"))
    shape = torch.where(m4 > SQUARE_M4, square, circle)
    return torch.where(m3 > TRIANGLE_M3, triangle, shape)


def _judge_colour(images: torch.Tensor, weight: torch.Tensor, mass: torch.Tensor) -> torch.Tensor:
    # The hue of the blob's mean colour, weighted like every other measure; named hues are k/6.
    rgb = (images.double() * weight[:, None]).sum((2, 3)) / mass[:, None]  # (N, 3)
    hue = _hue(rgb)
    return (hue * len(COLOURS)).round().long() % len(COLOURS)


def _hue(rgb: torch.Tensor) -> torch.Tensor:
    # HSV hue in [0, 1) of (N, 3) colours: red 0, yellow 1/6, ... magenta 5/6.
    r, g, b = rgb.unbind(1)
    high, low = rgb.max(1).values, rgb.min(1).values
    spread = (high - low).clamp_min(1e-9)
    sector = torch.where(high == r, (g - b) / spread,
                         torch.where(high == g, 2 + (b - r) / spread, 4 + (r - g) / spread))
    return (sector / 6) % 1.0


def _judge_size(shape: torch.Tensor, area: torch.Tensor) -> torch.Tensor:
    # The scale a shape of the judged kind covering ``area`` (share of the image) would have.
    unit = torch.tensor(UNIT_AREA, dtype=torch.float64)[shape.clamp_min(0)]
    scale = (area / unit).sqrt()
    return (scale >= SMALL_BELOW).long()


def agreement(images: torch.Tensor, captions: list[str]) -> dict:
    """How well ``images`` show their ``captions``: per factor, the share of images whose judged
    value is the caption's; ``all``: the share with all four right; ``unparsed``: captions not of
    the template (counted, left out of the shares); ``n``: images scored."""
    if len(images) != len(captions):
        raise ValueError(f"{len(images)} images but {len(captions)} captions")
    parsed = [parse_caption(c) for c in captions]
    keep = [i for i, p in enumerate(parsed) if p is not None]
    out = {"n": len(keep), "unparsed": len(captions) - len(keep)}
    if not keep:
        return {**out, **{name: None for name in FACTORS}, "all": None}
    found = check_factors(images[keep])
    right = torch.ones(len(keep), dtype=torch.bool)
    for name, names in FACTORS.items():
        wanted = torch.tensor([names.index(parsed[i][name]) for i in keep])
        hit = found[name] == wanted
        out[name] = hit.double().mean().item()
        right &= hit
    out["all"] = right.double().mean().item()
    return out
