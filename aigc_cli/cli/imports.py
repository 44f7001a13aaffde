"""``aigc import SOURCE``: a pre-trained model in another library's format becomes a run."""

from __future__ import annotations

from typing import Optional

import typer

from aigc_cli.cli import common


def import_(
    source: str = typer.Argument(..., help="A local folder in a supported format, or a Hugging Face hub id "
                                 "(gpt2, google/ddpm-cifar10-32)."),
    name: Optional[str] = typer.Option(None, "--name", help="A name to refer to the run by."),
    fmt: Optional[str] = typer.Option(None, "--format", help="The format to read (default: detected): "
                                      "gpt2 or diffusers-unet.", show_default=False),
    revision: Optional[str] = typer.Option(None, "--revision", help="A hub revision: branch, tag or commit."),
    json_out: bool = typer.Option(False, "--json", help="Print the new run as JSON."),
) -> None:
    """Import a pre-trained model as a run: GPT-2 checkpoints (transformers' GPT2LMHeadModel) into the text family, diffusers UNet2DModel checkpoints with their scheduler into the diffusion family.

    Safetensors weights only. A hub id is fetched through huggingface_hub's cache (HF_HOME, HF_ENDPOINT; HF_HUB_OFFLINE=1 uses the cache alone). The run takes every command: sample, eval, export, and train --init to fine-tune it. See docs/pretrained.md.
    """
    from aigc_cli.hub.importer import import_model

    run = import_model(source, name, fmt=fmt, revision=revision, say=common.info)
    config = run.read_config()
    if json_out:
        common.print_json({"id": run.id, "name": name, "path": str(run.path), "family": config["family"],
                           "source": config.get("source")})
        return
    common.info(f"imported {source} as {run.id} ({config['family']}) in {run.path}")
    common.print_result(run.id)
