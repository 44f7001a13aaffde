"""Deployable generators: ONNX export checked against ONNX Runtime.

The constants here are light (the CLI's help reads them); ``export_onnx`` and the rest live in
``aigc_cli.export.onnx``, which imports torch, and load on first use.
"""

from __future__ import annotations

from typing import Any

# What the exported graph is: the decoder returning float images or torch-fidelity's uint8 RGB
# (every image family), or a family's own network (diffusion: "denoiser", the U-Net alone; text:
# "logits", next-token logits). A family lists those it supports in its spec's export_formats;
# the first is its default.
FORMATS = ("images", "fidelity", "denoiser", "logits")
DECODER_FORMATS = ("images", "fidelity")
DEFAULT_OPSET = 18  # the exporter's native opset; ONNX Runtime >= 1.14 runs it
MIN_OPSET = 16  # 16 and 17 come from converting the opset-18 graph down
MAX_OPSET = 23  # the highest opset torch 2.14's exporter implements

_LAZY = ("ExportError", "VerificationError", "export_onnx", "fidelity_command", "read_metadata", "verify_onnx")
__all__ = ["DEFAULT_OPSET", "FORMATS", "MAX_OPSET", "MIN_OPSET", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from aigc_cli.export import onnx

        return getattr(onnx, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
