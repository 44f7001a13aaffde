"""The ``aigc`` entry point. Keep imports light: torch loads only inside commands that need it."""

from __future__ import annotations

import os
import sys
import time
import warnings
from typing import Optional

import typer

from aigc_cli import __version__
from aigc_cli.cli import common
from aigc_cli.cli import datasets as datasets_cmd
from aigc_cli.cli import eval as eval_cmd
from aigc_cli.cli import export as export_cmd
from aigc_cli.cli import imports as import_cmd
from aigc_cli.cli import info as info_cmd
from aigc_cli.cli import interpolate as interpolate_cmd
from aigc_cli.cli import reconstruct as reconstruct_cmd
from aigc_cli.cli import runs as runs_cmd
from aigc_cli.cli import sample as sample_cmd
from aigc_cli.cli import train as train_cmd
from aigc_cli.cli import tune as tune_cmd

RANK_GRACE = 2.0  # seconds another rank waits before exiting after rank 0's failure

app = typer.Typer(
    name="aigc",
    help="Train, sample, evaluate and export small generative image and text models.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: rich costs ~150 ms of start-up on every --help
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"aigc {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    device: str = typer.Option(
        "auto", "--device", envvar="AIGC_DEVICE", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps."
    ),
    threads: Optional[int] = typer.Option(
        None, "--threads", envvar="AIGC_THREADS", min=1, show_default=False,
        help="CPU threads for all work. Default: 1 for small steps (token-by-token generation, scoring a small "
             "model), torch's count (OMP_NUM_THREADS, else one per core) for the rest."),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or messages on stderr."),
    version: Optional[bool] = typer.Option(
        None, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    common.settings.device = device
    common.settings.threads = threads
    common.settings.debug = debug
    common.settings.quiet = quiet


app.add_typer(train_cmd.app, name="train")
app.command("tune")(tune_cmd.tune)
app.command("sample")(sample_cmd.sample)
app.command("interpolate")(interpolate_cmd.interpolate)
app.command("reconstruct")(reconstruct_cmd.reconstruct)
app.add_typer(eval_cmd.app, name="eval")
app.add_typer(export_cmd.app, name="export")
app.command("import")(import_cmd.import_)
app.add_typer(runs_cmd.app, name="runs")
app.add_typer(datasets_cmd.app, name="datasets")
app.command("info")(info_cmd.info)


PIPE_EXIT = 141  # 128 + SIGPIPE: the status a shell reports for `yes | head`'s yes (docs/cli.md)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI and map every outcome to an exit code: 0, 1 (error), 2 (usage), 130/143, 141."""
    from aigc_cli.core import signals
    from aigc_cli.core.distributed import shutdown

    args = sys.argv[1:] if argv is None else argv
    shown = warnings.showwarning
    warnings.showwarning = _show_warning  # one line each (PIL's included); -q: none
    common.settings.debug = "--debug" in args
    common.settings.argv = list(args)  # what --nproc re-launches on each rank
    with signals.installed():  # SIGINT/SIGTERM raise Signalled anywhere below: 130/143, never 0
        code = None
        try:
            try:
                code = _run(args)
            except signals.Signalled as e:  # it came while the outcome was being said: that line stands
                code = e.exit_code
            signals.settle()  # the outcome is said; a further Ctrl-C cannot add a line or a traceback
        except signals.Signalled as e:  # it came after the outcome, before settle() (a launcher's
            signals.settle()  # SIGTERM as another rank dies): the outcome stands, and no traceback
            code = e.exit_code if code is None else code
        warnings.showwarning = shown
        shutdown()  # under torchrun: leave the process group (a no-op otherwise)
    sys.exit(code)


def _run(args: list[str]) -> int:
    """The command's exit code, its one line said on stderr."""
    from aigc_cli.core import signals
    from aigc_cli.core.errors import AigcError, Interrupted
    from aigc_cli.core.options import flag

    try:  # typer >= 0.29 vendors click
        from typer._click.exceptions import ClickException
    except ImportError:  # pragma: no cover
        from click import ClickException

    command = typer.main.get_command(app)
    try:
        signals.raise_early()  # one that came while this program was loading (aigc_cli/__main__.py)
        result = command.main(args=args, prog_name="aigc", standalone_mode=False)
        # Not raised in standalone_mode=False: an Exit (typer.Exit(n), or Exit(130) that click
        # makes of a KeyboardInterrupt) comes back as its code. Commands themselves return None.
        return result if isinstance(result, int) else 0
    except typer.Exit as e:
        return e.exit_code
    except SystemExit as e:
        if isinstance(e.__context__, BrokenPipeError):  # typer's own answer to EPIPE: exit 1, silently
            return _pipe_closed()
        raise
    except ClickException as e:
        e.show()
        return e.exit_code
    except Interrupted as e:
        if _rank() is None:  # rank 0 says it for all, with the --resume to continue
            _error(e.render(flag), prefix="interrupted")
        return e.exit_code
    except signals.Signalled as e:
        return _signalled(e.signum)
    except (typer.Abort, KeyboardInterrupt):
        _error("interrupted", prefix="aborted")
        return 130
    except BrokenPipeError:
        return _pipe_closed()
    except AigcError as e:
        if common.settings.debug:
            raise
        if _lost_to_signal(e):
            return _signalled(signals.first())
        # Options are named as the flags the user typed. Another rank's failure, or a launcher's
        # whose ranks said why themselves, is not said twice.
        if _rank() is not None and not getattr(e, "rank_local", False):
            # Every rank met it (a bad option, another rank's failure): rank 0 says it. Leave it
            # the time to, before the launcher stops it on seeing this rank exit.
            time.sleep(RANK_GRACE)
        elif not getattr(e, "said", False):
            _error(_ranked(e.render(flag)))
        return getattr(e, "exit_code", 1)  # a launcher's: its ranks' (130/143 after a signal)
    except Exception as e:  # an unexpected error still gets one line, unless --debug
        if common.settings.debug:
            raise
        from aigc_cli.core.distributed import launched, lost_rank

        if _lost_to_signal(e):
            return _signalled(signals.first())
        lost = lost_rank(e) if launched() else None
        _error(_ranked(f"lost another rank ({lost})" if lost else
                       f"{type(e).__name__}: {e} (run with --debug for the traceback)"))
        return 1


def _signalled(signum: int) -> int:
    """SIGINT/SIGTERM ended the command: one line, by rank 0 alone when there are several (a
    Ctrl-C reaches every rank of a launch; the launcher says nothing, see training/launch.py)."""
    from aigc_cli.core.signals import Signalled

    e = Signalled(signum)
    if _rank() is None:
        _error(f"{e} (signal {signum})", prefix="aborted")
    return e.exit_code


def _lost_to_signal(e: Exception) -> bool:
    """This rank was signalled, then lost another rank: that rank stopped for the same signal
    (a Ctrl-C reaches them all), so the signal is what to say, not the lost connection."""
    from aigc_cli.core import signals
    from aigc_cli.core.distributed import RankError, launched, lost_rank

    return launched() and signals.first() is not None and (isinstance(e, RankError) or lost_rank(e) is not None)


def _pipe_closed() -> int:
    """The reader of stdout went away (`aigc sample RUN | head -c 10`): stop quietly, as a tool
    killed by SIGPIPE does, with its status 141 (docs/cli.md)."""
    try:  # what is still buffered for stdout goes nowhere, so the exit's flush cannot fail again
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
    return PIPE_EXIT


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    from rich.markup import escape

    if common.settings.quiet:
        return
    text = str(message).strip().splitlines()
    line = escape(f"{text[0] if text else ''} ({category.__name__})")
    common.console().print(f"[yellow]warning:[/yellow] {line}", soft_wrap=True)  # one line, never wrapped


def _rank() -> str | None:
    """This process's rank when it is one of several other than rank 0 (torchrun's RANK)."""
    from aigc_cli.core.distributed import launched

    rank = os.environ.get("RANK", "0")
    return rank if launched() and rank != "0" else None


def _ranked(message: str) -> str:
    rank = _rank()
    return f"rank {rank}: {message}" if rank is not None else message


def _error(message: str, prefix: str = "error") -> None:
    from aigc_cli.training.launch import mark_said

    first = message.strip().splitlines()[0] if message.strip() else prefix
    sys.stderr.write(f"aigc: {prefix}: {first}\n")
    sys.stderr.flush()
    mark_said()  # a rank of `aigc train --nproc`: its launcher adds no line of its own
