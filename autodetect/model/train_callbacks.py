"""Keras callbacks of a training phase (imports TensorFlow/Keras): learning-rate schedule, time budget,
late early stopping and the per-epoch report."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import keras

from autodetect.model.progress import publish

Progress = Callable[[dict], None]


class CosineSchedule(keras.callbacks.Callback):
    """Learning rate per step: linear warm-up, then cosine decay to ``floor * base``.

    Progress is the larger of steps done / planned steps and seconds spent / the phase's budget, so
    the decay spans the time budget when one is set (epochs are unknown in advance).
    """

    def __init__(self, base_lr: float, total_steps: int, budget_s: float = 0.0, warmup: float = 0.03, floor: float = 0.01):
        super().__init__()
        self.base_lr, self.total_steps, self.budget_s = base_lr, max(1, total_steps), budget_s
        self.warmup, self.floor = warmup, floor
        self.step = 0
        self.start = 0.0
        self.lr = base_lr

    def progress(self) -> float:
        p = self.step / self.total_steps
        if self.budget_s > 0:
            p = max(p, (time.monotonic() - self.start) / self.budget_s)
        return min(1.0, p)

    def on_train_begin(self, logs=None):
        self.start = time.monotonic()
        self.step = 0

    def on_train_batch_begin(self, batch, logs=None):
        p = self.progress()
        if self.warmup > 0 and p < self.warmup:
            lr = self.base_lr * max(p / self.warmup, 0.02)
        else:
            q = (p - self.warmup) / max(1e-9, 1 - self.warmup)
            lr = self.base_lr * (self.floor + (1 - self.floor) * 0.5 * (1 + math.cos(math.pi * q)))
        self.lr = lr
        self.model.optimizer.learning_rate = lr

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1


class TimeBudget(keras.callbacks.Callback):
    """Stops before an epoch that would end after ``deadline`` (monotonic seconds); hard stop at it."""

    def __init__(self, deadline: float):
        super().__init__()
        self.deadline = deadline
        self.stopped = False
        self.epoch_start = self.first_batch_end = self.last_batch_end = 0.0
        self.batches = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_start = time.monotonic()
        self.batches = 0

    def on_train_batch_end(self, batch, logs=None):
        now = time.monotonic()
        self.batches += 1
        if self.batches == 1:
            self.first_batch_end = now
        self.last_batch_end = now
        if now >= self.deadline:
            self.stopped = self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        now = time.monotonic()
        duration = now - self.epoch_start
        if self.batches > 1:
            # The first batch carries tracing (and the first epoch fills the cache): leave it out.
            train_s = (self.last_batch_end - self.first_batch_end) * self.batches / (self.batches - 1)
            duration = min(duration, train_s + (now - self.last_batch_end))
        if now + duration > self.deadline:
            self.stopped = self.model.stop_training = True


class LateEarlyStopping(keras.callbacks.EarlyStopping):
    """Early stopping that only starts watching once the schedule's progress reaches ``after``.

    From scratch, the validation loss is noisy while the learning rate is high; stopping then would
    cut the cosine decay short. Best weights are restored at the end, as with EarlyStopping.
    """

    def __init__(self, schedule: CosineSchedule, after: float, **kwargs):
        super().__init__(**kwargs)
        self.schedule, self.after = schedule, after

    def on_epoch_end(self, epoch, logs=None):
        if self.schedule.progress() >= self.after:
            super().on_epoch_end(epoch, logs)


class EpochReporter(keras.callbacks.Callback):
    """Collects each epoch's metrics, with the time left, and hands them to ``progress`` and to this
    process's listeners (``autodetect.model.progress``)."""

    def __init__(self, phase: str, epoch_offset: int, planned: int, images: int, schedule: CosineSchedule, progress: Progress | None):
        super().__init__()
        self.phase, self.offset, self.planned, self.images = phase, epoch_offset, planned, images
        self.schedule, self.progress = schedule, progress
        self.rows: list[dict] = []
        self.t0 = self.t_train_end = 0.0
        self.durations: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self.t0 = self.t_train_end = time.monotonic()

    def on_train_batch_end(self, batch, logs=None):
        self.t_train_end = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        now = time.monotonic()
        seconds, train_seconds = now - self.t0, self.t_train_end - self.t0
        row = {
            "phase": self.phase,
            "epoch": self.offset + epoch + 1,
            "phase_epoch": epoch + 1,
            "planned_epochs": self.planned,
            **{k: float(v) for k, v in (logs or {}).items() if k != "learning_rate"},
            "lr": float(self.schedule.lr),
            "seconds": seconds,  # training and validation
            "images_per_s": self.images / train_seconds if train_seconds > 0 else 0.0,  # training only
            "phase_epochs": self._phase_epochs(),
            "budget_s": float(self.schedule.budget_s),
            "eta_s": self._time_left(epoch + 1, seconds, now),
        }
        self.rows.append(row)
        if self.progress is not None:
            self.progress(dict(row))
        publish(row)

    def _phase_epochs(self) -> int:
        return int((self.params or {}).get("epochs") or self.planned - self.offset)

    def _time_left(self, done: int, seconds: float, now: float) -> float:
        """The epochs left in this phase and the later ones at the mean epoch's pace; with a time
        budget, at most what is left of this phase's share and the later phases' shares."""
        self.durations.append(seconds)
        epochs = self._phase_epochs()
        later = max(0, self.planned - self.offset - epochs)
        left = sum(self.durations) / len(self.durations) * (epochs - done + later)
        budget = self.schedule.budget_s
        if budget > 0:
            left = min(left, max(0.0, budget - (now - self.schedule.start)) + budget / max(1, epochs) * later)
        return float(left)
