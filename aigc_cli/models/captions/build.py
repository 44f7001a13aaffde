"""The text encoder a captioned run's ``model["text"]`` section describes, of any kind."""

from __future__ import annotations

from typing import Any

import torch

from aigc_cli.models.captions.clip import ClipEncoder
from aigc_cli.models.captions.encoders import GptEncoder, LearnedEncoder, TextEncoder


def build_encoder(text: dict[str, Any]) -> TextEncoder:
    """The encoder a run's ``model["text"]`` section describes (random or empty weights: the
    run's own model.safetensors fills them)."""
    kind = text["encoder"]
    if kind == "learned":
        f = text["learned"]
        return LearnedEncoder(f["width"], f["layers"], f["heads"], text["length"])
    if kind == "run":
        return GptEncoder(text["gpt"], text["start"], text["length"])
    if kind == "clip":
        return ClipEncoder(text["clip"], text["length"])
    raise ValueError(f"unknown text encoder {kind!r}")


def tokenizer_only(text: dict[str, Any]) -> TextEncoder:
    """The same encoder with its weights on the meta device, neither allocated nor initialised:
    for ``tokenize`` and ``tokens_needed`` alone (a run's start tokenizes its captions before the
    task builds the real one; a CLIP-L's random init costs seconds)."""
    with torch.device("meta"):
        return build_encoder(text)
