"""``aigc tune RUN``: a new run tuned from a trained one against a reward (training/tuning.py)."""

from __future__ import annotations

import inspect
from typing import Annotated, Any, Optional

import typer

from aigc_cli.cli import common
from aigc_cli.cli.options import parameter, with_signature
from aigc_cli.cli.train import check_unchanged, launch_this
from aigc_cli.training.tune_options import TUNE_OPTIONS

_RUN = inspect.Parameter(
    "run", inspect.Parameter.KEYWORD_ONLY, default=None,
    annotation=Annotated[Optional[str], typer.Argument(help="The run to tune (id, name or 'last').", show_default=False)])
_RESUME = inspect.Parameter(
    "resume", inspect.Parameter.KEYWORD_ONLY, default=None,
    annotation=Annotated[Optional[str], typer.Option("--resume", help="Continue the tuned RUN (id, name or 'last').")])
_LIST = inspect.Parameter(
    "list_rewards", inspect.Parameter.KEYWORD_ONLY, default=False,
    annotation=Annotated[bool, typer.Option("--list-rewards", help="List the built-in rewards and exit.")])
_NPROC = inspect.Parameter(
    "nproc", inspect.Parameter.KEYWORD_ONLY, default=1,
    annotation=Annotated[int, typer.Option(
        "--nproc", metavar="<int>", help="Tune on N processes of this machine (--batch-size is then split over "
        "them). See docs/distributed.md.")])
_JSON = inspect.Parameter(
    "json_out", inspect.Parameter.KEYWORD_ONLY, default=False,
    annotation=Annotated[bool, typer.Option("--json", help="Print the finished run as JSON.")])


def tune(run: Optional[str] = None, resume: Optional[str] = None, list_rewards: bool = False, nproc: int = 1,
         json_out: bool = False, **given: Any) -> None:
    from aigc_cli import training
    from aigc_cli.cli.progress import RichProgress
    from aigc_cli.core.errors import ConfigError, Interrupted
    from aigc_cli.runs.store import resolve_run

    if list_rewards:
        return _list_rewards(json_out)
    if (run is None) == (resume is None):
        raise ConfigError("give the run to tune (aigc tune RUN --reward ...) or a tuned run to continue (--resume RUN)")
    if resume is not None:
        check_unchanged(list(TUNE_OPTIONS), given)
    if nproc != 1:
        return _launch(run, resume, nproc, given)
    device = common.device()
    progress = RichProgress()
    try:
        if resume is not None:
            from aigc_cli.training.tuning import tuned_run

            out = training.resume(tuned_run(resolve_run(resume)), epochs=given.get("epochs"), time=given.get("time"),
                                  device=device, progress=progress)
        else:
            def announce(r):
                parent = r.read_config()["parent"]["run"]
                common.info(f"[bold]{r.id}[/bold] tunes {parent} ({r.read_config()['tune']['method']}) in {r.path} "
                            f"on {device}")

            out = training.tune(run, device=device, progress=progress, on_run=announce, **given)
    except Interrupted as e:
        if e.run_id is None:
            raise
        raise Interrupted(f"{e}; continue with 'aigc tune --resume {e.run_id}'", exit_code=e.exit_code,
                          run_id=e.run_id) from None
    from aigc_cli.cli.train import report

    report(out, json_out)


def _launch(run: Optional[str], resume: Optional[str], nproc: int, given: dict[str, Any]) -> None:
    """``aigc tune`` on ``nproc`` ranks (cli/train.py launch_this), once every check of the new or
    resumed run has passed."""
    from aigc_cli.runs.store import resolve_run
    from aigc_cli.training.preflight import check_resume
    from aigc_cli.training.tuning import check_new, tuned_run

    def checks() -> None:
        if resume is not None:
            check_resume(tuned_run(resolve_run(resume)), given.get("epochs"), given.get("time"), nproc)
        else:
            check_new(run, given, nproc)

    launch_this(nproc, checks)


def _list_rewards(json_out: bool) -> None:
    from aigc_cli.tune.rewards import describe_rewards

    rows = describe_rewards()
    if json_out:
        common.print_json([{"name": n, "scores": s, "description": d} for n, s, d in rows])
    else:
        common.table(None, ["name", "scores", "description"], [list(r) for r in rows], result=True)


tune = with_signature(tune, [_RUN, *(parameter(o) for o in TUNE_OPTIONS if o.cli), _RESUME, _NPROC, _LIST, _JSON],
                      "Tune a trained run against a reward: a new run, its child, that scores better while staying "
                      "close to it (GRPO for text runs). See docs/tune.md.")
