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

Images are decoded and resized exactly as ``runtime.load_image`` does (same IDCT, bilinear with
antialiasing), cached as uint8, and augmented per batch in the tf.data pipeline; augmentation is not
part of the saved model. Class imbalance: sample weights ``n / (k * n_c)``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from autodetect.model.backbones import build_classifier, is_pretrained, spec
from autodetect.model.split import Sample

Progress = Callable[[dict], None]


@dataclass
class TrainConfig:
    backbone: str = "inception_v3"
    image_size: int = 224
    weights: str = "imagenet"  # "imagenet", "none", or a path to a local weights file
    epochs_head: int = 8
    epochs_finetune: int = 8
    fine_tune_layers: int = 50
    batch_size: int = 32
    lr_head: float = 1e-3
    lr_finetune: float = 1e-4
    label_smoothing: float = 0.1
    seed: int = 1337
    time_budget_s: float = 0.0  # 0: none
    bn_momentum: float = 0.9  # from scratch only
    augment: bool = True
    zoom: float = 0.25  # augmentation: the random crop's side is 1 - zoom .. 1 of the image's
    rotation: float = 0.02  # augmentation: max rotation, a share of a full turn (0.02: 7 degrees); 0 is cheaper
    colour_jitter: float = 0.15  # augmentation: random brightness and contrast factor; 0 skips both (cheaper)
    weight_decay: float = 1e-4
    dropout: float = 0.2
    patience: int = 5  # early stopping on val loss, in epochs
    warmup_share: float = 0.03  # of each phase, linear
    class_weights: bool = True  # balance classes by weighting samples n / (k * n_c)
    cache_max_bytes: int = 2 << 30  # decoded training images above this are cached on disk in out_dir
    weights_cache_dir: str | None = None  # Keras' cache root for "imagenet" (None: Keras' default)

    @property
    def pretrained(self) -> bool:
        return is_pretrained(self.weights)


@dataclass
class TrainResult:
    keras_path: Path
    epochs_run: int
    history: list[dict] = field(default_factory=list)  # one dict per epoch (phase, metrics, lr, seconds)
    train_images_per_s: float = 0.0  # steady state: epochs after the first (tracing, cache fill)
    seconds: float = 0.0
    stopped_by: str = "epochs"  # "epochs", "early_stopping" or "time_budget" (the last phase's reason)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["keras_path"] = str(self.keras_path)
        return d


# --------------------------------------------------------------------------------------------------
# Data


def _decode(path: tf.Tensor, image_size: int) -> tf.Tensor:
    """File -> uint8 (S, S, 3): decode JPEG/PNG/GIF/BMP/WebP, squash to S x S like runtime.load_image.

    JPEGs use libjpeg's accurate IDCT, as Pillow does: the training pixels then equal serving's
    (TensorFlow's default fast IDCT differs by about one level per pixel).
    """
    data = tf.io.read_file(path)
    image = tf.cond(
        tf.io.is_jpeg(data),
        lambda: tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE"),
        lambda: tf.io.decode_image(data, channels=3, expand_animations=False),
    )
    image.set_shape((None, None, 3))
    image = tf.image.resize(image, (image_size, image_size), method="bilinear", antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)


class RandomAffine(layers.Layer):
    """Random zoom-in crop, shift, horizontal flip and (optionally) small rotation in ONE resampling pass.

    The effect of ``RandomZoom`` + ``RandomTranslation`` + ``RandomFlip`` (+ ``RandomRotation``) at the
    cost of one of them: each of Keras' geometric layers resamples the whole batch, and on two CPU cores
    those passes cost about as much as a MobileNet training step. Without rotation the pass is
    ``crop_and_resize`` (about 3x faster again than a projective transform). Runs in the tf.data
    pipeline only (TensorFlow ops), never in the exported model.
    """

    def __init__(self, zoom: float = 0.25, rotation: float = 0.0, flip: bool = True, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.zoom, self.rotation, self.flip = zoom, rotation, flip
        self.generator = tf.random.Generator.from_seed(seed if seed is not None else 0)

    def call(self, images, training=True):
        if not training:
            return images
        shape = tf.shape(images)
        n = shape[0]
        g = self.generator
        crop = g.uniform([n], 1.0 - self.zoom, 1.0)  # side of the crop, as a share of the image
        flip = g.uniform([n]) < 0.5 if self.flip else tf.zeros([n], tf.bool)
        # The crop's centre moves at most as far as keeps the crop inside the image (in [0, 1] units).
        cx = 0.5 + g.uniform([n], -0.5, 0.5) * (1 - crop)
        cy = 0.5 + g.uniform([n], -0.5, 0.5) * (1 - crop)
        if self.rotation == 0:
            left, right = cx - crop / 2, cx + crop / 2
            boxes = tf.stack([cy - crop / 2, tf.where(flip, right, left), cy + crop / 2, tf.where(flip, left, right)], 1)
            return tf.image.crop_and_resize(images, boxes, tf.range(n), shape[1:3])
        h, w = tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
        theta = g.uniform([n], -self.rotation, self.rotation) * 2.0 * math.pi
        sign = tf.where(flip, -1.0, 1.0)
        cos, sin = tf.cos(theta) * crop, tf.sin(theta) * crop
        # Output pixel (x, y), about the output centre -> input pixel, about the crop centre.
        a0, a1, b0, b1 = cos * sign, -sin, sin * sign, cos
        ox, oy = (w - 1) / 2, (h - 1) / 2
        a2, b2 = cx * (w - 1) - a0 * ox - a1 * oy, cy * (h - 1) - b0 * ox - b1 * oy
        zeros = tf.zeros([n])
        transforms = tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)
        return tf.raw_ops.ImageProjectiveTransformV3(
            images=images, transforms=transforms, output_shape=shape[1:3], fill_value=0.0,
            interpolation="BILINEAR", fill_mode="REFLECT",
        )


def make_augmenter(seed: int, rotation: float = 0.0, zoom: float = 0.25, colour_jitter: float = 0.15) -> keras.Sequential:
    """Random zoom-in crop and shift, horizontal flip, optional small rotation (a share of a full turn),
    brightness and contrast (``colour_jitter``; 0: none). Pixels stay in 0-255."""
    steps: list[layers.Layer] = [RandomAffine(zoom=zoom, rotation=rotation, flip=True, seed=seed)]
    if colour_jitter > 0:
        steps += [
            layers.RandomBrightness(colour_jitter, value_range=(0.0, 255.0), seed=seed + 3),
            layers.RandomContrast(colour_jitter, seed=seed + 4),
        ]
    return keras.Sequential(steps, name="augment")


def class_weight_vector(samples: Sequence[Sample], classes: Sequence[str]) -> np.ndarray:
    """``n / (k * n_c)`` per class (1.0 for classes absent from ``samples``): sample weights average 1."""
    index = {c: i for i, c in enumerate(classes)}
    counts = np.bincount([index[s.label] for s in samples], minlength=len(classes)).astype(np.float64)
    present = counts > 0
    w = np.ones(len(classes))
    w[present] = counts.sum() / (present.sum() * counts[present])
    return w.astype(np.float32)


def make_dataset(
    samples: Sequence[Sample],
    classes: Sequence[str],
    *,
    image_size: int,
    batch_size: int,
    training: bool,
    seed: int = 0,
    augment: bool = False,
    rotation: float = 0.0,
    zoom: float = 0.25,
    colour_jitter: float = 0.15,
    class_weights: np.ndarray | None = None,
    cache: str | Path | None = "",
) -> tf.data.Dataset:
    """Batches of (float32 images 0-255, one-hot labels[, sample weights]).

    ``cache``: "" caches decoded images in memory, a path caches them in files there, None not at all.
    """
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted({s.label for s in samples} - index.keys())
    if unknown:
        raise ValueError(f"samples with labels outside classes: {unknown[:5]}")
    paths = [s.path for s in samples]
    labels = np.array([index[s.label] for s in samples], dtype=np.int32)
    if training:  # one fixed shuffle of the file list, so a partial shuffle buffer still mixes classes
        order = np.random.default_rng(seed).permutation(len(paths))
        paths, labels = [paths[i] for i in order], labels[order]
    ds = tf.data.Dataset.from_tensor_slices((paths, labels))
    ds = ds.map(lambda p, y: (_decode(p, image_size), y), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if cache is not None:
        if cache:
            Path(cache).parent.mkdir(parents=True, exist_ok=True)
        ds = ds.cache(str(cache))
    if training:
        ds = ds.shuffle(min(len(paths), 8192), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    num_classes = len(classes)
    weights = tf.constant(class_weights if class_weights is not None else np.ones(num_classes, np.float32))
    augmenter = make_augmenter(seed, rotation, zoom, colour_jitter) if (training and augment) else None

    def to_model(x, y):
        x = tf.cast(x, tf.float32)
        if augmenter is not None:
            x = augmenter(x, training=True)
        onehot = tf.one_hot(y, num_classes)
        if training and class_weights is not None:
            return x, onehot, tf.gather(weights, y)
        return x, onehot

    ds = ds.map(to_model, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


# --------------------------------------------------------------------------------------------------
# Callbacks


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
    """Collects each epoch's metrics (and hands them to ``progress``)."""

    def __init__(self, phase: str, epoch_offset: int, planned: int, images: int, schedule: CosineSchedule, progress: Progress | None):
        super().__init__()
        self.phase, self.offset, self.planned, self.images = phase, epoch_offset, planned, images
        self.schedule, self.progress = schedule, progress
        self.rows: list[dict] = []
        self.t0 = self.t_train_end = 0.0

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
        }
        self.rows.append(row)
        if self.progress is not None:
            self.progress(dict(row))


# --------------------------------------------------------------------------------------------------
# Training


def _freeze_for_finetune(model: keras.Model, fine_tune_layers: int) -> int:
    """Unfreeze the top ``fine_tune_layers`` layers of the backbone, BatchNorm excluded. Returns how many."""
    base = model.get_layer("backbone")
    base.trainable = True
    n = 0
    cut = max(0, len(base.layers) - fine_tune_layers)
    for i, layer in enumerate(base.layers):
        trainable = i >= cut and not isinstance(layer, layers.BatchNormalization)
        layer.trainable = trainable
        n += int(trainable and bool(layer.weights))
    return n


def _compile(model: keras.Model, config: TrainConfig, lr: float) -> None:
    model.compile(
        optimizer=keras.optimizers.AdamW(learning_rate=lr, weight_decay=config.weight_decay),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
        metrics=[
            keras.metrics.CategoricalAccuracy(name="accuracy"),
            keras.metrics.TopKCategoricalAccuracy(k=3, name="top3"),
        ],
    )


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
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    classes = list(classes)
    if not train:
        raise ValueError("no training samples")
    spec(config.backbone)  # fail fast on an unknown name
    keras.utils.set_random_seed(config.seed)

    model = build_classifier(
        config.backbone,
        len(classes),
        config.image_size,
        config.weights,
        dropout=config.dropout,
        bn_momentum=None if config.pretrained else config.bn_momentum,
        cache_dir=config.weights_cache_dir,
    )

    image_bytes = len(train) * config.image_size**2 * 3
    cache = "" if image_bytes <= config.cache_max_bytes else str(out_dir / "cache" / "train")
    weights = class_weight_vector(train, classes) if config.class_weights else None
    train_ds = make_dataset(
        train, classes, image_size=config.image_size, batch_size=config.batch_size, training=True,
        seed=config.seed, augment=config.augment, rotation=config.rotation, zoom=config.zoom,
        colour_jitter=config.colour_jitter, class_weights=weights, cache=cache,
    )
    val_ds = None
    if val:
        val_cache = "" if len(val) * config.image_size**2 * 3 <= config.cache_max_bytes else str(out_dir / "cache" / "val")
        val_ds = make_dataset(val, classes, image_size=config.image_size, batch_size=config.batch_size, training=False, cache=val_cache)
    steps = math.ceil(len(train) / config.batch_size)

    if config.pretrained:
        phases = [("head", config.epochs_head, config.lr_head), ("finetune", config.epochs_finetune, config.lr_finetune)]
    else:
        phases = [("scratch", config.epochs_head + config.epochs_finetune, config.lr_head)]
    phases = [p for p in phases if p[1] > 0]
    total_epochs = sum(p[1] for p in phases)

    history: list[dict] = []
    stopped_by = "epochs"
    deadline = t_start + config.time_budget_s if config.time_budget_s > 0 else None
    monitor = "val_loss" if val_ds is not None else "loss"
    checkpoint = out_dir / "checkpoint.keras"
    epochs_done_planned = 0
    for phase, epochs, lr in phases:
        if phase == "head":
            model.get_layer("backbone").trainable = False
        elif phase == "finetune":
            _freeze_for_finetune(model, config.fine_tune_layers)
        _compile(model, config, lr)
        budget = 0.0
        callbacks: list[keras.callbacks.Callback] = []
        if deadline is not None:
            remaining = deadline - time.monotonic()
            later = sum(p[1] for p in phases) - epochs_done_planned - epochs
            budget = remaining * epochs / (epochs + later)  # this phase's share; unused time rolls over
            if budget <= 1.0:
                break
            callbacks.append(TimeBudget(time.monotonic() + budget))
        schedule = CosineSchedule(lr, epochs * steps, budget, warmup=config.warmup_share)
        reporter = EpochReporter(phase, len(history), total_epochs, len(train), schedule, progress)
        stopper = LateEarlyStopping(
            schedule, 0.0 if config.pretrained else 0.5,
            monitor=monitor, patience=config.patience, restore_best_weights=True,
        )
        callbacks = [schedule, reporter, stopper, keras.callbacks.ModelCheckpoint(checkpoint, monitor=monitor, save_best_only=True), *callbacks]
        model.fit(train_ds, validation_data=val_ds, epochs=epochs, callbacks=callbacks, verbose=0, shuffle=False)
        history.extend(reporter.rows)
        epochs_done_planned += epochs
        budget_cb = next((c for c in callbacks if isinstance(c, TimeBudget)), None)
        if budget_cb is not None and budget_cb.stopped:
            stopped_by = "time_budget"
        elif stopper.stopped_epoch > 0:
            stopped_by = "early_stopping"
        else:
            stopped_by = "epochs"

    keras_path = out_dir / "model.keras"
    model.save(keras_path)
    (out_dir / "history.json").write_text(json.dumps(history, indent=1))
    steady = [r for r in history if r["phase_epoch"] > 1] or history
    rate = float(np.mean([r["images_per_s"] for r in steady])) if steady else 0.0
    return TrainResult(keras_path, len(history), history, rate, time.monotonic() - t_start, stopped_by)
