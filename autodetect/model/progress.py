"""Training progress, one row per epoch, without TensorFlow: who listens, and how a row reads.

``train_callbacks.EpochReporter`` hands each epoch's row to the run's ``progress`` callback and to
every listener of this process (``listening``): the demo runs training on an in-process worker and
shows its epochs this way. A row carries ``phase``, ``phase_epoch`` of ``phase_epochs``, ``epoch`` of
``planned_epochs`` (all phases), ``budget_s`` (the phase's share of the time budget; 0: none),
``accuracy``, ``val_accuracy``, ``loss``, ``val_loss``, ``seconds`` and ``eta_s`` (time left, estimated)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)

Listener = Callable[[dict], None]
_listeners: list[Listener] = []
_lock = threading.Lock()


@contextmanager
def listening(listener: Listener) -> Iterator[None]:
    """``listener`` receives every epoch row of this process while the block runs."""
    with _lock:
        _listeners.append(listener)
    try:
        yield
    finally:
        with _lock:
            _listeners.remove(listener)


def publish(row: dict) -> None:
    with _lock:
        listeners = list(_listeners)
    for listener in listeners:
        try:
            listener(dict(row))
        except Exception:  # noqa: BLE001 - a display never stops training
            log.exception("training progress listener failed")


def describe_epoch(row: dict) -> str:
    """One line: ``head  epoch 3/8 (of a 60 s budget)  acc 0.612  val_acc 0.580  loss 1.234 ...  ~41 s left``."""
    of = f"{row.get('phase_epoch', row.get('epoch'))}/{row.get('phase_epochs') or row.get('planned_epochs', '?')}"
    budget = f" (within {row['budget_s']:.0f} s)" if row.get("budget_s") else ""
    parts = [f"{row.get('phase', 'train'):<8} epoch {of}{budget}"]
    for key, label in (("accuracy", "acc"), ("val_accuracy", "val_acc"), ("loss", "loss"), ("val_loss", "val_loss")):
        if isinstance(row.get(key), float):
            parts.append(f"{label} {row[key]:.3f}")
    if isinstance(row.get("seconds"), float):
        parts.append(f"{row['seconds']:.1f} s")
    if isinstance(row.get("eta_s"), float):
        parts.append(f"~{row['eta_s']:.0f} s left")
    return "  ".join(parts)
