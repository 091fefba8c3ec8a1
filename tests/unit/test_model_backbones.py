"""Backbones: folded preprocessing, raw-pixel input "image", and where the weights come from."""

from __future__ import annotations

import time

import numpy as np
import pytest

pytest.importorskip("tensorflow")

import h5py
import keras

from autodetect.model.backbones import (
    BACKBONES,
    build_base,
    build_classifier,
    resolve_weights,
    scale_and_bias,
)
from autodetect.model.errors import WeightsUnavailable

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def perturbed(model: keras.Model, seed: int = 0) -> list[np.ndarray]:
    """Give ``model`` recognisable weights (not a fresh initialisation) and return them."""
    rng = np.random.default_rng(seed)
    weights = [w + rng.normal(0, 0.01, w.shape).astype(w.dtype) for w in model.get_weights()]
    model.set_weights(weights)
    return weights


def save_legacy_h5(model: keras.Model, path) -> None:
    """Write weights in the Keras 2 .h5 layout of the files Keras downloads (``*_notop.h5``)."""
    from keras.src.legacy.saving import legacy_h5_format

    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_every_backbone_takes_raw_pixels_named_image(name):
    size = max(BACKBONES[name].min_size, 32)
    model = build_classifier(name, 3, size, "none")
    assert model.inputs[0].name == "image" and tuple(model.inputs[0].shape) == (None, size, size, 3)
    probs = keras.ops.convert_to_numpy(model(np.full((2, size, size, 3), 200.0, np.float32), training=False))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    scale, bias = scale_and_bias(name)
    assert (scale, bias) in ((1 / 127.5, -1.0), (1.0, 0.0))


def test_a_local_weights_file_is_accepted(tmp_path):
    base = build_base("mobilenet_v3_small", 32, "none")
    expected = perturbed(base)
    path = tmp_path / "mobilenet_small.weights.h5"
    base.save_weights(path)
    loaded = build_base("mobilenet_v3_small", 32, str(path))
    for a, b in zip(loaded.get_weights(), expected):
        np.testing.assert_array_equal(a, b)
    # Through the classifier: a local file counts as pretrained (BatchNorm kept in inference mode).
    model = build_classifier("mobilenet_v3_small", 4, 32, str(path))
    np.testing.assert_array_equal(model.get_layer("backbone").get_weights()[0], expected[0])


def test_a_keras_style_legacy_h5_file_is_accepted(tmp_path):
    base = build_base("mobilenet_v3_small", 32, "none")
    expected = perturbed(base, seed=1)
    path = tmp_path / "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5"
    save_legacy_h5(base, path)
    loaded = build_base("mobilenet_v3_small", 32, path)
    for a, b in zip(loaded.get_weights(), expected):
        np.testing.assert_array_equal(a, b)


def test_efficientnet_from_a_file_computes_what_keras_imagenet_build_computes(tmp_path, monkeypatch):
    """Keras adds a rescaling layer only for weights="imagenet"; our file route folds it in instead."""
    donor = keras.applications.EfficientNetB0(include_top=False, weights=None, input_shape=(32, 32, 3))
    perturbed(donor, seed=2)
    norm = next(layer for layer in donor.layers if isinstance(layer, keras.layers.Normalization))
    norm.set_weights([np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225]) ** 2, np.array(0)])
    path = tmp_path / "efficientnetb0_notop.h5"
    save_legacy_h5(donor, path)

    import keras.src.applications.efficientnet as keras_efficientnet

    monkeypatch.setattr(keras_efficientnet.file_utils, "get_file", lambda *a, **k: str(path))
    reference = keras.applications.EfficientNetB0(include_top=False, weights="imagenet", input_shape=(32, 32, 3))
    ours = build_base("efficientnet_b0", 32, path)
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)

    def stem(model):  # compare early: a random deep net's final features are too small to tell apart
        return keras.ops.convert_to_numpy(keras.Model(model.inputs[0], model.get_layer("stem_conv").output)(x))

    expected = stem(reference)
    assert np.abs(expected).mean() > 0.1
    np.testing.assert_allclose(stem(ours), expected, rtol=1e-4, atol=1e-5)


def test_imagenet_without_network_says_how_to_supply_the_file(tmp_path):
    start = time.monotonic()
    with pytest.raises(WeightsUnavailable) as info:
        # An empty cache and an origin nobody listens on: the real get_file path, failing at once.
        resolve_weights("inception_v3", "imagenet", cache_dir=tmp_path, origin="http://127.0.0.1:9/", timeout_s=5)
    message = str(info.value)
    assert "AUTODETECT_WEIGHTS=/path/to/inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5" in message
    assert str(tmp_path / "models") in message and "~/.keras/models" in message
    assert "AUTODETECT_WEIGHTS=none" in message
    assert time.monotonic() - start < 10
    assert not list((tmp_path / "models").glob("*.h5"))  # no partial file left behind


def test_weights_errors():
    with pytest.raises(WeightsUnavailable, match="not found"):
        build_base("mobilenet_v3_small", 32, "/nowhere/weights.h5")
    with pytest.raises(WeightsUnavailable, match="no pretrained weights"):
        resolve_weights("compact_cnn", "imagenet")
    with pytest.raises(ValueError, match="unknown backbone"):
        scale_and_bias("resnet_9000")
    assert resolve_weights("compact_cnn", "none") is None
