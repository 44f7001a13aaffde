"""Training progress on stderr: a rich bar with losses and images/s, or plain lines for logs."""

from __future__ import annotations

import contextlib
import time
from typing import Callable, Iterator

from aigc_cli.cli import common
from aigc_cli.core.options import format_duration


def _fmt(metrics: dict[str, float]) -> str:
    parts = [f"{k} {v:.3f}" for k, v in metrics.items() if not k.endswith("_per_s")]
    if "images_per_s" in metrics:
        parts.append(f"{metrics['images_per_s']:.0f} img/s")
    if "tokens_per_s" in metrics:
        parts.append(f"{metrics['tokens_per_s']:.0f} tok/s")
    return "  ".join(parts)


class RichProgress:
    """Implements training.loop.ProgressSink."""

    def __init__(self):
        self.bar = None
        self.task = None
        self.plain = not common.console().is_terminal
        self.last_print = 0.0
        self.deadline: float | None = None

    def start(self, total_steps: int, done_steps: int, description: str, deadline: float | None = None) -> None:
        self.deadline = deadline
        if common.settings.quiet:
            return
        if self.plain:
            budget = f", or until {format_duration(deadline - time.monotonic())} have passed" if deadline else ""
            common.info(f"{description}: training {total_steps} steps (from step {done_steps}){budget}")
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeRemainingColumn(), TextColumn("{task.fields[stats]}"),
            console=common.console(), transient=False,
        )
        self.bar.start()
        self.task = self.bar.add_task(description, total=total_steps, completed=done_steps, stats="")

    def update(self, step: int, metrics: dict[str, float]) -> None:
        if common.settings.quiet:
            return
        if self.bar is not None:
            self.bar.update(self.task, completed=step, stats=self._budget() + _fmt(metrics))
        elif time.monotonic() - self.last_print > 10:  # logs: a line every 10 s at most
            self.last_print = time.monotonic()
            common.info(f"step {step}  {self._budget()}{_fmt(metrics)}")

    def _budget(self) -> str:
        # The bar's own time column estimates the epochs' end; a --time budget may come first.
        if self.deadline is None:
            return ""
        return f"budget {format_duration(self.deadline - time.monotonic())} left  "

    def epoch_end(self, epoch: int, epochs: int, previews: list[str]) -> None:
        if common.settings.quiet:
            return
        self.message(f"epoch {epoch}/{epochs} done; samples in {previews[0]}" if previews else f"epoch {epoch}/{epochs} done")

    def message(self, text: str) -> None:
        if common.settings.quiet:
            return
        if self.bar is not None:
            self.bar.console.print(text)
        else:
            common.info(text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


@contextlib.contextmanager
def passes_bar(description: str) -> Iterator[Callable[[int, int], None] | None]:
    """A transient bar over a generation's network passes (a diffusion sampler's steps, batch by
    batch), for ``Generator.generate(progress=...)``; None when quiet or stderr is no terminal."""
    if common.settings.quiet or not common.console().is_terminal:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeRemainingColumn(), console=common.console(), transient=True)
    task = bar.add_task(description, total=None)
    with bar:
        yield lambda done, total: bar.update(task, completed=done, total=total)
