"""Weights and full training state as safetensors; the non-tensor parts ride in its JSON metadata.

One file per checkpoint, written atomically, so a checkpoint is either whole or absent.

``state``: what of a module is saved and expected back (default: its whole state dict). A LoRA
run passes models/adapters.py's ``saved_state``: a module with adapters is saved as its adapters
alone, its base weights being its parent run's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from aigc_cli.core.errors import WeightsError
from aigc_cli.core.io import atomic_write_bytes

FORMAT = "aigc-checkpoint/1"


StateFn = Callable[[torch.nn.Module], dict[str, torch.Tensor]]


def _whole(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return module.state_dict()


def _flatten_module_states(modules: dict[str, torch.nn.Module], prefix: str,
                           state: StateFn = _whole) -> dict[str, torch.Tensor]:
    out = {}
    for name, module in modules.items():
        for key, tensor in state(module).items():
            out[f"{prefix}{name}.{key}"] = tensor.detach().cpu().contiguous()
    return out


def _flatten_optimizer(name: str, opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, state in sd["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{name}.{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[key] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def save_weights(path: Path, modules: dict[str, torch.nn.Module], metadata: dict[str, Any] | None = None,
                 state: StateFn = _whole) -> None:
    tensors = _flatten_module_states(modules, "", state)
    meta = {"format": "aigc-weights/1", "meta": json.dumps(metadata or {})}
    # Serialised here and written by core.io: safetensors' own save_file would add a second temp
    # file with its own (0600) mode.
    atomic_write_bytes(path, safetensors_bytes(tensors, metadata=meta))


def _load_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    if not path.exists():
        raise WeightsError(f"no weights file at {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        return load_file(str(path)), metadata
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise WeightsError(f"{path} is not a readable safetensors file ({str(e).splitlines()[0]})") from None


def _load_into(module: torch.nn.Module, state: dict[str, torch.Tensor], what: str, path: Path,
               expected: StateFn = _whole) -> None:
    own = expected(module)
    for key, tensor in state.items():
        mine = own.get(key)
        if mine is None:
            continue  # load_state_dict names it below
        if tensor.dtype != mine.dtype:
            raise WeightsError(f"{path.name}: {what}.{key} is {_dtype(tensor)}, expected {_dtype(mine)}; "
                               "the file was not written by this run")
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise WeightsError(f"{path.name}: {what}.{key} holds non-finite values (NaN or inf); "
                               "the weights are unusable")
    try:
        if set(state) != set(own):
            raise RuntimeError("")
        # Part of a module (its adapters): the rest is in place already, from its parent run.
        module.load_state_dict(state, strict=len(own) == len(module.state_dict()))
    except RuntimeError as e:
        raise WeightsError(
            f"{path.name}: the weights for {what} do not fit the run's architecture ({_mismatch(own, state, e)})"
        ) from None


def _dtype(t: torch.Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


def _mismatch(own: dict[str, torch.Tensor], state: dict[str, torch.Tensor], error: RuntimeError) -> str:
    """What differs, in one line: missing and unexpected names, or the first wrong shape."""
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing, e.g. {missing[0]!r}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected, e.g. {unexpected[0]!r}")
    for k in own:
        if k in state and tuple(own[k].shape) != tuple(state[k].shape):
            parts.append(f"{k!r} is {tuple(state[k].shape)} in the file, {tuple(own[k].shape)} here")
            break
    return "; ".join(parts) or (str(error).splitlines()[0] if str(error) else "mismatch")


def _split(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, dict[str, torch.Tensor]]:
    out: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith(prefix):
            name, _, rest = key[len(prefix):].partition(".")
            out.setdefault(name, {})[rest] = value
    return out


def load_weights(path: Path, modules: dict[str, torch.nn.Module], state: StateFn = _whole) -> None:
    tensors, _ = _load_tensors(path)
    groups = _split(tensors, "")
    for name, module in modules.items():
        if name not in groups:
            raise WeightsError(f"{path.name} holds no weights for {name!r}; it does not fit this run")
        _load_into(module, groups[name], name, path, state)


def save_checkpoint(
    path: Path,
    modules: dict[str, torch.nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    extra_tensors: dict[str, torch.Tensor],
    state: dict[str, Any],
    module_state: StateFn = _whole,
) -> None:
    """modules: every module that trains or averages (EMA included); state: JSON-able progress."""
    tensors = _flatten_module_states(modules, "model.", module_state)
    optim_meta = {}
    for name, opt in optimizers.items():
        t, m = _flatten_optimizer(name, opt)
        tensors.update(t)
        optim_meta[name] = m
    for key, value in extra_tensors.items():
        tensors[f"extra.{key}"] = value.detach().cpu().contiguous()
    metadata = {"format": FORMAT, "state": json.dumps(state), "optim": json.dumps(optim_meta)}
    atomic_write_bytes(path, safetensors_bytes(tensors, metadata=metadata))


def _retuple(saved: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
    # JSON turns tuples (Adam's betas) into lists; give them back the optimizer's own types.
    return {k: tuple(v) if isinstance(v, list) and isinstance(current.get(k), tuple) else v for k, v in saved.items()}


def load_checkpoint(
    path: Path,
    modules: dict[str, torch.nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    module_state: StateFn = _whole,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Fill modules and optimizers in place; return (extra tensors, state)."""
    tensors, metadata = _load_tensors(path)
    if metadata.get("format") != FORMAT:
        raise WeightsError(f"{path} is not an aigc checkpoint")
    state, optim_meta = _checkpoint_metadata(path, metadata)
    groups = _split(tensors, "model.")
    for name, module in modules.items():
        if name not in groups:
            raise WeightsError(f"checkpoint {path} holds no {name!r}; it does not fit this run")
        _load_into(module, groups[name], name, path, module_state)
    opt_tensors = _split(tensors, "optim.")
    for name, opt in optimizers.items():
        meta = optim_meta.get(name)
        if meta is None:
            raise WeightsError(f"checkpoint {path} holds no optimizer {name!r}")
        opt_state: dict[int, dict[str, Any]] = {}
        try:
            for key, value in opt_tensors.get(name, {}).items():
                idx, _, field = key.partition(".")
                if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                    raise WeightsError(f"{path.name}: optimizer {name!r} state holds non-finite values; "
                                       "the checkpoint is unusable")
                opt_state.setdefault(int(idx), {})[field] = value
            for idx, fields in meta["scalars"].items():
                opt_state.setdefault(int(idx), {}).update(fields)
            groups = [_retuple(saved, current) for saved, current in zip(meta["param_groups"], opt.param_groups)]
            opt.load_state_dict({"state": opt_state, "param_groups": groups})
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as e:
            raise WeightsError(f"{path.name}: optimizer {name!r} state does not fit this run "
                               f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    extra = {k[len("extra."):]: v for k, v in tensors.items() if k.startswith("extra.")}
    return extra, state


def _checkpoint_metadata(path: Path, metadata: dict[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The checkpoint's JSON parts, checked: (progress state, optimizer metadata)."""
    parsed = {}
    for key in ("state", "optim"):
        if key not in metadata:
            raise WeightsError(f"{path.name}: the checkpoint's metadata lacks {key!r}; it cannot be resumed")
        try:
            parsed[key] = json.loads(metadata[key])
        except ValueError:
            raise WeightsError(f"{path.name}: the checkpoint's {key!r} metadata is not valid JSON") from None
        if not isinstance(parsed[key], dict):
            raise WeightsError(f"{path.name}: the checkpoint's {key!r} metadata is not an object")
    for name, meta in parsed["optim"].items():
        if not (isinstance(meta, dict) and isinstance(meta.get("param_groups"), list)
                and isinstance(meta.get("scalars"), dict)):
            raise WeightsError(f"{path.name}: the checkpoint's optimizer {name!r} metadata is malformed")
    return parsed["state"], parsed["optim"]

