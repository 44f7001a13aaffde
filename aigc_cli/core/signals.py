"""SIGINT/SIGTERM for every command: one handler, exit 130/143 whatever moment the signal lands.

``install()`` (called once by the CLI's ``main``) makes both signals raise ``Signalled``, a
BaseException: no ``except Exception`` swallows it and click does not turn it into an exit 0.
Two regions change what a signal does:

- ``deferred()`` (a checkpoint save): a signal is held until the block ends, then raised, so a
  save is finished rather than torn (the writes are atomic; finishing keeps the run resumable);
- ``stop_request()`` (the training loop): the first signal only sets ``.signum``, the loop saves
  and stops after its step; a second one is raised at once (or when a deferred save ends).

A signal is raised once: the process is then on its way out, and a further Ctrl-C (a terminal
sends one to every process of the job, and torchrun forwards its own on top) is only counted,
so it cannot interrupt the one line that says why, nor the exit. ``early()`` covers the start
of ``python -m aigc_cli`` (every rank of a launch), before the CLI's handlers are in place.

A handler runs wherever the main thread is, and Python swallows what a weakref callback or a
``__del__`` raises (it prints "Exception ignored in ..." and goes on): an import's module-lock
callback is such a place. Inside ``installed()`` a ``Signalled`` lost that way is not printed but
delivered again, by a signal to this process, so it is raised in ordinary code a moment later.
"""

from __future__ import annotations

import _thread
import contextlib
import os
import signal
import sys
import threading
import time
from typing import Iterator

NAMES = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}


class Signalled(BaseException):
    """SIGINT or SIGTERM arrived; ``exit_code`` is 128 + the signal number (130, 143)."""

    def __init__(self, signum: int):
        super().__init__(NAMES.get(signum) or _name(signum))  # a launcher's: torchrun forwards SIGHUP too
        self.signum = signum
        self.exit_code = 128 + signum


def _name(signum: int) -> str:
    try:
        return f"stopped by {signal.Signals(signum).name}"
    except ValueError:
        return f"stopped by signal {signum}"


class StopRequest:
    def __init__(self, hold: bool = False):
        self.signum: int | None = None
        self.hold = hold  # further signals are only counted (see stop_request)


_state = {"depth": 0, "pending": None, "stop": None, "count": 0, "first": None, "raised": False,
          "early": None}


def _handle(signum, frame):
    _count(signum)
    if _state["raised"]:
        return  # already on the way out (see the module's docstring)
    stop = _state["stop"]
    if stop is not None and (stop.signum is None or stop.hold):
        stop.signum = stop.signum or signum  # the loop stops after this step
        return
    if _state["depth"]:
        _state["pending"] = _state["pending"] or signum  # raised when the save ends
        return
    if _inside(frame, _unraisable.__code__):
        _state["count"] -= 1
        return _deliver_again(signum)  # raised here, it would be swallowed once more
    _raise(signum)


def _inside(frame, code) -> bool:
    while frame is not None:
        if frame.f_code is code:
            return True
        frame = frame.f_back
    return False


def _deliver_again(signum: int) -> None:
    # A C-level thread: threading.Thread.start would wait in Python, where the signal can land.
    _thread.start_new_thread(_kill_soon, (signum,))


def _kill_soon(signum: int) -> None:
    time.sleep(0.001)  # let the main thread leave the hook first (_handle checks it did)
    os.kill(os.getpid(), signum)


def _count(signum: int) -> None:
    _state["count"] += 1
    _state["first"] = _state["first"] or signum


def _raise(signum: int) -> None:
    _state["raised"] = True
    raise Signalled(signum)


def _unraisable(unraisable) -> None:
    """sys.unraisablehook inside ``installed()``: see the module's docstring."""
    exc = unraisable.exc_value
    if not isinstance(exc, Signalled):
        return _previous_hook(unraisable)
    _state["raised"] = False  # it was never raised where anyone could see it
    _state["count"] -= 1  # the same signal, not another
    _deliver_again(exc.signum)


_previous_hook = sys.__unraisablehook__


def _remember(signum, frame):
    _count(signum)
    _state["early"] = _state["early"] or signum  # raise_early() raises it


def received() -> int:
    """How many signals arrived so far (the test pause points wait for the next one)."""
    return _state["count"]


def first() -> int | None:
    """The first signal this process received (None: none). A failure after it, such as another
    rank closing its connection as it stops for the same Ctrl-C, is the signal's doing."""
    return _state["first"]


def early() -> None:
    """From the first line of ``python -m aigc_cli`` until ``installed()``: a signal is only
    remembered, and ``raise_early()`` raises it. Python's own handling would print a
    KeyboardInterrupt traceback for SIGINT, or end the process without a word for SIGTERM: what
    a rank that was starting up did when a Ctrl-C reached the whole launch."""
    if _main_thread():
        for s in NAMES:
            signal.signal(s, _remember)


def raise_early() -> None:
    """Raise the signal ``early()`` remembered, if one came (the CLI's first step, inside the
    ``installed()`` block and the handling that says it)."""
    signum, _state["early"] = _state["early"], None
    if signum is not None:
        _raise(signum)


def settle() -> None:
    """From here on signals are only counted: the command is over and the process is exiting
    with its code (main calls this before leaving the process group)."""
    _state["raised"] = True


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def _handling(action) -> Iterator[bool]:
    """SIGINT and SIGTERM go to ``action`` inside the block, the old handlers come back after;
    yields whether it could (only the main thread sets handlers)."""
    if not _main_thread():
        yield False
        return
    old = {s: signal.signal(s, action) for s in NAMES}
    try:
        yield True
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@contextlib.contextmanager
def installed() -> Iterator[None]:
    """SIGINT and SIGTERM raise ``Signalled`` inside the block; the old handlers come back after."""
    global _previous_hook
    with _handling(_handle) as handled:
        if not handled:
            yield
            return
        _state.update(raised=False, first=_state["early"])
        _previous_hook, sys.unraisablehook = sys.unraisablehook, _unraisable
        try:
            yield
        finally:
            sys.unraisablehook = _previous_hook


@contextlib.contextmanager
def fatal() -> Iterator[None]:
    """Inside the block SIGINT and SIGTERM end the process at once, without a word (their
    default action). For a wait in C++ that does not come back to Python, where a handler would
    run only after it: joining the process group waits for every rank, and a rank that stopped
    for the same Ctrl-C never comes (the launcher then says the one line, training/launch.py)."""
    with _handling(signal.SIG_DFL):
        yield


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
        _raise(signum)


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
