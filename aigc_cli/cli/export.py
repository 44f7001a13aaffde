"""``aigc export``: deployable models."""

from __future__ import annotations

from typing import Optional

import typer

from aigc_cli.cli import common
from aigc_cli.cli.options import add_options
from aigc_cli.export import DEFAULT_OPSET, MAX_OPSET, MIN_OPSET
from aigc_cli.models.registry import generation_options

app = typer.Typer(help="Export trained generators (ONNX) and LoRA adapters (peft).", no_args_is_help=True)


@app.command("onnx")
@add_options(generation_options("decode"), into="gen_options")
def onnx(
    run: str = typer.Argument(..., help="Run id, name or 'last'."),
    output: str = typer.Option(..., "-o", "--output", help="Where to write the model, e.g. model.onnx."),
    opset: Optional[int] = typer.Option(
        None, "--opset", help=f"ONNX opset, {MIN_OPSET} to {MAX_OPSET} (default {DEFAULT_OPSET})."
    ),
    fmt: Optional[str] = typer.Option(
        None,
        "--format",
        help="images: float32 [N,C,H,W] in [0,1]; fidelity: uint8 RGB [N,3,H,W] for torch-fidelity's "
        "--input1; denoiser (diffusion runs): the U-Net alone, (x, t[, label]) -> prediction; logits "
        "(text runs): tokens int64 [N,L] -> next-token logits [N,L,V]. Default: the first its family "
        "exports (images; logits for text runs).",
        show_default=False,
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the export and verification report as JSON."),
    gen_options: Optional[dict] = None,
) -> None:
    """Export a run's generator (GAN: EMA generator; VAE: decoder; diffusion: the sampler unrolled, or the U-Net; text: the language model's logits) to ONNX and check it in ONNX Runtime.

    The model is run in ONNX Runtime on CPU for batches of 1, 7 and 64 (text: of different lengths too) and compared with PyTorch; if they disagree the command fails and no file is written.
    """
    from aigc_cli.export.onnx import VerificationError, export_onnx, fidelity_command

    try:
        # Export and the reference run on CPU: the graph does not depend on the device, and a CPU
        # reference compares like with like against ONNX Runtime's CPU provider.
        report = export_onnx(run, output, opset=opset, fmt=fmt, device="cpu", options=gen_options)
    except VerificationError as e:
        if json_out:
            common.print_json({**e.report, "ok": False})
        raise
    if json_out:
        common.print_json({**report, "ok": True})
        return
    v = report["verification"]
    batches = ", ".join(_case(b) for b in v["batches"])
    _say(
        f"wrote {report['output']} ({report['format']}, opset {report['opset']}, "
        f"{report['bytes'] / 1024:.0f} KiB) from {report['run']}"
    )
    _say(
        f"ONNX Runtime matches PyTorch on batches {batches}: largest difference {v['max_abs_diff']:.3g} "
        f"(rtol {v['rtol']:g}, atol {v['atol']:g})"
    )
    if report["format"] == "fidelity":
        _say(f"torch-fidelity: {fidelity_command(report)}")
    common.print_result(f"max_abs_diff {v['max_abs_diff']:.6g}")


def _case(check: dict) -> str:
    """'7', or '7 (L=1)' for a check that also sized a named axis (a text model's length)."""
    sizes = check.get("sizes") or {}
    return str(check["batch"]) + (f" ({', '.join(f'{a}={n}' for a, n in sizes.items())})" if sizes else "")


def _say(message: str) -> None:
    """One unwrapped line on stderr (paths and the torch-fidelity command stay copyable)."""
    if not common.settings.quiet:
        common.console().print(message, soft_wrap=True, markup=False, highlight=False)


@app.command("peft")
def peft(
    run: str = typer.Argument(..., help="A LoRA run: id, name or 'last'."),
    output: str = typer.Option(..., "-o", "--output", help="The folder to write adapter_config.json and "
                               "adapter_model.safetensors into (created if missing)."),
    json_out: bool = typer.Option(False, "--json", help="Print what was written as JSON."),
) -> None:
    """Write a LoRA run's adapters in peft's format, for peft.PeftModel.from_pretrained on the base network aigc builds (docs/pretrained.md)."""
    from aigc_cli.export.peft import export_peft

    report = export_peft(run, output)
    if json_out:
        common.print_json(report)
        return
    for w in report["written"]:
        _say(f"wrote {w['folder']}: {w['layers']} adapted layers of {w['module']} (rank {report['rank']}, "
             f"alpha {report['alpha']:g}) from {report['run']}")
    common.print_result(report["written"][0]["folder"] if len(report["written"]) == 1 else output)
