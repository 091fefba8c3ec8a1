"""Backbones by name, each with its own preprocessing folded into the model (imports TensorFlow/Keras).

Every classifier built here takes raw RGB pixels, 0-255, float32, as input "image" of shape
(None, S, S, 3). The backbone's own preprocessing is a layer inside the model:

| name                | preprocessing inside the model                          | scale_and_bias    |
|---------------------|---------------------------------------------------------|-------------------|
| inception_v3        | our ``Rescaling(1/127.5, offset=-1)`` -> [-1, 1]        | (1/127.5, -1)     |
| mobilenet_v3_small  | Keras' own (``include_preprocessing=True``) -> [-1, 1]  | (1/127.5, -1)     |
| mobilenet_v3_large  | Keras' own (``include_preprocessing=True``) -> [-1, 1]  | (1/127.5, -1)     |
| efficientnet_b0     | Keras' own (Rescaling 1/255 + ImageNet Normalization)   | (1, 0): raw       |
| efficientnetv2_b0   | Keras' own (``include_preprocessing=True``)             | (1, 0): raw       |
| compact_cnn         | our ``Rescaling(1/127.5, offset=-1)``                   | (1/127.5, -1)     |

``scale_and_bias(name)`` is the affine map from raw pixels to what the backbone's first layer expects,
when that map is a single scale and bias (the EfficientNets normalize per channel inside the model, so
they take raw pixels: (1, 0)). Because the map is part of every exported model, a Core ML image input
must use scale 1, bias 0 (see ``export.export_coreml``); ``scale_and_bias`` is for consumers that feed
the bare backbone.

Weights: ``"imagenet"`` (the usual Keras download, cached under ``$KERAS_HOME/models``, default
``~/.keras/models``), a local file path, or ``"none"`` (from scratch). A local file is either the
Keras-distributed "notop" ``.h5`` (e.g. ``inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5``)
or a ``.weights.h5`` saved from a backbone built here. When ImageNet weights cannot be fetched,
``WeightsUnavailable`` says how to supply a file.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

import keras
from keras import layers

from autodetect.model.errors import WeightsUnavailable

_GCS = "https://storage.googleapis.com/"


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    default_size: int
    min_size: int
    scale: float  # raw pixel -> backbone input: x * scale + bias
    bias: float
    weights_file: str | None  # Keras' ImageNet "notop" file name (None: no pretrained weights)
    weights_origin: str | None
    weights_md5: str | None


BACKBONES: dict[str, BackboneSpec] = {
    s.name: s
    for s in [
        BackboneSpec(
            "inception_v3", 299, 75, 1 / 127.5, -1.0,
            "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
            _GCS + "tensorflow/keras-applications/inception_v3/",
            "bcbd6486424b2319ff4ef7d526e38f63",
        ),
        BackboneSpec(
            "mobilenet_v3_small", 224, 32, 1 / 127.5, -1.0,
            "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5",
            _GCS + "tensorflow/keras-applications/mobilenet_v3/",
            "d3e8ec802a04aa4fc771ee12a9a9b836",
        ),
        BackboneSpec(
            "mobilenet_v3_large", 224, 32, 1 / 127.5, -1.0,
            "weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5",
            _GCS + "tensorflow/keras-applications/mobilenet_v3/",
            "07fb09a5933dd0c8eaafa16978110389",
        ),
        BackboneSpec(
            "efficientnet_b0", 224, 32, 1.0, 0.0,
            "efficientnetb0_notop.h5",
            _GCS + "keras-applications/",
            "50bc09e76180e00e4465e1a485ddc09d",
        ),
        BackboneSpec(
            "efficientnetv2_b0", 224, 32, 1.0, 0.0,
            "efficientnetv2-b0_notop.h5",
            _GCS + "tensorflow/keras-applications/efficientnet_v2/",
            "893217f2bb855e2983157299931e43ff",
        ),
        BackboneSpec("compact_cnn", 128, 32, 1 / 127.5, -1.0, None, None, None),
    ]
}

# Keras' EfficientNet (v1) adds this per-channel rescaling after its Normalization layer only when
# built with weights="imagenet" (tensorflow/tensorflow#49930); we fold it into the Normalization.
_IMAGENET_STDDEV_RGB = (0.229, 0.224, 0.225)


def spec(name: str) -> BackboneSpec:
    try:
        return BACKBONES[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; choose from {sorted(BACKBONES)}") from None


def scale_and_bias(name: str) -> tuple[float, float]:
    """The raw-pixel -> backbone-input map ``x * scale + bias`` (see the module doc)."""
    s = spec(name)
    return s.scale, s.bias


def keras_cache_dir() -> Path:
    """Where Keras caches downloaded weights: ``$KERAS_HOME/models`` or ``~/.keras/models``."""
    try:
        from keras.src.backend.config import (
            keras_home,  # private, but it is what get_file uses
        )

        root = keras_home()
    except ImportError:  # pragma: no cover - a future Keras
        root = "~/.keras"
    return Path(root).expanduser() / "models"


def _unavailable_message(s: BackboneSpec, cache: Path, origin: str, cause: object) -> str:
    return (
        f"ImageNet weights for {s.name} are not in the Keras cache and could not be downloaded "
        f"from {origin} ({cause}).\n"
        f"Supply the file by hand: download {s.weights_file} on a machine with network access, then either\n"
        f"  - set AUTODETECT_WEIGHTS=/path/to/{s.weights_file}, or\n"
        f"  - put it in the Keras cache: {cache}/{s.weights_file} (Keras caches under $KERAS_HOME/models, "
        f"default ~/.keras/models),\n"
        f"or train from scratch with AUTODETECT_WEIGHTS=none (with AUTODETECT_BACKBONE=compact_cnn or "
        f"mobilenet_v3_small for CPU-sized runs)."
    )


def resolve_weights(
    name: str,
    weights: str | os.PathLike | None,
    *,
    cache_dir: str | os.PathLike | None = None,
    origin: str | None = None,
    timeout_s: float = 30.0,
) -> Path | None:
    """A local weights file for ``name``, or None for "none".

    ``"imagenet"``: the Keras cache, else a download through ``keras.utils.get_file`` (socket timeout
    ``timeout_s``). ``cache_dir`` replaces Keras' cache root (files go in ``<cache_dir>/models``);
    ``origin`` replaces the download base URL (tests, mirrors). Raises ``WeightsUnavailable``.
    """
    s = spec(name)
    if weights is None or str(weights).lower() in ("none", ""):
        return None
    if str(weights).lower() == "imagenet":
        if s.weights_file is None:
            raise WeightsUnavailable(f"{name} has no pretrained weights; use weights='none'")
        cache = Path(cache_dir).expanduser() / "models" if cache_dir else keras_cache_dir()
        url = (origin or s.weights_origin).rstrip("/") + "/" + s.weights_file
        previous = socket.getdefaulttimeout()
        socket.setdefaulttimeout(timeout_s)  # keras' get_file has no timeout; a black-holed network must not hang
        try:
            path = keras.utils.get_file(
                s.weights_file,
                url,
                cache_subdir="models",
                cache_dir=str(Path(cache_dir).expanduser()) if cache_dir else None,
                file_hash=s.weights_md5,
            )
        except Exception as e:  # keras raises a bare Exception("URL fetch failure ...") and removes partial files
            raise WeightsUnavailable(_unavailable_message(s, cache, url, e)) from e
        finally:
            socket.setdefaulttimeout(previous)
        return Path(path)
    path = Path(weights).expanduser()
    if not path.is_file():
        raise WeightsUnavailable(
            f"weights file for {name} not found: {path}. Expected "
            + (f"Keras' {s.weights_file} or " if s.weights_file else "")
            + "a .weights.h5 saved from this backbone; or use weights='imagenet' / 'none'."
        )
    return path


def _compact_cnn(image_size: int, filters=(32, 64, 128, 192, 256)) -> keras.Model:
    """Five blocks of conv3x3 -> BatchNorm -> ReLU -> max-pool (the last block pools globally later)."""
    inp = keras.Input((image_size, image_size, 3), name="compact_input")
    x = inp
    for i, f in enumerate(filters):
        x = layers.Conv2D(f, 3, padding="same", use_bias=False, name=f"block{i + 1}_conv")(x)
        x = layers.BatchNormalization(name=f"block{i + 1}_bn")(x)
        x = layers.ReLU(name=f"block{i + 1}_relu")(x)
        if i < len(filters) - 1:
            x = layers.MaxPooling2D(2, name=f"block{i + 1}_pool")(x)
    return keras.Model(inp, x, name="compact_cnn")


def _application(name: str, image_size: int) -> keras.Model:
    shape = (image_size, image_size, 3)
    common = {"include_top": False, "weights": None, "input_shape": shape}
    if name == "inception_v3":
        return keras.applications.InceptionV3(**common)
    if name == "mobilenet_v3_small":
        return keras.applications.MobileNetV3Small(include_preprocessing=True, **common)
    if name == "mobilenet_v3_large":
        return keras.applications.MobileNetV3Large(include_preprocessing=True, **common)
    if name == "efficientnet_b0":
        return keras.applications.EfficientNetB0(**common)
    if name == "efficientnetv2_b0":
        return keras.applications.EfficientNetV2B0(include_preprocessing=True, **common)
    if name == "compact_cnn":
        return _compact_cnn(image_size)
    raise ValueError(name)


def _fold_efficientnet_imagenet_scaling(base: keras.Model) -> None:
    """Make a weights=None EfficientNet loaded from Keras' ImageNet .h5 compute what Keras' "imagenet" build does."""
    norm = next(layer for layer in base.layers if isinstance(layer, layers.Normalization))
    # Keras computes (x - mean) / sqrt(var) * (1 / sqrt(stddev)) == (x - mean) / sqrt(var * stddev).
    variance = norm.adapt_variance  # the stored weight; ``norm.variance`` is derived from it
    factors = keras.ops.convert_to_tensor(_IMAGENET_STDDEV_RGB, dtype=variance.dtype)
    variance.assign(keras.ops.reshape(factors, variance.shape) * variance)
    norm.finalize_state()


def build_base(
    name: str,
    image_size: int,
    weights: str | os.PathLike | None = "imagenet",
    *,
    bn_momentum: float | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> keras.Model:
    """The headless backbone (input: what ``scale_and_bias`` maps raw pixels to; output: a feature map).

    MobileNetV3/EfficientNet include their own preprocessing layer, so their bare base takes raw pixels.
    ``bn_momentum`` (e.g. 0.9 for short from-scratch runs) replaces every BatchNorm layer's momentum.
    """
    s = spec(name)
    if image_size < s.min_size:
        raise ValueError(f"{name} needs image_size >= {s.min_size}, got {image_size}")
    path = resolve_weights(name, weights, cache_dir=cache_dir)
    base = _application(name, image_size)
    base.name = "backbone"
    if path is not None:
        try:
            base.load_weights(str(path))
        except Exception as e:
            raise WeightsUnavailable(f"cannot load weights for {name} from {path}: {type(e).__name__}: {e}") from e
        if name == "efficientnet_b0" and not str(path).endswith(".weights.h5"):
            _fold_efficientnet_imagenet_scaling(base)
    if bn_momentum is not None:
        for layer in base.layers:
            if isinstance(layer, layers.BatchNormalization):
                layer.momentum = bn_momentum
    return base


def build_classifier(
    name: str,
    num_classes: int,
    image_size: int,
    weights: str | os.PathLike | None = "imagenet",
    *,
    dropout: float = 0.2,
    bn_momentum: float | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> keras.Model:
    """Input "image" (raw RGB 0-255) -> preprocessing -> backbone -> global average pool -> dropout -> softmax.

    With pretrained weights the backbone is called with ``training=False``: its BatchNorm layers stay in
    inference mode even when unfrozen for fine-tuning. From scratch (weights none) it trains normally.
    The backbone is the layer named "backbone"; the output layer is named "probs".
    """
    if num_classes < 2:
        raise ValueError("a classifier needs at least 2 classes")
    pretrained = is_pretrained(weights)
    base = build_base(name, image_size, weights, bn_momentum=bn_momentum, cache_dir=cache_dir)
    inp = keras.Input((image_size, image_size, 3), name="image")
    x = inp
    if name in ("inception_v3", "compact_cnn"):
        scale, bias = scale_and_bias(name)
        x = layers.Rescaling(scale, offset=bias, name="preprocess")(x)
    x = base(x, training=False) if pretrained else base(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    if dropout:
        x = layers.Dropout(dropout, name="dropout")(x)
    x = layers.Dense(num_classes, name="logits")(x)
    out = layers.Activation("softmax", dtype="float32", name="probs")(x)
    return keras.Model(inp, out, name=f"autodetect_{name}")


def is_pretrained(weights: str | os.PathLike | None) -> bool:
    return not (weights is None or str(weights).lower() in ("none", ""))


__all__ = [
    "BACKBONES",
    "BackboneSpec",
    "WeightsUnavailable",
    "build_base",
    "build_classifier",
    "is_pretrained",
    "keras_cache_dir",
    "resolve_weights",
    "scale_and_bias",
    "spec",
]
