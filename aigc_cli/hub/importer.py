"""``aigc import SOURCE``: a model in another library's format becomes an ordinary run.

```python
from aigc_cli.hub.importer import import_model

run = import_model("./tiny-gpt2", name="gpt2")     # a local folder, or a hub id such as "gpt2"
```

Everything is read, converted and checked before the run store is touched: a folder that cannot
be imported leaves nothing behind. The run is then created whole (config.json, model.safetensors,
a completed run.json) and takes every command a trained run takes: sample, eval, export, and
``train --init`` to fine-tune it.
"""

from __future__ import annotations

import platform
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from aigc_cli import __version__
from aigc_cli.core.errors import ConfigError, RunError, WeightsError
from aigc_cli.hub.formats import Converted, ImportError_, detect_format, get_format
from aigc_cli.models.registry import RUN_FORMAT, get_family
from aigc_cli.runs.checkpoint import save_weights
from aigc_cli.runs.store import Run, check_name_free, create_run, now_iso, remove_run, validate_name

# A hub id: "name" or "owner/name" (letters, digits, - _ .), as the hub spells repositories.
_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}(/[A-Za-z0-9][A-Za-z0-9._-]{0,95})?")


@dataclass
class Prepared:
    """An import read, converted and checked, not yet written: its config.json and modules."""

    config: dict[str, Any]
    modules: dict[str, torch.nn.Module]
    origin: str  # the hub id or the folder, for run.json's 'imported'


def import_model(source: str, name: str | None = None, *, fmt: str | None = None, revision: str | None = None,
                 say: Callable[[str], None] = lambda message: None) -> Run:
    """Import ``source`` (a local folder, or a Hugging Face hub id fetched through its cache) as
    a new run named ``name``; ``fmt`` forces an import format (default: detected)."""
    if name is not None:
        validate_name(name)
        check_name_free(name)  # before a download: a taken name fails at once
    return write_import(prepare_import(source, fmt=fmt, revision=revision, say=say), name)


def prepare_import(source: str, *, fmt: str | None = None, revision: str | None = None,
                   say: Callable[[str], None] = lambda message: None) -> Prepared:
    """Everything of an import but the run: a bad source fails here, with nothing written."""
    folder, origin = locate(source, revision, fmt, say)
    form = get_format(fmt) if fmt is not None else detect_format(folder)
    if fmt is not None and not form.detect(folder):
        raise ImportError_(f"{folder} is not in the {fmt} format ({form.summary})")
    converted = form.convert(folder)
    config = run_config(converted, {"format": form.name, **origin, **converted.source})
    return Prepared(config, _filled(converted, config, source), origin.get("hub_id") or origin.get("folder"))


def write_import(prepared: Prepared, name: str | None = None) -> Run:
    """The run of a prepared import, whole: config.json, model.safetensors, a completed run.json."""
    run = create_run(prepared.config["family"], name=name, config=prepared.config, epochs=0, dataset=None,
                     device="cpu", imported=prepared.origin)
    try:
        save_weights(run.weights_path, prepared.modules)
        run.update_meta(status="completed")
    except BaseException:
        run.release()
        remove_run(run, force=True)  # a run without its weights is no import: none at all
        raise
    run.release()
    return run


def locate(source: str, revision: str | None, fmt: str | None, say: Callable[[str], None]) -> tuple[Path, dict]:
    """(the folder holding ``source``'s files, what to record of where they came from)."""
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ConfigError(f"{source} is a file; give aigc import the folder holding the model's files")
        if revision is not None:
            raise ConfigError("--revision applies to a hub id, not to a local folder")
        return path.resolve(), {"folder": str(path.resolve())}
    if source.startswith((".", "/", "~")) or not _HUB_ID.fullmatch(source):
        raise ConfigError(f"no such folder: {source} (a hub id looks like 'gpt2' or 'google/ddpm-cifar10-32')")
    from aigc_cli.hub.download import snapshot

    folder, commit = snapshot(source, revision, fmt, say)
    return folder, {"hub_id": source, "revision": commit}


def run_config(converted: Converted, source: dict[str, Any]) -> dict[str, Any]:
    """config.json of an imported run: the family's sections as converted, no dataset (it was
    trained elsewhere), and where it came from."""
    return {
        "format": f"aigc-run/{RUN_FORMAT}",
        "family": converted.family,
        "model": converted.model,
        "train": converted.train,
        "dataset": None,
        "seed": 0,
        "eval": {"every": 0, "fid_n": None},
        "source": source,
        "versions": {"aigc": __version__, "torch": torch.__version__, "python": platform.python_version()},
        "created": now_iso(),
    }


def _filled(converted: Converted, config: dict[str, Any], source: str) -> dict[str, torch.nn.Module]:
    """The family's inference modules, built from the converted config and filled with the
    converted weights, every key and shape checked: a format's mistake is caught here, before a
    run exists."""
    family = get_family(converted.family)
    try:
        family.impl.check_config(config, f"the model converted from {source}")
    except RunError as e:
        raise ImportError_(str(e)) from None
    modules = family.impl.build(config)
    missing = sorted(set(modules) - set(converted.weights))
    if missing:
        raise WeightsError(f"{source}: the conversion gave no weights for {', '.join(missing)}")
    for module_name, module in modules.items():
        own, given = module.state_dict(), converted.weights[module_name]
        absent, extra = sorted(set(own) - set(given)), sorted(set(given) - set(own))
        wrong = [k for k in own if k in given and tuple(given[k].shape) != tuple(own[k].shape)]
        if absent or extra or wrong:
            detail = (f"missing {absent[:3]}" if absent else f"unexpected {extra[:3]}" if extra
                      else f"{wrong[0]} is {tuple(given[wrong[0]].shape)}, expected {tuple(own[wrong[0]].shape)}")
            raise WeightsError(f"{source}: the converted {module_name} weights do not fit the network ({detail})")
        for key, tensor in given.items():
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise WeightsError(f"{source}: {key} holds non-finite values (NaN or inf); the weights are unusable")
        module.load_state_dict({k: v.to(own[k].dtype) for k, v in given.items()}, strict=True)
    return modules
