"""``aigc export peft``: a LoRA run's adapters in peft's format (``adapter_config.json`` +
``adapter_model.safetensors``), which ``peft.PeftModel.from_pretrained`` loads onto the base
network aigc builds (``aigc_cli.generation.load_modules(parent)``): the tensors are peft's
already (same shapes, same scale alpha / r); only their names change
(``model.blocks.0.fc.lora_A`` -> ``base_model.model.blocks.0.fc.lora_A.weight``).

Not onto transformers' or diffusers' own classes: their layers have other names (and GPT-2's
``Conv1D`` transposed weights); docs/pretrained.md says so.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from aigc_cli.core.errors import ConfigError
from aigc_cli.core.io import PathError, probe, write_output
from aigc_cli.models.registry import load_config
from aigc_cli.runs.store import Run, resolve_run


def export_peft(run_ref: str | Run, output: str) -> dict[str, Any]:
    """Write ``run_ref``'s adapters to the folder ``output`` (one subfolder per module when the
    run adapts several); returns what was written."""
    run = run_ref if isinstance(run_ref, Run) else resolve_run(run_ref)
    config = load_config(run)
    adapters = config.get("adapters")
    if adapters is None:
        raise ConfigError(f"{run.id} has no adapters (it was not trained with --lora); peft's format holds adapters only")
    st, kind = probe(output)
    if st is not None and kind != "a folder":
        raise PathError(f"cannot write {output}: it is {kind}; -o names a folder for peft's two files")
    tensors = load_file(str(run.weights_path))
    parent = config["parent"]["run"]
    modules = adapters["layers"]
    written = []
    for module, layers in modules.items():
        folder = Path(output) / module if len(modules) > 1 else Path(output)
        state = {}
        for key, tensor in tensors.items():
            name, _, rest = key.partition(".")
            if name == module:
                layer, _, which = rest.rpartition(".")
                state[f"base_model.model.{layer}.{which}.weight"] = tensor.contiguous()
        peft_config = {
            "peft_type": "LORA", "task_type": None, "r": adapters["rank"], "lora_alpha": adapters["alpha"],
            "target_modules": layers, "lora_dropout": 0.0, "bias": "none", "fan_in_fan_out": False,
            "base_model_name_or_path": None, "inference_mode": True,
        }
        meta = {"aigc.run": run.id, "aigc.parent": parent, "aigc.module": module}
        write_output(folder / "adapter_model.safetensors", safetensors_bytes(state, metadata=meta))
        write_output(folder / "adapter_config.json", (json.dumps(peft_config, indent=2) + "\n").encode())
        written.append({"module": module, "folder": str(folder), "layers": len(layers),
                        "tensors": len(state)})
    return {"run": run.id, "parent": parent, "format": "peft", "rank": adapters["rank"], "alpha": adapters["alpha"],
            "written": written}
