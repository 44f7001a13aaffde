"""``aigc train <family> ... --nproc N``: the same command on N processes of this machine,
started through torchrun's own launcher (``torch.distributed.run``), as if the user had typed
``torchrun --standalone --nproc-per-node N -m aigc_cli train <family> ...``.

The launcher itself trains nothing: it starts the ranks, forwards a SIGINT/SIGTERM to them
(torchrun's agent does), waits, and turns their ending into one exit code and at most one line:
torchrun's agent is silenced, rank 0 says why the ranks stopped, and the launcher speaks only
when no rank did (each rank that prints its line tells it so through a file, ``mark_said``).
Every check that needs no rank was made before any starts (cli/train.py's preflight).
"""

from __future__ import annotations

import logging
import os
import warnings

from aigc_cli.core.errors import AigcError


class LaunchFailed(AigcError):
    """The ranks failed; ``said``: each failed rank printed its own one-line error already."""

    def __init__(self, message: str, exit_code: int = 1, said: bool = False):
        super().__init__(message)
        self.exit_code = exit_code
        self.said = said


SAID_ENV = "AIGC_LAUNCH_SAID"  # a file a rank creates once it has printed its line (mark_said)


def threads_per_rank(nproc: int) -> int:
    """CPU threads for each rank: the cores shared out (torchrun's own default is 1)."""
    return max(1, (os.cpu_count() or 1) // nproc)


def launch(nproc: int, argv: list[str], debug: bool = False) -> None:
    """Run ``python -m aigc_cli *argv`` on ``nproc`` local ranks; returns when all succeeded,
    else raises LaunchFailed with the exit code to end with (130/143 after a signal), or
    Signalled when the launcher was signalled and no rank said so."""
    import shutil
    import tempfile

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    from aigc_cli.core.signals import Signalled

    os.environ.setdefault("OMP_NUM_THREADS", str(threads_per_rank(nproc)))
    if not debug:
        # The ranks say what went wrong, in one line; the agent's log repeats it at length, and
        # warns of every signal it forwards. Its loggers set their own levels and torch gives
        # them a handler of its own, so a parent's level does not silence them: this process
        # logs nothing else, and --debug keeps it all.
        logging.disable(logging.CRITICAL)
        warnings.filterwarnings("ignore", module=r"torch\.distributed")
    args = get_args_parser().parse_args(
        ["--standalone", "--nproc-per-node", str(nproc), "--max-restarts", "0", "--module", "aigc_cli", *argv]
    )
    folder = tempfile.mkdtemp(prefix="aigc-launch-")
    said = os.path.join(folder, "said")
    os.environ[SAID_ENV] = said  # the ranks inherit it
    try:
        run(args)
    except SignalException as e:  # the ranks had it forwarded; rank 0 says so, unless it could not
        signum = int(e.sigval)
        if not os.path.exists(said):  # stopped while it was joining the others, or before it could speak
            raise Signalled(signum) from None
        raise LaunchFailed(f"stopped by signal {signum}", exit_code=128 + signum, said=True) from None
    except ChildFailedError as e:
        codes = {rank: f.exitcode for rank, f in e.failures.items()}
        raise LaunchFailed(describe_failures(codes), exit_code=exit_code(codes.values()),
                           said=os.path.exists(said) and not_killed(codes)) from None
    finally:
        os.environ.pop(SAID_ENV, None)
        shutil.rmtree(folder, ignore_errors=True)


def mark_said() -> None:
    """Under ``--nproc``: tell the launcher that this rank printed a line on stderr (so that the
    launcher adds none of its own). A no-op in any other process."""
    path = os.environ.get(SAID_ENV)
    if path:
        try:
            open(path, "a").close()
        except OSError:
            pass  # the launcher then says it too: two lines, never none


def not_killed(codes: dict[int, int]) -> bool:
    """Every failed rank ended on its own (1, 130, 143) or was terminated by the launcher (-15)
    after the first failure. One killed (-9) or crashed said nothing: the launcher names it."""
    return all(code in (1, 130, 143, -15) for code in codes.values())


def exit_code(codes) -> int:
    """One exit code for the ranks' codes: a signal's (130/143) if a rank stopped for one."""
    codes = list(codes)
    for signalled in (143, 130):
        if signalled in codes:
            return signalled
    return 1


def describe_failures(codes: dict[int, int]) -> str:
    """The failed ranks, leaving out those the launcher terminated after the first failure."""
    def say(code: int) -> str:
        if code in (130, 143):
            return f"stopped by signal {code - 128}"
        return f"killed by signal {-code}" if code < 0 else f"exit code {code}"

    first = {rank: code for rank, code in codes.items() if code != -15} or codes
    return "; ".join(f"rank {rank}: {say(code)}" for rank, code in sorted(first.items()))
