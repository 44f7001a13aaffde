"""Deployable generators: ONNX export checked against ONNX Runtime (imports torch; load lazily from the CLI)."""

from aigc_cli.export.onnx import (
    DEFAULT_OPSET,
    FORMATS,
    MAX_OPSET,
    MIN_OPSET,
    ExportError,
    VerificationError,
    export_onnx,
    fidelity_command,
    read_metadata,
    verify_onnx,
)

__all__ = [
    "DEFAULT_OPSET",
    "FORMATS",
    "MAX_OPSET",
    "MIN_OPSET",
    "ExportError",
    "VerificationError",
    "export_onnx",
    "fidelity_command",
    "read_metadata",
    "verify_onnx",
]
