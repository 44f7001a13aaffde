"""Export a run's generator to ONNX and prove, in ONNX Runtime, that it computes the same images.

The exported graph is the run's decoder (generation.Generator.decoder: the GAN generator with its
EMA weights, the VAE decoder, under the family's decode options) behind a small wrapper:

* ``images`` format: ``z`` float32 ``[N, latent]`` (+ ``label`` int64 ``[N]`` for conditional runs)
  -> ``images`` float32 ``[N, C, H, W]`` in [0, 1].
* ``fidelity`` format: the same inputs -> ``images`` uint8 ``[N, 3, H, W]`` (grayscale repeated),
  quantised exactly like ``aigc sample`` (``core.images.to_uint8``): what torch-fidelity's
  ``--input1 model.onnx`` expects from a generator.
* a family's own formats (diffusion's ``denoiser``: the U-Net alone, ``x``, ``t``[, ``label``] ->
  ``prediction``; text's ``logits``: ``tokens`` int64 ``[N, L]`` -> ``logits`` ``[N, L, V]``),
  described by the family's ``Sampler.export_graph`` (models/registry.py).

Every format is an :class:`ExportGraph`: the module, its inputs (each makes its own check values),
its output and tolerance, and its dynamic axes besides the batch (a text model's length), so
tracing, the ORT check and the report are one path for all. ``--format`` defaults to the first
format the run's family declares (``images``; ``logits`` for text runs).

Exporter: ``torch.onnx.export(..., dynamo=True)`` (the torch.export-based exporter, the maintained
one; it needs ``onnxscript``), traced with a batch of 2 so the batch axis stays symbolic (and a
named axis at a size of its own, checked in ONNX Runtime at other sizes too).
The model is checked in ONNX Runtime from its bytes before anything is written, then written
through ``core.io.write_output`` (atomically; a device or FIFO is written to directly): a model
that ORT cannot load, or whose outputs disagree with PyTorch, never reaches the target path. The
target is checked (``core.io.check_output``) before the export starts.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import json
import logging
import os
import time
import warnings
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from aigc_cli import __version__
from aigc_cli.core.errors import AigcError, ConfigError, OptionError, first_line, opt
from aigc_cli.core.io import check_output as io_check_output
from aigc_cli.core.io import write_output
from aigc_cli.export import DECODER_FORMATS, DEFAULT_OPSET, FORMATS, MAX_OPSET, MIN_OPSET
from aigc_cli.models.conditions import CONDITIONS, Conditioning
from aigc_cli.models.graphs import ExportGraph, GraphInput
from aigc_cli.models.registry import check_generation_options, family_specs

VERIFY_BATCHES = (1, 7, 64)
VERIFY_SEED = 0
RTOL, ATOL = 1e-3, 1e-5  # images format: float outputs
FIDELITY_ATOL = 1  # fidelity format: uint8 outputs may differ by one grey level at a rounding edge
EXAMPLE_BATCH = 2  # >= 2: torch.export specialises a batch of 1 into a constant
EXAMPLE_SIZE = 5  # a named dynamic axis (a text length) is traced at this size, within its bounds
VERIFY_LONG = 100  # the longest size an unbounded named axis (an RNN's length) is checked at


class ExportError(AigcError):
    """The exporter, the writer or ONNX Runtime failed; nothing was written."""


class VerificationError(ExportError):
    """ONNX Runtime and PyTorch disagree; ``report`` holds the comparison."""

    def __init__(self, message: str, report: dict[str, Any]):
        super().__init__(message)
        self.report = report


# --------------------------------------------------------------------------- the exported module


def quantise(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] floats -> uint8 as ``core.images.to_uint8`` (x * 255 + 0.5, floored, clamped).

    The explicit floor makes the result independent of how a runtime casts float to uint8.
    """
    return images.mul(255).add(0.5).floor().clamp(0, 255).to(torch.uint8)


class _Head(nn.Module):
    def __init__(self, sampler: nn.Module, fmt: str, channels: int):
        super().__init__()
        self.sampler = sampler
        self.fidelity = fmt == "fidelity"
        self.gray = channels == 1

    def finish(self, images: torch.Tensor) -> torch.Tensor:
        images = images.float()
        if not self.fidelity:
            return images
        out = quantise(images)
        return out.repeat(1, 3, 1, 1) if self.gray else out


class DecoderExport(_Head):
    """(z, *the inputs of the run's condition kinds) -> images: the run's decoder under one
    Conditioning built from the graph's inputs (models/conditions.py ``from_graph``)."""

    def __init__(self, sampler: nn.Module, fmt: str, channels: int, kinds: list[tuple[str, int]]):
        super().__init__(sampler, fmt, channels)
        self.kinds = kinds  # (condition kind, how many graph inputs it takes), in input order

    def forward(self, z: torch.Tensor, *inputs: torch.Tensor) -> torch.Tensor:
        fields, i = {}, 0
        for name, count in self.kinds:
            fields.update(CONDITIONS.get(name).from_graph(*inputs[i : i + count]))
            i += count
        return self.finish(self.sampler(z, Conditioning(z.shape[0], **fields)))


def condition_inputs(gen) -> list[tuple[str, list[GraphInput]]]:
    """(kind, its graph inputs) for every condition kind the run accepts, in a fixed order."""
    return [(name, CONDITIONS.get(name).graph_inputs(accepts)) for name, accepts in sorted(gen.conditions.items())]


def export_module(gen, fmt: str = "images", options: dict[str, Any] | None = None) -> nn.Module:
    """The wrapper that is exported: ``forward(z[, label])`` -> images."""
    kinds = [(name, len(inputs)) for name, inputs in condition_inputs(gen)]
    return DecoderExport(gen.decoder(**(options or {})), fmt, gen.image_shape[0], kinds).eval()


def decoder_graph(gen, fmt: str = "images", options: dict[str, Any] | None = None) -> ExportGraph:
    """The ``images`` and ``fidelity`` formats of any family: its decoder, (z[, label]) -> images."""
    d = gen.latent_dim
    c, h, w = gen.image_shape
    inputs = [GraphInput("z", "float32", (d,), lambda n, g: torch.randn(n, d, generator=g))]
    for _, kind_inputs in condition_inputs(gen):
        inputs += kind_inputs
    fidelity = fmt == "fidelity"
    kind = "uint8 RGB for torch-fidelity" if fidelity else "float images in [0, 1]"
    return ExportGraph(
        module=export_module(gen, fmt, options),
        inputs=tuple(inputs),
        output="images",
        output_dtype="uint8" if fidelity else "float32",
        output_shape=(3 if fidelity else c, h, w),
        output_range=(0, 255) if fidelity else (0, 1),
        summary=f"aigc {gen.family.name} generator from {gen.run.id}: ({', '.join(i.name for i in inputs)}) -> {kind}",
        metadata={
            "aigc.latent_dim": str(d),
            # A fitted prior (VAE --prior gmm) is not in the graph: its codes come from
            # 'aigc sample --save-latents'; standard normal z gives the textbook N(0, I) samples.
            "aigc.z_distribution": gen.sampler.latent_distribution,
        },
        rtol=0.0 if fidelity else RTOL,
        atol=FIDELITY_ATOL if fidelity else ATOL,
    )


def known_formats() -> tuple[str, ...]:
    """Every ``--format`` value: the common ones, then those only some families declare."""
    out = list(FORMATS)
    for spec in family_specs():
        out += [f for f in spec.export_formats if f not in out]
    return tuple(out)


def export_graph(gen, fmt: str, options: dict[str, Any]) -> ExportGraph:
    """The graph of ``fmt`` for ``gen``'s run; ``options``: the decode options given (checked)."""
    if fmt in DECODER_FORMATS:
        return decoder_graph(gen, fmt, options)
    if options:  # a family's own network (the diffusion U-Net) has no sampler to set up
        name = next(iter(options))
        raise ConfigError(f"{opt(name)} sets up the sampler; {opt('format')} {fmt} exports the network alone")
    return gen.sampler.export_graph(fmt)


def input_names(graph: ExportGraph) -> list[str]:
    return [i.name for i in graph.inputs]


def axis_sizes(low: int, high: int | None) -> tuple[int, tuple[int, ...]]:
    """(the size a named dynamic axis is traced at, the sizes it is checked at: one per batch of
    VERIFY_BATCHES, the largest, the smallest and one between)."""
    top = high if high is not None else max(VERIFY_LONG, low)
    example = min(max(low, EXAMPLE_SIZE), top)
    return example, (top, low, (low + top) // 2)


def make_input(i: GraphInput, n: int, g: torch.Generator, sizes: dict[str, int]) -> torch.Tensor:
    """``i``'s values for a batch of ``n``, its named axes (if any) at ``sizes``."""
    return i.make(n, g, **{a: sizes[a] for a in i.shape if isinstance(a, str)})


def concrete_shape(shape: tuple[int | str, ...], sizes: dict[str, int]) -> tuple[int, ...]:
    return tuple(sizes[a] if isinstance(a, str) else a for a in shape)


def verification_inputs(graph: ExportGraph, n: int, seed: int = VERIFY_SEED,
                        sizes: dict[str, int] | None = None) -> dict[str, np.ndarray]:
    """Fixed inputs for a batch of ``n`` (named axes at ``sizes``), made by each input in turn
    from one seeded generator."""
    g = torch.Generator().manual_seed(seed + n)
    return {i.name: make_input(i, n, g, sizes or {}).numpy() for i in graph.inputs}


def verification_cases(graph: ExportGraph) -> list[tuple[int, dict[str, int]]]:
    """(batch, sizes of the named axes) of every check: each batch of VERIFY_BATCHES with a size
    of each named axis in turn, so that batch and length both vary."""
    checks = {a: axis_sizes(*bounds)[1] for a, bounds in graph.dynamic.items()}
    return [(n, {a: c[k % len(c)] for a, c in checks.items()}) for k, n in enumerate(VERIFY_BATCHES)]


def _case(n: int, sizes: dict[str, int]) -> str:
    """'a batch of 7', or 'a batch of 7 (L=1)' where the graph has named axes."""
    return f"a batch of {n}" + (f" ({', '.join(f'{a}={v}' for a, v in sizes.items())})" if sizes else "")


@torch.inference_mode()
def reference_outputs(module: nn.Module, feed: dict[str, np.ndarray], device: torch.device) -> np.ndarray:
    """What PyTorch computes for ``feed`` (inputs in the graph's order): what ONNX Runtime must match."""
    args = [torch.from_numpy(v).to(device) for v in feed.values()]
    return module(*args).cpu().numpy()


# --------------------------------------------------------------------------- checks up front


def check_opset(opset: int | None) -> int:
    if opset is None:
        return DEFAULT_OPSET
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise OptionError("opset", f"must be between {MIN_OPSET} and {MAX_OPSET} for this exporter, got {opset}")
    return opset


def check_output(output_path: str | os.PathLike, fmt: str | None) -> Path:
    """Refuse targets that cannot be written before any work is done (core.io.check_output: a
    folder, a block device, a link loop, a folder that cannot be written)."""
    if str(output_path) == "-":
        raise ConfigError("an ONNX model cannot go to stdout; give -o FILE.onnx")
    target = io_check_output(output_path, "model.onnx")
    if fmt == "fidelity" and not target.stream and target.suffix != ".onnx":
        raise ConfigError(f"-o {target.given}: torch-fidelity only loads generators from files ending in .onnx")
    return Path(target.given)


# --------------------------------------------------------------------------- export


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter logs, warns and prints progress; keep stdout clean (it carries --json)."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript", "onnx_ir")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR + 10)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def trace_to_onnx(graph: ExportGraph, opset: int):
    """The ModelProto of ``graph.module`` for ``opset``, batch axis (and the graph's named axes)
    dynamic (pinned: dynamo exporter)."""
    import onnx  # noqa: F401  (the exporter needs it; a clear ImportError beats one from deep inside)

    module, names = graph.module, input_names(graph)
    device = next(iter(module.parameters()), torch.empty(0)).device
    g = torch.Generator().manual_seed(VERIFY_SEED)
    sizes = {a: axis_sizes(*bounds)[0] for a, bounds in graph.dynamic.items()}
    example = [make_input(i, EXAMPLE_BATCH, g, sizes).to(device) for i in graph.inputs]
    batch = torch.export.Dim("N", min=1)
    axes = {a: torch.export.Dim(a, min=lo, max=hi) for a, (lo, hi) in graph.dynamic.items()}
    dynamic = _by_argument(module, [
        {0: batch, **{k + 1: axes[a] for k, a in enumerate(i.shape) if isinstance(a, str)}} for i in graph.inputs
    ])
    try:
        with _quiet_exporter():
            program = torch.onnx.export(
                module,
                tuple(example),
                None,
                dynamo=True,
                input_names=names,
                output_names=[graph.output],
                dynamic_shapes=dynamic,
                opset_version=opset,
                optimize=True,
                external_data=False,
                verbose=False,
                report=False,
            )
    except ImportError as e:
        raise ExportError(f"the ONNX exporter needs a package that is missing: {first_line(e)}") from None
    except Exception as e:
        raise ExportError(f"the ONNX exporter failed at opset {opset}: {first_line(e)}") from None
    model = program.model_proto
    got = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if got != opset:
        raise ExportError(
            f"the exporter could not produce opset {opset} for this model (it gave {got}); "
            f"try {opt('opset')} {DEFAULT_OPSET}"
        )
    _declare_shapes(model, graph)
    return model


def _by_argument(module: nn.Module, specs: list[dict]) -> dict[str, Any]:
    """The inputs' dynamic-shape specs keyed as torch.export wants them: by the names of
    ``module.forward``'s arguments, the inputs a ``*args`` takes (DecoderExport's conditions)
    nested under its name."""
    out: dict[str, Any] = {}
    params = list(inspect.signature(module.forward).parameters.values())
    for i, p in enumerate(params):
        if i >= len(specs):
            break
        if p.kind is inspect.Parameter.VAR_POSITIONAL:
            out[p.name] = tuple(specs[i:])
            break
        out[p.name] = specs[i]
    return out


def _declare_shapes(model, graph: ExportGraph) -> None:
    """Write the declared shapes on the graph's inputs and output: "N" for the batch, the named
    axes by name. The exporter can pin a dynamic axis to its traced size in the shapes it
    annotates (a GRU's or LSTM's output: [N, 5, V]) although the graph computes every size, and
    ONNX Runtime then reads the pinned size and warns on every other; where the graph has named
    axes its annotations of intermediate values are dropped too (ONNX Runtime infers them)."""

    def write(value, dims) -> None:
        shape = value.type.tensor_type.shape
        del shape.dim[:]
        for d in ("N", *dims):
            if isinstance(d, str):
                shape.dim.add().dim_param = d
            else:
                shape.dim.add().dim_value = d

    values = {v.name: v for v in [*model.graph.input, *model.graph.output]}
    for name, dims in [*((i.name, i.shape) for i in graph.inputs), (graph.output, graph.output_shape)]:
        if name in values:
            write(values[name], dims)
    if graph.dynamic:
        del model.graph.value_info[:]


def dynamic_axes(graph: ExportGraph) -> dict[str, list[int | None]]:
    """The axes whose size is the caller's, with their bounds: {"N": [1, None], "L": [1, 64]}."""
    return {"N": [1, None], **{a: list(bounds) for a, bounds in graph.dynamic.items()}}


def _image_facts(gen) -> dict[str, Any]:
    """Latent size, classes and image shape, which every graph of an image run is about; a run
    that produces something else (text) describes itself in its graph's own metadata."""
    if gen.family.spec.produces != "images":
        return {}
    return {"latent_dim": gen.latent_dim, "num_classes": gen.num_classes, "image_shape": list(gen.image_shape)}


def _metadata(gen, graph: ExportGraph, fmt: str, opset: int) -> dict[str, str]:
    output = graph.output_dtype
    if graph.output_range is not None:
        output += f" {graph.output_range[0]:g}..{graph.output_range[1]:g}"
    meta = {
        "aigc.version": __version__,
        "aigc.run_id": gen.run.id,
        "aigc.family": gen.family.name,
        "aigc.arch": str(gen.config["model"].get("arch", "")),
    }
    facts = _image_facts(gen)
    if facts:
        k = facts["num_classes"]
        meta["aigc.num_classes"] = str(k or 0)
        meta["aigc.conditional"] = "true" if k is not None else "false"
        meta["aigc.image_shape"] = json.dumps(facts["image_shape"])
    meta["aigc.output_shape"] = json.dumps(list(graph.output_shape))
    if graph.dynamic:
        meta["aigc.dynamic_axes"] = json.dumps(dynamic_axes(graph))
    meta |= {
        "aigc.format": fmt,
        "aigc.inputs": ",".join(input_names(graph)),
        "aigc.output": output,
        **graph.metadata,
        "aigc.opset": str(opset),
        "aigc.torch": torch.__version__,
    }
    name = gen.run.read_meta().get("name")
    if name:
        meta["aigc.run_name"] = str(name)
    return meta


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file as a dict."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}


def _annotate(model, gen, graph: ExportGraph, fmt: str, opset: int) -> None:
    meta = _metadata(gen, graph, fmt, opset)
    del model.metadata_props[:]
    for key, value in meta.items():
        prop = model.metadata_props.add()
        prop.key, prop.value = key, value
    model.doc_string = graph.summary
    model.graph.name = f"aigc_{gen.family.name}_{gen.run.id}"


def _check_model(model) -> None:
    import onnx

    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as e:
        raise ExportError(f"the exported graph is not valid ONNX: {first_line(e)}") from None


# --------------------------------------------------------------------------- verification


def _session(model: str | os.PathLike | bytes):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    source = model if isinstance(model, bytes) else str(model)
    try:
        return ort.InferenceSession(source, sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise ExportError(f"ONNX Runtime {ort.__version__} cannot load the exported model: {first_line(e)}") from None


def verify_onnx(model: str | os.PathLike | bytes, graph: ExportGraph) -> dict[str, Any]:
    """Run ``model`` (a file, or the model's bytes) in ONNX Runtime (CPU) for batches of 1, 7 and
    64 and compare with PyTorch; a graph's named axes take a different size in each
    (``verification_cases``).

    Returns the comparison; ``ok`` is False when any batch differs beyond the graph's tolerance.
    """
    import onnxruntime as ort

    module = graph.module
    session = _session(model)
    names = input_names(graph)
    got_names = [i.name for i in session.get_inputs()]
    if got_names != names:
        raise ExportError(f"the exported model takes inputs {got_names}, expected {names}")
    want_dtype = np.dtype(graph.output_dtype)
    device = next(iter(module.parameters()), torch.empty(0)).device
    batches, worst, ok = [], 0.0, True
    for n, sizes in verification_cases(graph):
        feed = verification_inputs(graph, n, sizes=sizes)
        try:
            onnx_out = session.run([graph.output], feed)[0]
        except Exception as e:
            raise ExportError(f"ONNX Runtime failed on {_case(n, sizes)}: {first_line(e)}") from None
        ref = reference_outputs(module, feed, device)
        want_shape = (n, *concrete_shape(graph.output_shape, sizes))
        if onnx_out.shape != want_shape or onnx_out.dtype != want_dtype:
            raise ExportError(
                f"ONNX Runtime gave {onnx_out.dtype} {list(onnx_out.shape)} for {_case(n, sizes)}, "
                f"expected {want_dtype} {list(want_shape)}"
            )
        a, b = onnx_out.astype(np.float64), ref.astype(np.float64)
        diff = float(np.abs(a - b).max()) if a.size else 0.0
        close = bool(np.allclose(a, b, rtol=graph.rtol, atol=graph.atol)) and a.shape == b.shape
        batches.append({"batch": n, **({"sizes": sizes} if sizes else {}), "max_abs_diff": diff, "ok": close})
        worst = max(worst, diff)
        ok = ok and close
    return {
        "ok": ok,
        "runtime": f"onnxruntime {ort.__version__}",
        "provider": "CPUExecutionProvider",
        "batches": batches,
        "max_abs_diff": worst,
        "rtol": graph.rtol,
        "atol": graph.atol,
    }


# --------------------------------------------------------------------------- the whole job


def export_onnx(
    run_ref,
    output_path: str | os.PathLike,
    opset: int | None = None,
    fmt: str | None = None,
    device: torch.device | str = "cpu",
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Export ``run_ref``'s generator to ``output_path`` and verify it in ONNX Runtime.
    ``fmt``: None = the first format the run's family declares (``images``; text: ``logits``).
    ``options``: the family's decode options (None = not given).

    Raises ``ConfigError``/``ExportError``/``VerificationError``/``core.io.PathError`` (all
    ``AigcError``); on any error
    nothing is left at ``output_path`` (a file already there is kept as it was).
    """
    from aigc_cli.generation import load_generator

    if fmt is not None and fmt not in known_formats():
        raise OptionError("format", f"must be one of {', '.join(known_formats())}, got {fmt!r}")
    opset = check_opset(opset)
    path = check_output(output_path, fmt)
    started = time.perf_counter()
    gen = load_generator(run_ref, device, command="export onnx")
    formats = gen.family.spec.export_formats
    if not formats:
        raise ConfigError(f"{gen.family.name} runs have no ONNX export")
    if fmt is None:
        fmt = formats[0]
        path = check_output(output_path, fmt)  # what the format asks of the file name
    if fmt not in formats:
        raise OptionError("format", f"{fmt} is not one that {gen.family.name} runs export to ({', '.join(formats)})")
    # check_generation_options: what Generator.options does, for any run (a text run has no decode options)
    graph = export_graph(gen, fmt, check_generation_options(gen.family.spec, options or {}, gen.run.id))
    model = trace_to_onnx(graph, opset)
    _annotate(model, gen, graph, fmt, opset)
    _check_model(model)
    try:
        data = model.SerializeToString()
    except ValueError as e:  # protobuf's 2 GiB limit: far beyond the models aigc trains
        raise ExportError(f"the model is too large for a single ONNX file: {first_line(e)}") from None

    verification = verify_onnx(data, graph)  # before anything is written: a bad model never lands
    if not verification["ok"]:
        report = _report(gen, graph, path, fmt, opset, len(data), verification, started)
        bad = [b["batch"] for b in verification["batches"] if not b["ok"]]
        raise VerificationError(
            f"ONNX Runtime disagrees with PyTorch (largest difference {verification['max_abs_diff']:.3g}, "
            f"batches {bad}; allowed rtol {verification['rtol']:g}, atol {verification['atol']:g}); "
            f"{path} not written",
            report,
        )
    write_output(path, data)  # atomically; a device or FIFO (-o /dev/null) is written to directly
    return _report(gen, graph, path, fmt, opset, len(data), verification, started)


def _report(gen, graph: ExportGraph, path, fmt, opset, size, verification, started) -> dict[str, Any]:
    inputs = [{"name": i.name, "dtype": i.dtype, "shape": ["N", *i.shape], **i.note} for i in graph.inputs]
    output = {"name": graph.output, "dtype": graph.output_dtype, "shape": ["N", *graph.output_shape]}
    if graph.output_range is not None:
        output["range"] = list(graph.output_range)
    axes = {"dynamic_axes": dynamic_axes(graph)} if graph.dynamic else {}
    return {
        "run": gen.run.id,
        "family": gen.family.name,
        "format": fmt,
        "output": str(path),
        "bytes": size,
        "opset": opset,
        "exporter": f"torch.onnx dynamo (torch {torch.__version__})",
        **_image_facts(gen),
        "inputs": inputs,
        "outputs": [output],
        **axes,
        "verification": verification,
        "max_abs_diff": verification["max_abs_diff"],
        "seconds": round(time.perf_counter() - started, 3),
    }


def fidelity_command(report: dict[str, Any], input2: str = "REAL_IMAGES_DIR") -> str:
    """The torch-fidelity command line for a ``fidelity`` export."""
    parts = [
        "fidelity --fid --isc",
        f"--input1 {report['output']}",
        "--input1-model-z-type normal",
        f"--input1-model-z-size {report['latent_dim']}",
    ]
    if report["num_classes"]:
        parts.append(f"--input1-model-num-classes {report['num_classes']}")
    parts += ["--input1-model-num-samples 10000", f"--input2 {input2}"]
    return " ".join(parts)


__all__ = [
    "DEFAULT_OPSET",
    "ExportError",
    "FORMATS",
    "MAX_OPSET",
    "MIN_OPSET",
    "VerificationError",
    "decoder_graph",
    "export_graph",
    "export_module",
    "export_onnx",
    "fidelity_command",
    "known_formats",
    "quantise",
    "read_metadata",
    "reference_outputs",
    "verify_onnx",
]

