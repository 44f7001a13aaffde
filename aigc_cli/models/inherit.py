"""Starting a run from another run's weights (``aigc train <family> --init RUN``).

The new run takes its parent's architecture (config.json's 'model' section) with what its own
data decides in its place (the family's ``init_free`` fields: its classes, its dropout), its own
training options, and a fresh optimizer and schedule. Its training modules start from the
parent's inference modules (model.safetensors): an EMA module's base takes its weights, and the
loop's average is copied from it. Modules that model.safetensors does not hold (a GAN's
discriminator) start from random weights, and the run says so.
"""

from __future__ import annotations

from typing import Any

import torch

from aigc_cli.core.errors import ConfigError, WeightsError
from aigc_cli.core.options import Option


def inherit_model(impl, options: tuple[Option, ...], given: dict[str, Any], parent: dict[str, Any],
                  fresh: dict[str, Any], parent_id: str) -> tuple[dict[str, Any], list[str]]:
    """(the 'model' section of a run started from ``parent``'s, what to tell the user). ``fresh``:
    the section the family made for the new data and options; an architecture option ``given``
    that contradicts the parent is a one-line error naming each."""
    conflicts = []
    for o in options:
        if given.get(o.name) is None or o.name not in parent or o.name in impl.init_free:
            continue
        if fresh.get(o.name) != parent[o.name]:
            conflicts.append(f"{o.flag} ({parent_id} has {_shown(parent[o.name])})")
    if conflicts:
        raise ConfigError(f"--init {parent_id} takes the architecture from {parent_id}: drop {', '.join(conflicts)}")
    return impl.init_model(parent, fresh, parent_id)


def _shown(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def training_source(task, inference_name: str) -> str:
    """The training module an inference module is made from: an EMA's base (``G`` for ``G_ema``)."""
    source = task.inference_names()[inference_name]
    return source[: -len("_ema")] if source.endswith("_ema") and source[: -len("_ema")] in task.modules else source


@torch.no_grad()
def start_from(task, weights: dict[str, dict[str, torch.Tensor]], parent_id: str,
               new_tables: bool) -> list[str]:
    """Fill ``task``'s training modules from a parent's inference modules (name -> state dict),
    before the loop builds optimizers and averages. Returns the training modules left at random.
    ``new_tables``: the class tables changed (``init_model`` said so), so tensors of another
    shape, or only on one side, start at random; otherwise every tensor must fit."""
    loaded = set()
    for name in task.inference_names():
        if name not in weights:
            continue
        target = training_source(task, name)
        module, given = task.modules[target], weights[name]
        own = module.state_dict()
        fits = {k: v for k, v in given.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
        misfits = sorted((set(own) | set(given)) - set(fits))
        if misfits and not new_tables:
            raise WeightsError(f"{parent_id}'s {name} weights do not fit this run's network ({misfits[0]!r} differs)")
        module.load_state_dict({**own, **{k: v.to(own[k].dtype) for k, v in fits.items()}})
        loaded.add(target)
    return [m for m in task.modules if m not in loaded]
