"""Where a captioned run's frozen text encoder comes from: an aigc GPT text run, or a CLIP text
model in the Hugging Face format (a folder or hub id). Registered with models/captions, which
asks for a --text-encoder value's config section; ``source_weights`` gives the weights a new run
starts its ``text`` module from. After that the run keeps them in its own model.safetensors:
its sources may change or go without changing the run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from aigc_cli.core.errors import ConfigError, RunError, opt
from aigc_cli.models.captions import register_source


def _is_clip_source(value: str) -> bool:
    """A folder, or a hub id (``owner/name``) that names no folder here."""
    path = Path(value).expanduser()
    return path.is_dir() or (value.count("/") == 1 and not path.exists() and not value.startswith((".", "/", "~")))


def run_section(value: str) -> dict[str, Any] | None:
    """The section of an aigc GPT text run named ``value`` (None when no run has that name)."""
    from aigc_cli.models.registry import load_config
    from aigc_cli.models.text.family import start_tokens
    from aigc_cli.models.text.tokenizer import make_tokenizer
    from aigc_cli.runs.store import resolve_run

    try:
        run = resolve_run(value)
    except RunError:
        return None
    config = load_config(run)
    model = config["model"]
    if config["family"] != "text" or model.get("arch") != "gpt":
        kind = config["family"] if config["family"] != "text" else f"{model.get('arch')} text"
        raise ConfigError(f"{opt('text_encoder')} {value}: {run.id} is a {kind} run; give a GPT text run, "
                          "'learned' or a CLIP folder")
    if not run.weights_path.exists():
        raise ConfigError(f"{opt('text_encoder')} {value}: {run.id} has no weights yet; train it first")
    return {"encoder": "run", "source": run.id, "length": model["context"], "dim": model["width"],
            "gpt": model, "start": start_tokens(make_tokenizer(model))}


def clip_section(value: str) -> dict[str, Any]:
    from aigc_cli.hub.clip import read_clip

    files = read_clip(value)
    fields = files.text
    return {"encoder": "clip", "source": value, "length": fields["max_position_embeddings"],
            "dim": fields["hidden_size"], "clip": {**fields, "tokenizer": files.tokenizer}}


def resolve_source(value: str) -> dict[str, Any] | None:
    section = run_section(value) if not Path(value).expanduser().is_dir() else None
    if section is not None:
        return section
    if _is_clip_source(value):
        return clip_section(value)
    return None


register_source(resolve_source)


def source_weights(text: dict[str, Any]) -> dict[str, torch.Tensor] | None:
    """The state dict a new run's ``text`` module starts from: its source's weights (frozen
    encoders), or None (the learned encoder starts at random)."""
    if text["encoder"] == "run":
        from aigc_cli.generation import load_modules
        from aigc_cli.runs.store import resolve_run

        model = load_modules(resolve_run(text["source"]), ["model"])["model"]
        return {f"gpt.{k}": v for k, v in model.state_dict().items()}
    if text["encoder"] == "clip":
        from aigc_cli.hub.clip import read_clip

        return {f"clip.{k}": v for k, v in read_clip(text["source"]).text_weights.items()}
    return None
