"""``python -m aigc_cli`` (what torchrun starts on every rank) and the ``aigc`` command.

Signals are caught from the first line: a Ctrl-C that reaches a process still importing is
remembered and said by ``main`` in one line, not as a KeyboardInterrupt traceback (core/signals.py).
"""

from aigc_cli.core.faults import fault_point
from aigc_cli.core.signals import early

early()
fault_point("start")  # tests/test_signals.py: a signal before the CLI has loaded

from aigc_cli.cli.app import main  # noqa: E402  (after early(): importing it takes a while)

if __name__ == "__main__":
    main()
