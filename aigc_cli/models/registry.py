"""The family registry: each family knows how to build, train and sample its models.

A family is an object with:
- ``name``;
- ``build(config) -> dict[str, nn.Module]``: the inference modules stored in model.safetensors;
- ``sampler(modules, config) -> nn.Module``: maps (z (B, latent), labels (B,) or None) to images
  (B, C, H, W) in [0, 1]; the one contract that sample, interpolate, eval and export rely on;
- ``make_task(config, dataset, device) -> TrainTask``: the training side (see core/trainer.py).
"""

from __future__ import annotations

from aigc_cli.core.registry import Registry

FAMILIES: Registry = Registry("model family")


def register_family(name: str):
    return FAMILIES.register(name)


def get_family(name: str):
    _import_builtin()
    return FAMILIES.get(name)


def list_families() -> list[str]:
    _import_builtin()
    return FAMILIES.names()


def _import_builtin() -> None:
    # Imported on first use, so `aigc --help` never pays for torch.
    import aigc_cli.models.gan  # noqa: F401
    import aigc_cli.models.vae  # noqa: F401
