"""SIGINT/SIGTERM for every command: one handler, exit 130/143 whatever moment the signal lands.

``install()`` (called once by the CLI's ``main``) makes both signals raise ``Signalled``, a
BaseException: no ``except Exception`` swallows it and click does not turn it into an exit 0.
Two regions change what a signal does:

- ``deferred()`` (a checkpoint save): a signal is held until the block ends, then raised, so a
  save is finished rather than torn (the writes are atomic; finishing keeps the run resumable);
- ``stop_request()`` (the training loop): the first signal only sets ``.signum``, the loop saves
  and stops after its step; a second one is raised at once (or when a deferred save ends).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

NAMES = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}


class Signalled(BaseException):
    """SIGINT or SIGTERM arrived; ``exit_code`` is 128 + the signal number (130, 143)."""

    def __init__(self, signum: int):
        super().__init__(NAMES.get(signum, f"signal {signum}"))
        self.signum = signum
        self.exit_code = 128 + signum


class StopRequest:
    def __init__(self, hold: bool = False):
        self.signum: int | None = None
        self.hold = hold  # further signals are only counted (see stop_request)


_state = {"depth": 0, "pending": None, "stop": None, "count": 0}


def _handle(signum, frame):
    _state["count"] += 1
    stop = _state["stop"]
    if stop is not None and (stop.signum is None or stop.hold):
        stop.signum = stop.signum or signum  # the loop stops after this step
        return
    if _state["depth"]:
        _state["pending"] = _state["pending"] or signum  # raised when the save ends
        return
    raise Signalled(signum)


def received() -> int:
    """How many signals arrived so far (the test pause points wait for the next one)."""
    return _state["count"]


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def installed() -> Iterator[None]:
    """SIGINT and SIGTERM raise ``Signalled`` inside the block; the old handlers come back after."""
    if not _main_thread():
        yield
        return
    old = {s: signal.signal(s, _handle) for s in NAMES}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold signals until the block ends (only where ``installed`` handlers are in place)."""
    _state["depth"] += 1
    try:
        yield
    finally:
        _state["depth"] -= 1
    if not _state["depth"] and _state["pending"] is not None:
        signum, _state["pending"] = _state["pending"], None
        raise Signalled(signum)


@contextlib.contextmanager
def stop_request(hold: bool = False) -> Iterator[StopRequest]:
    """The first signal inside the block sets ``.signum`` instead of raising. Works without the
    CLI too (the Python API): the handlers are installed for the block when on the main thread.

    ``hold``: later signals are only counted, not raised. Distributed training holds them: a
    Ctrl-C reaches every rank and the launcher, which forwards it once more, and a rank that
    raised would leave the others waiting in a collective instead of saving with them."""
    stop, outer = StopRequest(hold), _state["stop"]
    _state["stop"] = stop
    try:
        if _main_thread() and signal.getsignal(signal.SIGINT) is not _handle:
            with installed():
                yield stop
        else:
            yield stop
    finally:
        _state["stop"] = outer
