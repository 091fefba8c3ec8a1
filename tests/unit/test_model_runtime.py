"""Serving runtime, bundles and evaluation, without TensorFlow (a tiny ONNX model built with onnx.helper)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from autodetect.model.bundle import load_serving, read_bundle, save_labels
from autodetect.model.errors import ModelArtifactError
from autodetect.model.evaluate import evaluate, metrics_from_probs, plot_confusion
from autodetect.model.runtime import ServingModel, load_batch, load_image
from autodetect.model.split import Sample
from tests.unit.test_inference_support import colour_onnx

SIZE = 16
CLASSES = ["blue", "green", "red"]
# Mean colour (0-255) -> logits that favour the dominant channel: red, green, blue in CLASSES order.
WEIGHTS = np.array([[0, 0, 1], [0, 1, 0], [1, 0, 0]], np.float32) * 0.1


def make_onnx(path: Path, size: int = SIZE) -> Path:
    """image (N, S, S, 3) float -> mean over H, W -> MatMul -> Softmax: a colour classifier (``WEIGHTS``)."""
    return colour_onnx(path, CLASSES, size, sharpness=0.1)


def reference(x: np.ndarray) -> np.ndarray:
    logits = x.astype(np.float64).mean(axis=(1, 2)) @ WEIGHTS
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def colour_photos(root: Path, per_class: int = 4, photos: int = 2) -> list[Sample]:
    rng = np.random.default_rng(0)
    out = []
    for label, channel in (("red", 0), ("green", 1), ("blue", 2)):
        for i in range(per_class):
            lid = f"{label}-{i}"
            for j in range(photos):
                a = rng.integers(0, 90, (40, 30, 3), dtype=np.uint8)
                a[..., channel] = rng.integers(170, 255, (40, 30), dtype=np.uint8)
                p = root / f"{lid}-{j}.{'jpg' if j else 'png'}"
                Image.fromarray(a).save(p)
                out.append(Sample(str(p), label, lid, lid))
    return out


@pytest.fixture()
def bundle(tmp_path) -> Path:
    make_onnx(tmp_path / "model.onnx")
    save_labels(tmp_path, CLASSES, backbone="test", image_size=SIZE)
    return tmp_path


def test_onnx_predicts_any_batch_size(tmp_path):
    model = ServingModel.load(make_onnx(tmp_path / "m.onnx"), num_threads=1, max_batch=8)
    assert (model.format, model.image_size, model.num_classes) == ("onnx", SIZE, 3)
    rng = np.random.default_rng(1)
    for n in (1, 5, 8, 21):
        x = rng.integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)
        probs = model.predict(x)
        assert probs.dtype == np.float32 and probs.shape == (n, 3)
        np.testing.assert_allclose(probs, reference(x), atol=1e-5)
    assert model.predict(np.zeros((0, SIZE, SIZE, 3), np.uint8)).shape == (0, 3)
    assert model.predict(np.zeros((SIZE, SIZE, 3), np.uint8)).shape == (1, 3)
    with pytest.raises(ValueError):
        model.predict(np.zeros((2, SIZE + 1, SIZE, 3), np.uint8))


def test_load_errors(tmp_path):
    with pytest.raises(ModelArtifactError, match="not found"):
        ServingModel.load(tmp_path / "missing.onnx")
    for name in ("broken.onnx", "broken.tflite"):
        (tmp_path / name).write_bytes(b"not a model at all")
        with pytest.raises(ModelArtifactError, match="cannot load"):
            ServingModel.load(tmp_path / name)
    (tmp_path / "model.bin").write_bytes(b"x")
    with pytest.raises(ModelArtifactError, match="unknown model format"):
        ServingModel.load(tmp_path / "model.bin")


def test_load_image_and_batch(tmp_path):
    img = Image.new("RGBA", (50, 20), (10, 200, 30, 128))
    img.save(tmp_path / "a.png")
    a = load_image(tmp_path / "a.png", 8)
    assert a.shape == (8, 8, 3) and a.dtype == np.uint8 and tuple(a[4, 4]) == (10, 200, 30)
    assert load_image((tmp_path / "a.png").read_bytes(), 8).shape == (8, 8, 3)
    assert load_image(img, 8).shape == (8, 8, 3)
    assert load_batch([tmp_path / "a.png"] * 5, 8).shape == (5, 8, 8, 3)
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8garbage")
    with pytest.raises(ValueError, match="cannot decode"):
        load_image(tmp_path / "bad.jpg", 8)


def test_bundle_round_trip_and_errors(bundle, tmp_path):
    info = read_bundle(bundle)
    assert info.classes == CLASSES and info.image_size == SIZE and set(info.files) == {"onnx"}
    model = load_serving(bundle)
    assert model.format == "onnx" and model.classes == CLASSES
    x = np.zeros((1, SIZE, SIZE, 3), np.uint8)
    x[..., 0] = 250
    assert model.top_k(model.predict(x), 2)[0][0][0] == "red"

    with pytest.raises(ModelArtifactError, match="no serving model"):
        load_serving(bundle, prefer=("tflite",))
    (bundle / "model.tflite").write_bytes(b"corrupt")
    with pytest.raises(ModelArtifactError, match="model.tflite"):
        load_serving(bundle)  # a corrupt preferred file is an error, not a silent fallback
    assert load_serving(bundle, prefer=("onnx", "tflite")).format == "onnx"

    save_labels(bundle, CLASSES + ["yellow"], backbone="test", image_size=SIZE)
    with pytest.raises(ModelArtifactError, match="3 outputs but labels.json lists 4"):
        load_serving(bundle, prefer=("onnx",))
    (bundle / "labels.json").write_text("{not json")
    with pytest.raises(ModelArtifactError, match="corrupt"):
        read_bundle(bundle)
    (bundle / "labels.json").write_text(json.dumps({"classes": [], "backbone": "x", "image_size": 1}))
    with pytest.raises(ModelArtifactError, match="non-empty"):
        read_bundle(bundle)
    with pytest.raises(ModelArtifactError, match="not found"):
        read_bundle(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelArtifactError, match="labels.json is missing"):
        read_bundle(tmp_path / "empty")


def test_metrics_by_hand():
    samples = [
        Sample("a1", "a", "l1", "l1"), Sample("a2", "a", "l1", "l1"),
        Sample("b1", "b", "l2", "l2"), Sample("c1", "c", "l3", "l3"), Sample("x1", "unknown", "l4", "l4"),
    ]
    probs = np.array([
        [0.6, 0.3, 0.1],   # a: right
        [0.2, 0.5, 0.3],   # a: wrong (top-3 hit); listing l1 averages to (0.4, 0.4, 0.2): tie -> a
        [0.1, 0.2, 0.7],   # b: wrong (ranked second: a top-3 hit)
        [0.0, 0.1, 0.9],   # c: right
        [0.5, 0.4, 0.1],   # label not in classes: wrong everywhere
    ])
    m = metrics_from_probs(probs, samples, ["a", "b", "c"])
    assert m.top1 == pytest.approx(2 / 5) and m.top3 == pytest.approx(4 / 5) and m.top5 == m.top3
    assert m.per_class == {"a": 0.5, "b": 0.0, "c": 1.0} and m.mean_per_class == pytest.approx(0.5)
    assert (m.n_images, m.n_listings, m.n_unknown) == (5, 4, 1)
    assert m.listing_top1 == pytest.approx(2 / 4)  # l1 (tie broken to a) and l3
    assert m.confusion == [[1, 1, 0], [0, 0, 1], [0, 0, 1]]
    assert json.loads(json.dumps(m.to_dict()))["top1"] == pytest.approx(0.4)


def test_evaluate_with_a_serving_model_and_plot(bundle, tmp_path):
    samples = colour_photos(tmp_path)
    model = load_serving(bundle)
    m = evaluate(model.predict, samples, CLASSES, image_size=SIZE, batch_size=5)
    assert m.top1 == 1.0 and m.listing_top1 == 1.0 and m.n_images == 24 and m.n_listings == 12
    assert sum(map(sum, m.confusion)) == 24 and m.images_per_s > 0
    png = plot_confusion(m, CLASSES, tmp_path / "report" / "confusion.png")
    assert png.stat().st_size > 1000


def test_runtime_never_imports_tensorflow(bundle):
    code = f"""
import sys, numpy as np
from autodetect.model import bundle, evaluate, runtime, split, errors
m = bundle.load_serving({str(bundle)!r})
m.predict(np.zeros((2, {SIZE}, {SIZE}, 3), np.uint8))
bad = sorted(k for k in sys.modules if k.split(".")[0] in ("tensorflow", "keras", "tf_keras", "celery", "sqlalchemy"))
assert not bad, bad
print("ok")
"""
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], check=False, cwd=root, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-2000:]
