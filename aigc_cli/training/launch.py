"""``aigc train <family> ... --nproc N``: the same command on N processes of this machine,
started through torchrun's own launcher (``torch.distributed.run``), as if the user had typed
``torchrun --standalone --nproc-per-node N -m aigc_cli train <family> ...``.

The launcher itself trains nothing: it starts the ranks, forwards a SIGINT/SIGTERM to them
(torchrun's agent does), waits, and turns their ending into one exit code.
"""

from __future__ import annotations

import logging
import os

from aigc_cli.core.errors import AigcError


class LaunchFailed(AigcError):
    """The ranks failed; ``said``: each failed rank printed its own one-line error already."""

    def __init__(self, message: str, exit_code: int = 1, said: bool = False):
        super().__init__(message)
        self.exit_code = exit_code
        self.said = said


def threads_per_rank(nproc: int) -> int:
    """CPU threads for each rank: the cores shared out (torchrun's own default is 1)."""
    return max(1, (os.cpu_count() or 1) // nproc)


def launch(nproc: int, argv: list[str], debug: bool = False) -> None:
    """Run ``python -m aigc_cli *argv`` on ``nproc`` local ranks; returns when all succeeded,
    else raises LaunchFailed with the exit code to end with (130/143 after a signal)."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    os.environ.setdefault("OMP_NUM_THREADS", str(threads_per_rank(nproc)))
    if not debug:  # the ranks say what went wrong in one line each; the agent's log repeats it at length
        logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    args = get_args_parser().parse_args(
        ["--standalone", "--nproc-per-node", str(nproc), "--max-restarts", "0", "--module", "aigc_cli", *argv]
    )
    try:
        run(args)
    except SignalException as e:  # the launcher was signalled; the ranks had it forwarded, and rank 0 said so
        raise LaunchFailed(f"stopped by signal {int(e.sigval)}", exit_code=128 + int(e.sigval), said=True) from None
    except ChildFailedError as e:
        codes = {rank: f.exitcode for rank, f in e.failures.items()}
        # Ranks that exit with 1, 130 or 143 printed why; one killed (-9) or crashed did not, and
        # those the launcher itself terminated (-15) after the first failure have nothing to say.
        said = all(code in (1, 130, 143, -15) for code in codes.values()) and \
            any(code in (1, 130, 143) for code in codes.values())
        raise LaunchFailed(describe_failures(codes), exit_code=exit_code(codes.values()), said=said) from None


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
        return f"killed by signal {-code}" if code < 0 else f"exit code {code}"

    first = {rank: code for rank, code in codes.items() if code != -15} or codes
    return "; ".join(f"rank {rank}: {say(code)}" for rank, code in sorted(first.items()))
