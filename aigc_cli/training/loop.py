"""The training loop shared by every family (behind ``train()``/``resume()`` in run.py).

A family supplies a *task* (modules, parameter groups and one ``train_step``); the loop owns the
optimizers (built from the task's parameter groups: models/optim.py), the data (a
:class:`DataSource`: a dataset's epochs, or batches the task makes itself), logging, previews,
checkpoints, signals and resume. Data order is a pure function of (seed, epoch), and the
checkpoint carries the RNG state, so a resumed run on CPU continues bit-for-bit like one that
was never stopped.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

import torch

from aigc_cli.core.errors import Interrupted, OptionError, TrainingDiverged, WeightsError, first_line, opt
from aigc_cli.core import distributed, signals
from aigc_cli.core.distributed import RankError, lost_rank
from aigc_cli.core.faults import fault_point
from aigc_cli.core.images import captioned_grid, make_grid, png_bytes, to_uint8
from aigc_cli.core.io import atomic_write_bytes, atomic_write_text
from aigc_cli.core.memory import tune_cpu_allocator
from aigc_cli.core.seeding import get_rng_state, keyed_generator, set_rng_state
from aigc_cli.models.protocol import TrainingData, TrainTask
from aigc_cli.models.adapters import saved_state
from aigc_cli.models.common import CaptionedImages
from aigc_cli.runs.checkpoint import load_checkpoint, save_checkpoint, save_weights
from aigc_cli.runs.curves import CURVES, write_curves
from aigc_cli.runs.store import Run
from aigc_cli.training.options import LOG_EVERY
from aigc_cli.training.parallel import DataParallel, agree, local_batchnorm


class ProgressSink(Protocol):
    """Where training reports: the CLI draws a progress bar, the Python API says nothing."""

    def start(self, total_steps: int, done_steps: int, description: str, deadline: float | None = None) -> None:
        """``deadline``: the ``time.monotonic()`` at which a --time budget runs out, if any."""
    def update(self, step: int, metrics: dict[str, float]) -> None: ...
    def epoch_end(self, epoch: int, epochs: int, previews: list[str]) -> None: ...
    def message(self, text: str) -> None: ...
    def close(self) -> None: ...


class NoProgress:
    def start(self, *a): pass
    def update(self, *a): pass
    def epoch_end(self, *a): pass
    def message(self, *a): pass
    def close(self): pass


@dataclass
class LoopConfig:
    epochs: int
    batch_size: int
    seed: int
    log_every: int = LOG_EVERY
    time_budget: float | None = None  # seconds of wall clock for this invocation (--time); None: no limit
    flip: bool = False  # --flip: images of each batch mirrored at random (flip_mask)


def check_loop(loop: LoopConfig, dataset_size: int | None, world: int = 1) -> None:
    """Loop settings the data (or the ranks) can't satisfy: the one check, made by train() before
    it creates the run folder (bad input leaves nothing behind) and by the Trainer for every
    other caller. ``batch_size`` is the global batch, split evenly over ``world`` ranks;
    ``dataset_size`` None: the task makes its own batches."""
    if loop.epochs < 1:
        raise OptionError("epochs", f"must be at least 1, got {loop.epochs}")
    if loop.batch_size < 1:
        raise OptionError("batch_size", f"must be at least 1, got {loop.batch_size}")
    if dataset_size is not None and dataset_size < loop.batch_size:
        raise OptionError("batch_size", f"{loop.batch_size} is more than the dataset's {dataset_size} images")
    if loop.batch_size % world:
        raise OptionError("batch_size", f"{loop.batch_size} does not split evenly over {world} processes; "
                          f"use a multiple of {world}")


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The data order of one epoch, from (seed, epoch) alone: resume needs no saved state for it."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)


def flip_mask(batch_size: int, seed: int, epoch: int, index: int) -> torch.Tensor:
    """(batch_size,) bool: which images of the global batch ``index`` of ``epoch`` are mirrored
    (--flip), from (seed, epoch, index) alone, drawn on the CPU: the same on every device and
    rank count, and a resumed run needs no saved state for it."""
    return torch.rand(batch_size, generator=keyed_generator("aigc-flip", seed, epoch, index)) < 0.5


class DataSource(ABC):
    """Where the loop's batches come from: ``batch(epoch, index, step)`` is this rank's slice of
    the global batch ``index`` of ``epoch`` (the loop's ``step`` counts over epochs)."""

    steps_per_epoch: int
    items: "torch.Tensor | None" = None  # the whole training set on the device, when there is one
    labels: "torch.Tensor | None" = None

    @abstractmethod
    def batch(self, epoch: int, index: int, step: int) -> tuple[torch.Tensor, "torch.Tensor | None"]: ...


class DatasetEpochs(DataSource):
    """A dataset in a seeded order per epoch; a batch is one indexing op, no workers. Every rank
    orders the epoch alike and takes its slice of each global batch, so a memory-mapped dataset
    (data/cache.py) is read by each rank only where its slices lie. In memory, the whole set goes
    to the training device once; mapped, it stays where it is and a GPU is sent each batch."""

    def __init__(self, data: TrainingData, loop: LoopConfig, device: torch.device, rank: int, local_batch: int):
        home = device if device.type == "cpu" or not data.mapped else torch.device("cpu")
        # (N, C, H, W) uint8 images, or a text family's (N, L) token windows; --crop random:
        # (N, C, M, M) images whose random H x W windows train, ``items`` their centre view
        self.items = data.items.to(home)
        self.windows = data.windows.to(home) if data.windows is not None else None
        self.labels = data.labels.to(home) if data.labels is not None else None
        self.home, self.seed, self.batch_size, self.device = home, loop.seed, loop.batch_size, device
        self.lo, self.local_batch = rank * local_batch, local_batch
        self.steps_per_epoch = len(data) // loop.batch_size  # drop the ragged last batch
        self.flip = loop.flip and self.items.ndim == 4  # images only
        self._order: tuple[int, torch.Tensor] | None = None

    def batch(self, epoch: int, index: int, step: int):
        if self._order is None or self._order[0] != epoch:
            self._order = (epoch, epoch_permutation(len(self.items), self.seed, epoch).to(self.home))
        idx = self._order[1][index * self.batch_size : (index + 1) * self.batch_size]
        idx = idx[self.lo : self.lo + self.local_batch]
        rows = slice(self.lo, self.lo + self.local_batch)  # this rank's rows of the global batch's draws
        if self.windows is not None:
            h, w = self.items.shape[-2:]
            top, left = window_offsets(self.batch_size, self.windows.shape[-1] - w + 1, self.seed, epoch, index)
            items = crop_windows(self.windows[idx].to(self.device), top[rows], left[rows], h, w)
        else:
            items = self.items[idx].to(self.device)
        if self.flip:  # applied on the device
            mask = flip_mask(self.batch_size, self.seed, epoch, index)[rows]
            items = torch.where(mask.to(self.device)[:, None, None, None], items.flip(-1), items)
        labels = self.labels[idx].to(self.device) if self.labels is not None else None
        return items, labels


def window_offsets(batch_size: int, positions: int, seed: int, epoch: int, index: int):
    """((batch_size,), (batch_size,)) int64: where each image of the global batch ``index`` of
    ``epoch`` is cropped (--crop random), one of ``positions`` per axis; from (seed, epoch, index)
    alone, as flip_mask: the same on every device and rank count, nothing to save for resume."""
    offsets = torch.randint(positions, (2, batch_size), generator=keyed_generator("aigc-crop", seed, epoch, index))
    return offsets[0], offsets[1]


def crop_windows(images: torch.Tensor, top: torch.Tensor, left: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(B, C, M, M) -> (B, C, h, w): image b's window at (top[b], left[b]), one gather."""
    b, c = images.shape[:2]
    top, left = top.to(images.device), left.to(images.device)
    ys = (top[:, None] + torch.arange(h, device=images.device))[:, None, :, None]  # (B, 1, h, 1)
    xs = (left[:, None] + torch.arange(w, device=images.device))[:, None, None, :]  # (B, 1, 1, w)
    return images[torch.arange(b, device=images.device)[:, None, None, None],
                  torch.arange(c, device=images.device)[None, :, None, None], ys, xs]


class TaskBatches(DataSource):
    """Batches the task makes itself (``TrainTask.make_batch``: from its own samples, say), from
    the seeded random state the checkpoint carries; an epoch is ``steps_per_epoch`` of them."""

    def __init__(self, task: TrainTask, steps_per_epoch: int, local_batch: int):
        if not steps_per_epoch or steps_per_epoch < 1:
            raise ValueError("a task that makes its own batches must say how many make an epoch")
        self.task, self.steps_per_epoch, self.local_batch = task, steps_per_epoch, local_batch

    def batch(self, epoch: int, index: int, step: int):
        return self.task.make_batch(self.local_batch, step)


HORIZON_AFTER = 20  # steps of an invocation with --time before its schedule's end is estimated


class Trainer:
    """Trains ``task`` (a family's TrainTask with its optimizers: ``Family.training_task``) on
    ``data`` into ``run``."""

    def __init__(
        self,
        task: TrainTask,
        data: TrainingData,
        run: Run,
        loop: LoopConfig,
        device: torch.device,
        progress: ProgressSink | None = None,
        evaluate: Callable[[int], dict[str, float]] | None = None,
        eval_every: int = 0,
    ):
        self.rank, self.world = distributed.rank(), distributed.world()
        self.main = self.rank == 0  # rank 0 alone writes files and reports progress
        own_batches = data.items is None
        check_loop(loop, None if own_batches else len(data), self.world)
        tune_cpu_allocator()  # every step frees and reallocates the same activations
        self.task, self.run, self.loop, self.device = task, run, loop, device
        self.progress = (progress or NoProgress()) if self.main else NoProgress()
        self.local_batch = loop.batch_size // self.world  # this rank's slice of each global batch
        # The loop owns optimization: the task comes with the optimizers its parameter groups
        # asked for (Family.training_task, models/optim.py); the loop sets where schedules end.
        self.optim = task.optim
        # Several ranks: gradients averaged, BatchNorm over the global batch (training/parallel.py).
        self.parallel = (DataParallel(task.modules, {n: o.optimizer for n, o in self.optim.items()})
                         if self.world > 1 else None)
        self.evaluate, self.eval_every = evaluate, eval_every
        self.source: DataSource = (TaskBatches(task, data.steps_per_epoch, self.local_batch) if own_batches
                                   else DatasetEpochs(data, loop, device, self.rank, self.local_batch))
        self.held_out = data.held_out  # scored by the task's validate() after every epoch
        self.rate_key, self.per_item = f"{data.unit}_per_s", data.per_item
        self.steps_per_epoch = self.source.steps_per_epoch
        self.epoch, self.step_in_epoch, self.step, self.elapsed = 0, 0, 0, 0.0
        self._synced_step: int | None = None
        self.deadline: float | None = None  # time.monotonic() when the --time budget runs out
        self.out_of_time = False
        self.horizon = loop.epochs * self.steps_per_epoch  # where learning-rate schedules end
        self._set_horizon(self.horizon)

    def _set_horizon(self, horizon: int) -> None:
        self.horizon = max(int(horizon), 1)
        for o in self.optim.values():
            o.horizon = self.horizon

    def _estimate_horizon(self, started: float, steps: int) -> None:
        """With --time: the schedules end where the budget is expected to, at the rate measured
        so far in this invocation (epoch ends included), never past the last epoch."""
        if self.deadline is None or steps < 1:
            return
        per_step = (time.monotonic() - started) / steps
        left = max(self.deadline - time.monotonic(), 0.0)
        self._set_horizon(min(self.loop.epochs * self.steps_per_epoch, self.step + int(left / max(per_step, 1e-9))))

    # -- state ---------------------------------------------------------------------------------
    def save(self) -> None:
        # A signal during the save is held until it ends: never a half-saved run (core/signals.py).
        # Rank 0 writes; the others wait for it, so that nobody reads a checkpoint being written.
        if self.main:
            with signals.deferred():
                self._save()
        distributed.barrier()

    def update_meta(self, **fields) -> None:
        """run.json's fields, written by rank 0 alone."""
        if self.main:
            self.run.update_meta(**fields)

    def _save(self) -> None:
        state = {
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "step": self.step,
            "elapsed": self.elapsed,
            "task": self.task.extra_state(),
            "optim": {name: o.state() for name, o in self.optim.items()},
        }
        self._sync_inference()
        # A module with LoRA adapters is saved as its adapters (its base is the parent run's).
        save_weights(self.run.weights_path, self.task.inference_modules(), {"run": self.run.id, "step": self.step},
                     state=saved_state)
        save_checkpoint(
            self.run.checkpoint_path, self.task.modules, {n: o.optimizer for n, o in self.optim.items()}, {
                f"rng.{k}": v for k, v in get_rng_state().items()
            }, state, module_state=saved_state,
        )
        self.run.update_meta(epoch=self.epoch, step=self.step)

    def restore(self) -> None:
        extra, state = load_checkpoint(self.run.checkpoint_path, self.task.modules,
                                       {n: o.optimizer for n, o in self.optim.items()}, saved_state)
        try:
            set_rng_state({k[len("rng."):]: v for k, v in extra.items() if k.startswith("rng.")})
        except (RuntimeError, KeyError, TypeError, ValueError) as e:
            raise WeightsError(f"{self.run.checkpoint_path.name}: the saved random state is unusable "
                               f"({first_line(e)})") from None
        for key in ("epoch", "step_in_epoch", "step"):
            value = state.get(key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise WeightsError(f"{self.run.checkpoint_path.name}: the saved progress has a bad {key!r}: {value!r}")
        if state["step_in_epoch"] > self.steps_per_epoch:
            raise WeightsError(f"{self.run.checkpoint_path.name}: the saved progress does not fit this run's epochs")
        self.epoch, self.step_in_epoch = state["epoch"], state["step_in_epoch"]
        self.step, self.elapsed = state["step"], float(state.get("elapsed", 0.0))
        try:
            task_state = state.get("task") or {}
            optim_state = state.get("optim") or {}
            if "scaler" in task_state and len(self.optim) == 1:  # format 1: the task kept its one loss scale
                optim_state = {next(iter(self.optim)): {"scaler": task_state.pop("scaler")}}
            for name, o in self.optim.items():
                o.load_state(optim_state.get(name) or {})
            self.task.load_extra_state(task_state)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise WeightsError(f"{self.run.checkpoint_path.name}: the saved training state is unusable "
                               f"({first_line(e)})") from None
        if self.main:
            self.truncate_metrics()

    def truncate_metrics(self) -> None:
        # Lines logged after the checkpoint will be logged again by the resumed run.
        rows = [r for r in self.run.read_metrics() if r.get("step", 0) <= self.step]
        atomic_write_text(self.run.metrics_path, "".join(json.dumps(r) + "\n" for r in rows))

    # -- loop ----------------------------------------------------------------------------------
    def fit(self) -> None:
        loop = self.loop
        total = loop.epochs * self.steps_per_epoch
        self.update_meta(status="running", epochs=loop.epochs, stopped=None, world_size=self.world)
        # The budget counts from here: loading the data and building the model are not training.
        if loop.time_budget is not None:
            self.deadline = time.monotonic() + loop.time_budget
        self.started, self.first_step = time.monotonic(), self.step
        self.progress.start(total, self.step, self.run.id, self.deadline)
        # Rank 0 alone writes the metrics; the others' rows go nowhere.
        metrics_file = open(self.run.metrics_path if self.main else os.devnull, "a", encoding="utf-8")
        try:
            with signals.stop_request(hold=self.world > 1) as stop:
                while self.epoch < loop.epochs and not self.out_of_time:
                    self._run_epoch(stop, metrics_file)
                finished_by = stop.signum  # a signal during the last save: the run is whole anyway
        except RuntimeError as e:
            lost = lost_rank(e) if self.world > 1 else None
            if lost:
                raise RankError(f"lost another rank at step {self.step} ({lost}); the checkpoint of "
                                f"epoch {self.epoch} is kept, continue with --resume") from e
            raise
        finally:
            metrics_file.close()
            self.progress.close()
        if self.out_of_time and self.main:
            with self._preview_file(self.run.path / CURVES):
                write_curves(self.run)  # the epoch's end did not come: draw what the budget gave
        # Stopped by --time: as complete as the budget allowed; --resume trains on from here.
        self.update_meta(status="completed", epoch=self.epoch, step=self.step,
                   stopped="time" if self.out_of_time else None)
        if self.out_of_time:
            self.progress.message(f"{self.run.id}: the --time budget ran out at step {self.step} "
                                  f"(epoch {self.epoch} + {self.step_in_epoch} steps); saved")
        if finished_by is not None:
            raise Interrupted(f"{self.run.id} completed as the signal came", exit_code=128 + finished_by)

    def _run_epoch(self, stop: signals.StopRequest, metrics_file) -> None:
        loop = self.loop
        window_start, window_images = time.perf_counter(), 0
        while self.step_in_epoch < self.steps_per_epoch:
            t0 = time.perf_counter()
            batch, labels = self.source.batch(self.epoch, self.step_in_epoch, self.step)
            losses = self.task.train_step(batch, labels, self.step)
            values = {k: float(v) for k, v in losses.items()}  # one sync per step: cheap at this size
            self.step += 1
            self.step_in_epoch += 1
            fault_point("step")
            if self.step - self.first_step == HORIZON_AFTER:
                self._estimate_horizon(self.started, HORIZON_AFTER)
            out_of_time = self.deadline is not None and time.monotonic() >= self.deadline
            # Several ranks: the losses averaged, and a stop that any rank heard (or rank 0's
            # clock) taken by all after this same step.
            values, stop_signum, self.out_of_time = agree(values, stop.signum, out_of_time, self.device)
            self.elapsed += time.perf_counter() - t0
            window_images += loop.batch_size * self.per_item
            if not all(math.isfinite(v) for v in values.values()):
                self._diverged(values)
            if (self.step % loop.log_every == 0 or self.step_in_epoch == self.steps_per_epoch
                    or self.out_of_time):
                rate = window_images / max(time.perf_counter() - window_start, 1e-9)
                row = {"step": self.step, "epoch": self.epoch + 1, self.rate_key: round(rate, 1), **values,
                       **self._rates()}
                metrics_file.write(json.dumps(row) + "\n")
                metrics_file.flush()
                window_start, window_images = time.perf_counter(), 0
                self.progress.update(self.step, {**values, self.rate_key: rate})
            if stop_signum is not None:
                metrics_file.flush()
                try:
                    self.save()
                except signals.Signalled:
                    pass  # a second signal during this save: the save finished; stop as asked
                self.update_meta(status="interrupted")
                code = 130 if stop_signum == signal.SIGINT else 143
                raise Interrupted(f"{self.run.id} stopped at step {self.step}", exit_code=code, run_id=self.run.id)
            if self.out_of_time and self.step_in_epoch < self.steps_per_epoch:
                self.save()  # mid-epoch: the checkpoint holds the place in the epoch's order
                self._validate(metrics_file)  # what the budget gave, scored as an epoch's end is
                return
        self.epoch += 1
        self.step_in_epoch = 0
        # The checkpoint first: a preview that cannot be written costs a warning, never the epoch.
        self.save()
        previews = self._write_previews() if self.main else []
        self._validate(metrics_file)
        self.progress.epoch_end(self.epoch, loop.epochs, previews)
        if self.evaluate is not None and self.eval_every and self.epoch % self.eval_every == 0:
            extra = self.evaluate(self.epoch)  # every rank: sampling and features are split over them
            if extra:
                metrics_file.write(json.dumps({"step": self.step, "epoch": self.epoch, **extra}) + "\n")
                metrics_file.flush()
        if self.main:
            with self._preview_file(self.run.path / CURVES):
                write_curves(self.run)  # curves.png: the losses (and FID) so far, for a look while it trains
        self._estimate_horizon(self.started, self.step - self.first_step)

    def _rates(self) -> dict[str, float]:
        """The learning rate of each optimizer with a schedule, as it stepped last (``lr``, or
        ``lr_<name>`` when there are several), for metrics.jsonl."""
        scheduled = {n: o for n, o in self.optim.items() if o.spec.schedule is not None}
        return {("lr" if len(scheduled) == 1 else f"lr_{n}"): o.optimizer.param_groups[0]["lr"]
                for n, o in scheduled.items()}

    def _validate(self, metrics_file) -> None:
        """The held-out scores of the weights just saved (a text family's loss), beside the
        training losses; rank 0 alone."""
        if not self.main or self.held_out is None:
            return
        scores = self.task.validate(self.held_out.to(self.device))
        if scores:
            metrics_file.write(json.dumps({"step": self.step, "epoch": self.epoch, **scores}) + "\n")
            metrics_file.flush()
            self.progress.message(f"epoch {self.epoch}: " + ", ".join(f"{k} {v:.4f}" for k, v in scores.items()))

    def _sync_inference(self) -> None:
        # Previews and save() both need it at the end of an epoch: once per step is enough.
        if self._synced_step != self.step:
            with local_batchnorm():  # rank 0 alone: no other rank to average statistics with
                self.task.sync_inference(self.source.items, self.source.labels)
            self._synced_step = self.step

    def _write_previews(self) -> list[str]:
        self._sync_inference()
        paths = []
        for name, preview in self.task.previews().items():
            if isinstance(preview, str):  # a text family's continuations
                path = self.run.samples_dir / f"{name}_epoch{self.epoch:03d}.txt"
                data = preview.encode("utf-8")
            else:
                path = self.run.samples_dir / f"{name}_epoch{self.epoch:03d}.png"
                if isinstance(preview, CaptionedImages):  # a captioned run's: each prompt under its image
                    grid = captioned_grid(to_uint8(preview.images), preview.captions)
                else:
                    grid = make_grid(to_uint8(preview))
                data = png_bytes(grid, {"aigc:run": self.run.id, "aigc:epoch": str(self.epoch)})
            with self._preview_file(path):
                atomic_write_bytes(path, data)
                paths.append(str(path))
        return paths

    @contextlib.contextmanager
    def _preview_file(self, path: Path):
        """A preview (or curves.png) that cannot be written is a one-line warning, not a failed run:
        the epoch it shows is saved already."""
        try:
            yield
        except OSError as e:
            self.progress.message(f"warning: {unwritable(self.run, path, e)}; training goes on")

    def _diverged(self, values: dict[str, float]) -> None:
        bad = ", ".join(f"{k}={v}" for k, v in values.items() if not math.isfinite(v))
        kept = f"the weights of epoch {self.epoch} are kept" if self.epoch else "no weights were saved"
        error = TrainingDiverged(f"training diverged at step {self.step} ({bad}); {kept}; try a lower {opt('lr')}")
        self.update_meta(status="failed", error=str(error))
        raise error


def unwritable(run: Run, path: Path, e: OSError) -> str:
    """Why ``path`` in ``run``'s folder could not be written, for a warning: "run3/samples is a
    file, not a folder" rather than "[Errno 20] Not a directory"."""
    folder = path.parent
    name = run.id if folder == run.path else f"{run.id}/{folder.relative_to(run.path)}"
    if folder.exists() and not folder.is_dir():
        why = f"{name} is a file, not a folder (move it away to get previews again)"
    elif not folder.exists():
        why = f"{name} is missing (make the folder again to get previews)"
    else:
        why = e.strerror or first_line(e)
    return f"{run.id}: {path.name} was not written: {why}"
