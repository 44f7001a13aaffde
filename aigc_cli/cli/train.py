"""``aigc train <family>``: one command per registered family, generated from its options.

Each command takes the loop's options (training/options.py), the family's own (its spec), and
``--resume``/``--json``; the work is ``aigc_cli.training``'s, the rendering is here.
"""

from __future__ import annotations

import inspect
from typing import Annotated, Any, Callable, Optional

import typer

from aigc_cli.cli import common
from aigc_cli.cli.options import parameter, with_signature
from aigc_cli.core.options import Option
from aigc_cli.models.registry import FamilySpec, family_specs
from aigc_cli.training.options import train_options

app = typer.Typer(help="Train models (runs are kept in the run store; see 'aigc runs').", no_args_is_help=True)

_RESUME = inspect.Parameter(
    "resume", inspect.Parameter.KEYWORD_ONLY, default=None,
    annotation=Annotated[Optional[str], typer.Option("--resume", help="Continue RUN (id, name or 'last').")],
)
_NPROC = inspect.Parameter(
    "nproc", inspect.Parameter.KEYWORD_ONLY, default=1,
    annotation=Annotated[int, typer.Option(
        "--nproc", metavar="<int>", help="Train on N processes of this machine (torchrun's launcher; --batch-size is "
        "then split over them). See docs/distributed.md.")],
)
_JSON = inspect.Parameter(
    "json_out", inspect.Parameter.KEYWORD_ONLY, default=False,
    annotation=Annotated[bool, typer.Option("--json", help="Print the finished run as JSON.")],
)


def command_options(spec: FamilySpec) -> list[Option]:
    """The options of ``aigc train <family>``: those of its training that have a flag."""
    return [o for o in train_options(spec) if o.cli]


def _flag(option: Option, value: Any) -> str:
    return option.off_flag if value is False and option.off_flag else option.flag


def make_command(spec: FamilySpec):
    options = command_options(spec)

    def command(resume: Optional[str] = None, nproc: int = 1, json_out: bool = False, **given: Any) -> None:
        if nproc != 1:
            launch_ranks(spec.name, options, resume, nproc, given)
            return
        run_training(spec.name, options, resume, json_out, given)

    command.__name__ = spec.name.replace("-", "_")
    return with_signature(command, [*(parameter(o) for o in options), _RESUME, _NPROC, _JSON], spec.summary)


def launch_ranks(family: str, options: list[Option], resume: Optional[str], nproc: int, given: dict[str, Any]) -> None:
    """``aigc train`` on ``nproc`` ranks (launch_this)."""
    launch_this(nproc, lambda: preflight(family, options, resume, given, nproc))


def launch_this(nproc: int, checks: Callable[[], Any]) -> None:
    """This very command on ``nproc`` ranks (training/launch.py), without its --nproc, once
    ``checks()``, every check that needs no rank, has passed: a bad command starts no process."""
    from aigc_cli.core import distributed
    from aigc_cli.core.errors import ConfigError

    if nproc < 1:
        raise ConfigError(f"--nproc must be at least 1, got {nproc}")
    if distributed.launched():
        raise ConfigError("--nproc starts processes itself; under torchrun, leave it out (use --nproc-per-node)")
    checks()
    distributed.check_device(common.device(), nproc)  # a GPU, or a CPU core, per rank

    from aigc_cli.training.launch import launch

    launch(nproc, without_nproc(common.settings.argv), debug=common.settings.debug)


def preflight(family: str, options: list[Option], resume: Optional[str], given: dict[str, Any], world: int):
    """Every check of the command that needs neither the data nor a rank (training/preflight.py),
    before anything slow: the run to resume (checked, not yet locked), or None for a new run."""
    from aigc_cli.training import preflight as checks

    if resume:
        run = _resume_target(family, options, resume, given)
        checks.check_resume(run, given.get("epochs"), given.get("time"), world)
        return run
    checks.check_new(family, given, world)
    return None


def without_nproc(argv: list[str]) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            out.append(a)
    return out


def run_training(family: str, options: list[Option], resume: Optional[str], json_out: bool,
                 given: dict[str, Any]) -> None:
    """Start or resume a run, then print its id (or JSON). ``given`` holds the command's options,
    None where the user gave none (the declared default applies). Under torchrun, each rank runs
    this; rank 0 alone reports and prints."""
    from aigc_cli import training
    from aigc_cli.cli.datasets import progress_bar
    from aigc_cli.cli.progress import RichProgress
    from aigc_cli.core import distributed
    from aigc_cli.core.errors import Interrupted

    # Alone, the checks that need no data come first, before torch loads: a second --resume of a
    # running run is refused at once. Under torchrun each rank checks after joining the others
    # (train()/resume()): a rank that left before would leave them waiting for it.
    target = None if distributed.launched() else preflight(family, options, resume, given, 1)
    device = common.device()
    progress = RichProgress()
    try:
        with progress_bar() as data_progress:
            if resume:
                run = _resume(family, options, resume, given, device, progress, data_progress, target)
            else:
                def announce(r):
                    model = r.read_config()["model"]
                    cond = f", class-conditional on {model['num_classes']} classes" if model.get("conditional") else ""
                    if model.get("text"):
                        text = model["text"]
                        source = f" {text['source']}" if text.get("source") else ""
                        cond = f", conditioned on captions ({text['encoder']}{source} text encoder)"
                    common.info(f"[bold]{r.id}[/bold] started in {r.path} on {device}{cond}")

                run = training.train(family, device=device, progress=progress, on_run=announce,
                                     dataset_progress=data_progress, **given)
    except Interrupted as e:
        if e.run_id is None:
            raise
        raise Interrupted(f"{e}; continue with 'aigc train {family} --resume {e.run_id}'",
                          exit_code=e.exit_code, run_id=e.run_id) from None
    report(run, json_out)


def report(run, json_out: bool) -> None:
    """A finished run: its id on stdout, or JSON (``--json``)."""
    meta = run.read_meta()
    if json_out:
        common.print_json({"id": run.id, "name": meta.get("name"), "path": str(run.path), "status": meta["status"],
                           "stopped": meta.get("stopped"), "epoch": meta.get("epoch"), "step": meta.get("step"),
                           "last_metrics": run.last_metrics()})
    else:
        common.print_result(run.id)


def _resume_target(family, options, resume, given):
    """The run ``--resume`` names, if this command may continue it."""
    from aigc_cli.core.errors import RunError
    from aigc_cli.runs.store import resolve_run

    check_unchanged(options, given)
    run = resolve_run(resume)
    own = run.read_config().get("family")
    if own != family:
        raise RunError(f"{run.id} is a {own} run; resume it with 'aigc train {own} --resume {run.id}'")
    return run


def check_unchanged(options: list[Option], given: dict[str, Any]) -> None:
    """Only --epochs and --time may change on --resume: anything else would no longer be the same run."""
    from aigc_cli.core.errors import ConfigError

    table = {o.name: o for o in options}
    extra = [k for k, v in given.items() if v is not None and k not in ("epochs", "time")]
    if extra:
        flags = ", ".join(_flag(table[k], given[k]) for k in extra)
        raise ConfigError(f"--resume continues a run as it was configured; drop {flags}")


def _resume(family, options, resume, given, device, progress, data_progress, run=None):
    from aigc_cli import training

    run = run or _resume_target(family, options, resume, given)
    return training.resume(run, epochs=given.get("epochs"), time=given.get("time"), device=device,
                           progress=progress,
                           dataset_progress=data_progress)


for _spec in family_specs():
    app.command(_spec.name)(make_command(_spec))
