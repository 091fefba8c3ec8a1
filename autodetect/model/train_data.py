"""The tf.data input pipeline and its augmentation (imports TensorFlow/Keras).

Images are decoded and resized exactly as ``runtime.load_image`` does (same IDCT, bilinear with
antialiasing), cached as uint8, and augmented per batch in the tf.data pipeline; augmentation is not
part of the saved model. Class imbalance: sample weights ``n / (k * n_c)``. A training sample labelled
``calibration.OUTLIER`` (outlier exposure: a photo without a car, a car of another model) has the
uniform distribution over the classes as its target, and weight 1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from autodetect.model.calibration import OUTLIER
from autodetect.model.split import Sample


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
    counts = np.bincount([index[s.label] for s in samples if s.label != OUTLIER],
                         minlength=len(classes)).astype(np.float64)
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
    unknown = sorted({s.label for s in samples} - index.keys() - {OUTLIER})
    if unknown:
        raise ValueError(f"samples with labels outside classes: {unknown[:5]}")
    paths = [s.path for s in samples]
    labels = np.array([index.get(s.label, -1) for s in samples], dtype=np.int32)  # -1: an outlier
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
        outlier = y < 0
        onehot = tf.where(outlier[:, None], 1.0 / num_classes, tf.one_hot(y, num_classes))
        if training and class_weights is not None:
            return x, onehot, tf.where(outlier, 1.0, tf.gather(weights, tf.maximum(y, 0)))
        return x, onehot

    ds = ds.map(to_model, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def cache_location(count: int, image_size: int, max_bytes: int, folder: Path) -> str:
    """``make_dataset``'s ``cache`` for ``count`` decoded images: "" (memory) when they fit in
    ``max_bytes``, else files under ``folder``."""
    return "" if count * image_size**2 * 3 <= max_bytes else str(folder)
