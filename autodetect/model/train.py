"""Training (imports TensorFlow/Keras): a tf.data pipeline over photo files, then one or two phases.

- Pretrained weights: phase "head" trains the new head with the backbone frozen (its BatchNorm in
  inference mode), then phase "finetune" unfreezes the top ``fine_tune_layers`` layers of the backbone
  (BatchNorm layers stay frozen) at a lower learning rate.
- From scratch (weights "none"): one phase "scratch" of ``epochs_head + epochs_finetune`` epochs at
  ``lr_head``, the whole net trainable, BatchNorm momentum ``bn_momentum`` (0.9: Keras' 0.99 makes the
  moving statistics lag far behind the weights in short runs, and such models evaluate near chance).

Every phase uses AdamW with a cosine learning-rate decay (short linear warm-up) that spans the phase's
epochs, or its share of ``time_budget_s`` when one is set (phases share the budget in proportion to
their epochs; unused time rolls over); then epochs are also cut so that the phase ends within the
budget. Early stopping watches the validation loss (from scratch: only in the second half of the
schedule, while the learning rate is low) and restores the best weights. Those validation numbers
select a model; they are not its result: evaluate the test split (``evaluate.evaluate``).

The tf.data pipeline and augmentation are in ``train_data``, the network (build, freeze, unfreeze,
compile) in ``network``, the callbacks in ``train_callbacks``, ``TrainConfig``/``TrainResult`` in
``train_config`` (re-exported here).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from autodetect.model.backbones import spec
from autodetect.model.network import build_model, compile_model, freeze_backbone, unfreeze_model
from autodetect.model.split import Sample
from autodetect.model.train_callbacks import CosineSchedule, EpochReporter, LateEarlyStopping, Progress, TimeBudget
from autodetect.model.train_config import TrainConfig, TrainResult
from autodetect.model.train_data import cache_location, class_weight_vector, make_dataset

__all__ = ["Progress", "TrainConfig", "TrainResult", "train"]


@dataclass(frozen=True)
class Phase:
    name: str  # "head", "finetune" or "scratch"
    epochs: int
    lr: float
    later_epochs: int  # planned epochs of the phases after this one (they share the time budget)


def plan_phases(config: TrainConfig) -> list[Phase]:
    """Head then fine-tuning with pretrained weights, else one from-scratch phase; phases of 0 epochs dropped."""
    if config.pretrained:
        planned = [("head", config.epochs_head, config.lr_head), ("finetune", config.epochs_finetune, config.lr_finetune)]
    else:
        planned = [("scratch", config.epochs_head + config.epochs_finetune, config.lr_head)]
    planned = [p for p in planned if p[1] > 0]
    return [Phase(name, epochs, lr, sum(p[1] for p in planned[i + 1:])) for i, (name, epochs, lr) in enumerate(planned)]


@dataclass
class PhaseFitter:
    """Fits the phases of one run in turn, with their callbacks; collects history and the stop reason."""

    config: TrainConfig
    train_ds: tf.data.Dataset
    val_ds: tf.data.Dataset | None
    images: int  # training images per epoch
    checkpoint: Path
    deadline: float | None  # monotonic seconds; None: no time budget
    total_epochs: int
    progress: Progress | None = None
    history: list[dict] = field(default_factory=list)
    stopped_by: str = "epochs"  # the last phase's reason

    @property
    def monitor(self) -> str:
        return "val_loss" if self.val_ds is not None else "loss"

    def _time_budget(self, phase: Phase) -> tuple[float, TimeBudget | None] | None:
        """This phase's share of the remaining budget (unused time rolls over) and its callback;
        None when that share leaves no room for the phase."""
        if self.deadline is None:
            return 0.0, None
        remaining = self.deadline - time.monotonic()
        budget = remaining * phase.epochs / (phase.epochs + phase.later_epochs)
        if budget <= 1.0:
            return None
        return budget, TimeBudget(time.monotonic() + budget)

    def fit(self, model: keras.Model, phase: Phase) -> bool:
        """Fit the compiled ``model`` for ``phase``; False (and nothing fitted) when the time budget is spent."""
        timing = self._time_budget(phase)
        if timing is None:
            return False
        budget, timer = timing
        steps = math.ceil(self.images / self.config.batch_size)
        schedule = CosineSchedule(phase.lr, phase.epochs * steps, budget, warmup=self.config.warmup_share)
        reporter = EpochReporter(phase.name, len(self.history), self.total_epochs, self.images, schedule, self.progress)
        stopper = LateEarlyStopping(
            schedule, 0.0 if self.config.pretrained else 0.5,
            monitor=self.monitor, patience=self.config.patience, restore_best_weights=True,
        )
        best = keras.callbacks.ModelCheckpoint(self.checkpoint, monitor=self.monitor, save_best_only=True)
        callbacks = [schedule, reporter, stopper, best, *([timer] if timer is not None else [])]
        model.fit(self.train_ds, validation_data=self.val_ds, epochs=phase.epochs, callbacks=callbacks, verbose=0, shuffle=False)
        self.history.extend(reporter.rows)
        if timer is not None and timer.stopped:
            self.stopped_by = "time_budget"
        elif stopper.stopped_epoch > 0:
            self.stopped_by = "early_stopping"
        else:
            self.stopped_by = "epochs"
        return True


def _start(train: Sequence[Sample], config: TrainConfig, out_dir: Path) -> Path:
    """Make ``out_dir``, check the inputs, seed every random generator."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not train:
        raise ValueError("no training samples")
    spec(config.backbone)  # fail fast on an unknown name
    keras.utils.set_random_seed(config.seed)
    return out_dir


def _datasets(
    train: Sequence[Sample], val: Sequence[Sample], classes: list[str], config: TrainConfig, out_dir: Path
) -> tuple[tf.data.Dataset, tf.data.Dataset | None]:
    """The training batches (shuffled, augmented, class-weighted) and the validation batches (None: no val)."""
    cache = cache_location(len(train), config.image_size, config.cache_max_bytes, out_dir / "cache" / "train")
    weights = class_weight_vector(train, classes) if config.class_weights else None
    train_ds = make_dataset(
        train, classes, image_size=config.image_size, batch_size=config.batch_size, training=True,
        seed=config.seed, augment=config.augment, rotation=config.rotation, zoom=config.zoom,
        colour_jitter=config.colour_jitter, class_weights=weights, cache=cache,
    )
    if not val:
        return train_ds, None
    val_cache = cache_location(len(val), config.image_size, config.cache_max_bytes, out_dir / "cache" / "val")
    val_ds = make_dataset(val, classes, image_size=config.image_size, batch_size=config.batch_size, training=False, cache=val_cache)
    return train_ds, val_ds


def _set_trainable(model: keras.Model, phase: Phase, config: TrainConfig) -> None:
    """Head: the backbone frozen. Fine-tuning: its top layers open, BatchNorm frozen. Scratch: as built."""
    if phase.name == "head":
        freeze_backbone(model)
    elif phase.name == "finetune":
        unfreeze_model(model, config.fine_tune_layers)


def _save(model: keras.Model, out_dir: Path, fitter: PhaseFitter, t_start: float) -> TrainResult:
    """Save ``model.keras`` and ``history.json`` in ``out_dir``; the run's result."""
    keras_path = out_dir / "model.keras"
    model.save(keras_path)
    history = fitter.history
    (out_dir / "history.json").write_text(json.dumps(history, indent=1))
    steady = [r for r in history if r["phase_epoch"] > 1] or history
    rate = float(np.mean([r["images_per_s"] for r in steady])) if steady else 0.0
    return TrainResult(keras_path, len(history), history, rate, time.monotonic() - t_start, fitter.stopped_by)


def train(
    train: Sequence[Sample],
    val: Sequence[Sample],
    classes: Sequence[str],
    config: TrainConfig,
    out_dir: Path,
    progress: Progress | None = None,
) -> TrainResult:
    """Train a classifier for ``classes`` on ``train``; early-stop on ``val``; save ``out_dir/model.keras``.

    ``progress`` receives one dict per epoch: phase, epoch, loss, accuracy, top3, val_loss, val_accuracy,
    val_top3, lr, seconds, images_per_s. Raises ``WeightsUnavailable`` when pretrained weights are missing.
    """
    t_start = time.monotonic()
    classes = list(classes)
    out_dir = _start(train, config, out_dir)
    model = build_model(len(classes), config)
    train_ds, val_ds = _datasets(train, val, classes, config, out_dir)
    phases = plan_phases(config)
    fitter = PhaseFitter(
        config, train_ds, val_ds, len(train), out_dir / "checkpoint.keras",
        t_start + config.time_budget_s if config.time_budget_s > 0 else None,
        sum(p.epochs for p in phases), progress,
    )
    for phase in phases:  # head, then fine-tuning; or from scratch
        _set_trainable(model, phase, config)
        compile_model(model, config, phase.lr)
        if not fitter.fit(model, phase):
            break  # no time left for this phase
    return _save(model, out_dir, fitter, t_start)
