"""``aigc train gan|vae``: thin wrappers over aigc_cli.training."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from aigc_cli.cli import common

app = typer.Typer(help="Train models (runs are kept in the run store; see 'aigc runs').", no_args_is_help=True)

DATASET_HELP = "Dataset: a name (shapes, mnist, fashion-mnist, cifar10), an image folder, an IDX or .npy/.npz file."

# Options every family's command takes. None means "not given": the family's default applies,
# and --resume can tell what the user asked to change.
Dataset = Annotated[Optional[str], typer.Option("--dataset", "-d", help=DATASET_HELP + " [default: shapes]")]
Split = Annotated[Optional[str], typer.Option("--split", help="train or test, for named datasets. [default: train]")]
Epochs = Annotated[Optional[int], typer.Option("--epochs", "-e", help="Passes over the data. [default: 20]")]
BatchSize = Annotated[Optional[int], typer.Option("--batch-size", "-b", help="[default: 64]")]
Width = Annotated[Optional[int], typer.Option("--width", help="Base channel count / hidden width unit. [default: 32]")]
Seed = Annotated[Optional[int], typer.Option("--seed", help="[default: 0]")]
Name = Annotated[Optional[str], typer.Option("--name", help="A name to refer to the run by.")]
Resume = Annotated[Optional[str], typer.Option("--resume", help="Continue RUN (id, name or 'last').")]
EvalEvery = Annotated[Optional[int], typer.Option("--eval-every", help="Record FID every N epochs.")]
FidN = Annotated[Optional[int], typer.Option("--fid-n", help="Samples for --eval-every FID. [default: 2048]")]
JsonOut = Annotated[bool, typer.Option("--json", help="Print the finished run as JSON.")]


def run_training(family: str, resume: Optional[str], json_out: bool, given: dict) -> None:
    """Shared by every family's command: start or resume, render the result. ``given`` holds
    the command's options, None where the user gave none (the family's default applies)."""
    from aigc_cli import training
    from aigc_cli.cli.datasets import progress_bar
    from aigc_cli.cli.progress import RichProgress
    from aigc_cli.core.errors import ConfigError

    device = common.device()
    progress = RichProgress()
    with progress_bar() as data_progress:
        if resume:
            # Only --epochs may change: anything else would no longer be the same run.
            extra = sorted(k for k, v in given.items() if v is not None and k != "epochs")
            if extra:
                flags = ", ".join("--unconditional" if given[k] is False else "--" + k.replace("_", "-") for k in extra)
                raise ConfigError(f"--resume continues a run as it was configured; drop {flags}")
            run = training.resume(resume, epochs=given.get("epochs"), device=device, progress=progress,
                                  family=family, dataset_progress=data_progress,
                                  evaluate_factory=_evaluate_factory(device))
        else:
            kwargs = {k: v for k, v in given.items() if v is not None}
            kwargs.setdefault("dataset", "shapes")
            kwargs.setdefault("split", "train")
            kwargs["eval_every"] = kwargs.get("eval_every") or 0

            def announce(r):
                model = r.read_config()["model"]
                cond = f", class-conditional on {model['num_classes']} classes" if model.get("conditional") else ""
                common.info(f"[bold]{r.id}[/bold] started in {r.path} on {device}{cond}")

            run = training.train(family, device=device, progress=progress, on_run=announce,
                                 dataset_progress=data_progress, evaluate_factory=_evaluate_factory(device),
                                 **kwargs)
    meta = run.read_meta()
    if json_out:
        common.print_json({"id": run.id, "name": meta.get("name"), "path": str(run.path), "status": meta["status"],
                           "epoch": meta.get("epoch"), "step": meta.get("step"), "last_metrics": run.last_metrics()})
    else:
        common.print_result(run.id)


def _evaluate_factory(device):
    """FID during training (--eval-every), when the metrics package provides it."""
    try:
        from aigc_cli.metrics.training import make_evaluator
    except ImportError:
        return None
    return lambda run, config, data: make_evaluator(run, config, data, device, info=common.info)


@app.command("gan")
def gan(
    dataset: Dataset = None,
    split: Split = None,
    arch: Optional[str] = typer.Option(None, "--arch", help="mlp or dcgan. [default: dcgan]"),
    loss: Optional[str] = typer.Option(None, "--loss", help="bce, hinge or wgan-gp. [default: hinge]"),
    epochs: Epochs = None,
    batch_size: BatchSize = None,
    lr: Optional[float] = typer.Option(None, "--lr", help="Adam learning rate. [default: per loss]"),
    latent_dim: Optional[int] = typer.Option(None, "--latent-dim", help="[default: 64]"),
    width: Width = None,
    conditional: Optional[bool] = typer.Option(
        None, "--conditional/--unconditional",
        help="Class-conditional training (needs labels). [default: conditional when the dataset has labels]"),
    updates: Optional[str] = typer.Option(
        None, "--updates", help="simultaneous (D and G both step from one scoring of the fakes) or alternating "
        "(D steps, then G against the updated D). [default: simultaneous]"),
    seed: Seed = None,
    name: Name = None,
    resume: Resume = None,
    eval_every: EvalEvery = None,
    fid_n: FidN = None,
    json_out: JsonOut = False,
) -> None:
    """Train a GAN: MLP or DCGAN, with bce, hinge (spectral norm) or wgan-gp loss."""
    given = dict(dataset=dataset, split=split, arch=arch, loss=loss, epochs=epochs, batch_size=batch_size,
                 lr=lr, latent_dim=latent_dim, width=width, conditional=conditional, updates=updates, seed=seed,
                 name=name, eval_every=eval_every, fid_n=fid_n)
    run_training("gan", resume, json_out, given)


@app.command("vae")
def vae(
    dataset: Dataset = None,
    split: Split = None,
    arch: Optional[str] = typer.Option(None, "--arch", help="mlp or conv. [default: conv]"),
    likelihood: Optional[str] = typer.Option(
        None, "--likelihood", help="bernoulli, gaussian or auto (bernoulli for grey images and shapes, "
        "gaussian for other colour images). [default: auto]"),
    beta: Optional[float] = typer.Option(None, "--beta", help="Weight of the KL term (beta-VAE); 1 is the plain VAE. [default: 1]"),
    kl_warmup: Optional[float] = typer.Option(None, "--kl-warmup", help="Epochs over which the KL weight ramps up from 0 to --beta. [default: 0]"),
    prior: Optional[str] = typer.Option(
        None, "--prior", help="Where samples start: gmm (a Gaussian mixture fitted to the encoded training "
        "images at every save) or standard (N(0, I), the textbook VAE). [default: gmm]"),
    epochs: Epochs = None,
    batch_size: BatchSize = None,
    lr: Optional[float] = typer.Option(None, "--lr", help="Adam learning rate. [default: 1e-3]"),
    latent_dim: Optional[int] = typer.Option(None, "--latent-dim", help="[default: 16]"),
    width: Width = None,
    conditional: Optional[bool] = typer.Option(
        None, "--conditional/--unconditional", help="Class-conditional (a CVAE; needs labels). [default: unconditional]"),
    seed: Seed = None,
    name: Name = None,
    resume: Resume = None,
    eval_every: EvalEvery = None,
    fid_n: FidN = None,
    json_out: JsonOut = False,
) -> None:
    """Train a VAE: MLP or convolutional, Bernoulli or Gaussian likelihood, beta-VAE, CVAE."""
    given = dict(dataset=dataset, split=split, arch=arch, likelihood=likelihood, beta=beta, kl_warmup=kl_warmup,
                 prior=prior, epochs=epochs, batch_size=batch_size, lr=lr, latent_dim=latent_dim, width=width,
                 conditional=conditional, seed=seed, name=name, eval_every=eval_every, fid_n=fid_n)
    run_training("vae", resume, json_out, given)
