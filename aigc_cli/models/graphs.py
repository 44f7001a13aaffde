"""What an exported network is: its module, its inputs and output, and what the ONNX export
checks it against (export/onnx.py traces and verifies every format through these). Light to
import: torch only in the type hints."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn


@dataclass(frozen=True)
class GraphInput:
    """One input of an exported network: ``name``, ``dtype`` ("float32" or "int64"), the shape
    after the batch axis, and ``make(n, generator)``: (n, *shape) values to check the export on.

    A string in ``shape`` is a named dynamic axis of the graph (``ExportGraph.dynamic``), e.g. a
    text model's ``("L",)``; ``make`` is then called with its size as well: ``make(n, g, L=16)``."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]
    make: Callable[..., "torch.Tensor"]
    note: dict[str, Any] = field(default_factory=dict)  # shown in the export report, e.g. {"classes": 10}


@dataclass(frozen=True)
class ExportGraph:
    """A network as ``aigc export onnx --format F`` writes it: ``module(*inputs)`` -> one tensor."""

    module: "nn.Module"
    inputs: tuple[GraphInput, ...]
    output: str
    output_dtype: str
    output_shape: tuple[int | str, ...]  # after the batch axis; a string: a named dynamic axis
    summary: str  # the ONNX doc string: what the graph computes
    metadata: dict[str, str] = field(default_factory=dict)  # aigc.* entries beyond the common ones
    output_range: tuple[float, float] | None = None
    rtol: float = 1e-3  # ONNX Runtime against PyTorch
    atol: float = 1e-5
    # Dynamic axes besides the batch axis (which every graph has): name -> (smallest, largest or
    # None for no bound), e.g. {"L": (1, 64)} for a sequence length; the names appear in the
    # inputs' and the output's shapes. The export traces them symbolically and checks several sizes.
    dynamic: dict[str, tuple[int, int | None]] = field(default_factory=dict)
