"""The open set: temperature scaling, OOD scores, thresholds (synthetic logits, exact expectations), the
sandbox's open-set photos, and the answers of ``/identify`` and ``autodetect identify`` for photos
without a car, tiny, one-colour and text-screenshot photos, with a tiny real model calibrated the way
a training run calibrates a version (``pipeline.open_set``)."""

from __future__ import annotations

import io
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from autodetect.model.calibration import (
    CAR, NO_CAR, SCORES, UNKNOWN_MODEL, OpenSet, auroc, best_threshold, calibrated_probs, fit_open_set,
    fit_temperature, threshold_for_false_accept,
)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _synthetic(n: int, classes: int, temperature: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities of an over-confident model: labels drawn from softmax(z / T), the model says softmax(z)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 3.0, (n, classes))
    truth = _softmax(z / temperature)
    labels = np.array([rng.choice(classes, p=row) for row in truth])
    return _softmax(z), labels


# --- temperature ------------------------------------------------------------------------------------
@pytest.mark.parametrize("true_t", [0.6, 1.0, 2.5])
def test_temperature_fitting_recovers_a_known_temperature(true_t):
    probs, labels = _synthetic(6000, 8, true_t, seed=int(true_t * 10))
    assert fit_temperature(probs, labels) == pytest.approx(true_t, rel=0.08)


def test_temperature_fitting_without_scipy_finds_the_same_minimum(monkeypatch):
    probs, labels = _synthetic(3000, 6, 2.0, seed=3)
    with_scipy = fit_temperature(probs, labels)
    monkeypatch.setitem(sys.modules, "scipy.optimize", None)  # import fails: the golden-section search
    assert fit_temperature(probs, labels) == pytest.approx(with_scipy, rel=1e-3)


def test_calibration_keeps_the_ranking_and_probabilities_sum_to_one():
    probs, _ = _synthetic(500, 7, 2.0, seed=4)
    for t in (0.3, 1.0, 4.0):
        calibrated = calibrated_probs(probs, t)
        assert np.allclose(calibrated.sum(axis=1), 1.0)
        assert (calibrated.argmax(axis=1) == probs.argmax(axis=1)).all()
    assert np.allclose(calibrated_probs(probs, 1.0), probs, atol=1e-9)


# --- scores and thresholds ----------------------------------------------------------------------------
def test_auroc_matches_the_pairwise_definition_with_ties():
    rng = np.random.default_rng(5)
    pos, neg = rng.integers(0, 6, 40).astype(float), rng.integers(0, 5, 30).astype(float)
    pairs = [(1.0 if p > q else 0.5 if p == q else 0.0) for p in pos for q in neg]
    assert auroc(pos, neg) == pytest.approx(np.mean(pairs))
    assert auroc([2, 3], [0, 1]) == 1.0 and auroc([0], [1]) == 0.0 and math.isnan(auroc([], [1]))


@pytest.mark.parametrize("share", [0.0, 0.05, 0.2])
def test_no_car_threshold_meets_the_false_accept_target_on_its_calibration_set(share):
    negatives = np.random.default_rng(6).normal(0, 1, 301)
    negatives[:20] = negatives[20]  # ties at the boundary must not let more through
    t = threshold_for_false_accept(negatives, share)
    assert np.mean(negatives >= t) <= share
    assert np.mean(negatives >= np.nextafter(t, -np.inf)) > share  # the lowest threshold that meets it


def test_best_threshold_sits_in_the_middle_of_the_gap_and_keeps_to_the_false_reject_cap():
    known, other = np.array([5.0, 6.0, 7.0, 8.0]), np.array([1.0, 2.0, 3.0])
    assert best_threshold(known, other, max_false_reject=0.0) == 4.0  # between 3 and 5: all known, no other
    overlap = np.array([1.0, 2.0, 5.5, 5.6, 5.7])  # three others just above the weakest known photo
    assert best_threshold(known, overlap, max_false_reject=0.0) == 3.5  # J 1 - 0.6: no known photo lost
    assert best_threshold(known, overlap, max_false_reject=0.25) == pytest.approx(5.85)  # J 0.75 - 0
    assert best_threshold(known, overlap, max_false_reject=0.0, lowest=4.0) == 4.0
    assert best_threshold(known, other, max_false_reject=0.0, lowest=9.0) == 9.0  # nothing feasible: lowest
    assert best_threshold(np.array([-np.inf, 5.0]), other, max_false_reject=0.5) == 4.0  # -inf: turned away


def test_fit_open_set_separates_the_three_kinds_and_meets_its_targets():
    rng = np.random.default_rng(7)
    known_logits = rng.normal(0, 1, (400, 6))
    known_logits[np.arange(400), rng.integers(0, 6, 400)] += 5  # confident on known cars, and right as often
    labels = np.array([rng.choice(6, p=row) for row in _softmax(known_logits)])  # as it says (T = 1)
    unknown_logits = rng.normal(0, 1, (300, 6))
    unknown_logits[np.arange(300), rng.integers(0, 6, 300)] += 2.5  # half-confident on other models
    non_car_logits = rng.normal(0, 0.5, (300, 6))  # nearly uniform on non-cars
    known, unknown, non_car = _softmax(known_logits), _softmax(unknown_logits), _softmax(non_car_logits)
    open_set, candidates = fit_open_set(known, labels, non_car, unknown, max_false_accept=0.05, max_false_reject=0.1)
    assert set(candidates) == set(SCORES) and open_set.score in SCORES and open_set.fitted
    assert open_set.no_car_below > -math.inf and open_set.unknown_below > -math.inf
    non_car_verdicts = open_set.assess(non_car).verdicts
    known_verdicts = open_set.assess(known).verdicts
    assert np.mean([v != NO_CAR for v in non_car_verdicts]) <= 0.05  # its own target on its own calibration set
    assert np.mean([v != CAR for v in known_verdicts]) <= 0.1
    assert np.mean([v == UNKNOWN_MODEL for v in open_set.assess(unknown).verdicts]) > 0.5
    again = OpenSet.from_dict(open_set.to_dict())
    assert again == open_set and again.assess(known).verdicts == known_verdicts


def test_an_unfitted_open_set_never_refuses_and_round_trips_through_json():
    probs = _softmax(np.random.default_rng(8).normal(0, 1, (20, 4)))
    plain = OpenSet.from_dict(None)
    assert not plain.fitted and set(plain.assess(probs).verdicts) == {CAR}
    assert OpenSet.from_dict(plain.to_dict()) == plain
    with pytest.raises(ValueError, match="unknown OOD score"):
        OpenSet.from_dict({"temperature": 1.0, "score": "vibes"})


def test_energy_from_probabilities_is_constant_at_temperature_one():
    """Documented in ``calibration``: without logits, energy at T = 1 carries no information."""
    probs = _softmax(np.random.default_rng(9).normal(0, 2, (50, 5)))
    assert np.allclose(SCORES["energy"](probs, 1.0), 0.0, atol=1e-9)
    assert np.ptp(SCORES["energy"](probs, 2.0)) > 0.1


def test_an_outlier_photo_is_taught_as_none_of_the_classes(tmp_path):
    """Outlier exposure in the training batches: a uniform target and weight 1; class weights ignore it."""
    pytest.importorskip("tensorflow")
    from PIL import Image

    from autodetect.model.calibration import OUTLIER
    from autodetect.model.split import Sample
    from autodetect.model.train_data import class_weight_vector, make_dataset

    samples = []
    for i, (label, colour) in enumerate([("a", (200, 0, 0)), ("a", (190, 0, 0)), ("b", (0, 0, 200)),
                                         (OUTLIER, (0, 200, 0))]):
        path = tmp_path / f"{i}.png"
        Image.new("RGB", (20, 20), colour).save(path)
        samples.append(Sample(str(path), label, str(i), str(i)))
    weights = class_weight_vector(samples, ["a", "b", "c"])
    assert weights.tolist() == pytest.approx([0.75, 1.5, 1.0])  # n / (k * n_c): 3 photos, 2 classes present
    batches = make_dataset(samples, ["a", "b", "c"], image_size=8, batch_size=4, training=True,
                           class_weights=weights, cache=None)
    _, targets, weights = (t.numpy() for t in next(iter(batches)))
    rows = sorted((tuple(round(float(v), 4) for v in target), float(weight))
                  for target, weight in zip(targets, weights))
    assert rows == [((0.0, 1.0, 0.0), 1.5), ((0.3333, 0.3333, 0.3333), 1.0),  # the outlier: uniform, weight 1
                    ((1.0, 0.0, 0.0), 0.75), ((1.0, 0.0, 0.0), 0.75)]


# --- the sandbox's open-set photos --------------------------------------------------------------------
def test_street_and_screenshot_photos_are_drawn_without_changing_the_listings_kinds():
    from autodetect.sandbox.render import ALL_NON_CAR_KINDS, NON_CAR_KINDS, render_non_car

    assert NON_CAR_KINDS == ("interior", "document")  # the marketplace deals these: its photos stay the same
    assert ALL_NON_CAR_KINDS == (*NON_CAR_KINDS, "street", "screenshot")
    for kind in ("street", "screenshot"):
        a, b = (render_non_car(np.random.default_rng(3), kind) for _ in range(2))
        assert a.size == (384, 288) and a.tobytes() == b.tobytes()
        assert a.tobytes() != render_non_car(np.random.default_rng(4), kind).tobytes()
        assert np.asarray(a).reshape(-1, 3).std(axis=0).max() > 10  # a scene, not a blank
    with pytest.raises(ValueError, match="street"):
        render_non_car(np.random.default_rng(1), "engine")


def test_open_set_photos_are_deterministic_and_the_parts_share_no_unknown_model():
    from autodetect.sandbox.cars import CARS
    from autodetect.sandbox.open_set import PARTS, non_car_photos, unknown_model_photos, unknown_models
    from autodetect.sandbox.render import ALL_NON_CAR_KINDS

    classes = [spec.class_name for spec in CARS[:8]]
    shares = [{spec.class_name for spec in unknown_models(classes, part)} for part in PARTS]
    assert not set(classes) & set.union(*shares) and sum(map(len, shares)) == len(CARS) - 8
    assert all(not a & b for i, a in enumerate(shares) for b in shares[i + 1:])
    first, again = (list(non_car_photos(8, part="evaluation", seed=1)) for _ in range(2))
    assert [k for k, _ in first] == list(ALL_NON_CAR_KINDS) * 2
    assert all(a.tobytes() == b.tobytes() for (_, a), (_, b) in zip(first, again))
    other = list(non_car_photos(8, part="calibration", seed=1))
    assert all(a.tobytes() != b.tobytes() for (_, a), (_, b) in zip(first, other))
    names = [name for name, _ in unknown_model_photos(classes, 6, part="training")]
    assert set(names) <= shares[0] and len(set(names)) > 1


# --- a tiny calibrated version: /identify and the command line ---------------------------------------
sys.path.insert(0, str(Path(__file__).resolve().parent))
import test_api_support as api_sup  # noqa: E402
import test_open_set_support as sup  # noqa: E402


def _jpeg(img, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _png(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def _render(kind: str, seed: int) -> bytes:
    from autodetect.sandbox.render import render_non_car

    return _jpeg(render_non_car(np.random.default_rng(seed), kind))


@pytest.fixture(scope="module")
def version(tmp_path_factory):
    """The tiny version trained and calibrated by the pipeline's step, registered as the active one."""
    from autodetect.db import session_scope, upgrade
    from autodetect.settings import Settings
    from autodetect.storage import ModelVersion

    work = tmp_path_factory.mktemp("open-set-model")
    metrics = sup.calibrated_model(work)
    settings = Settings(data_dir=work / "data", database_url="")
    upgrade(settings)
    shutil.copytree(work / "bundle", settings.data_dir / "models" / "v1",
                    ignore=shutil.ignore_patterns("cache", "*.keras"))
    with session_scope(settings) as s:
        s.add(ModelVersion(name="v1", backbone="compact_cnn", image_size=sup.IMAGE_SIZE, classes=sup.CLASSES,
                           metrics={"open_set": metrics["open_set"]}, artifacts={"dir": "models/v1"}, status="active"))
    return settings, metrics


@pytest.fixture(scope="module")
def client(version):
    from autodetect.serving.app import create_app

    with api_sup.client_for(create_app(version[0])) as c:
        yield c


def _identify(client, data: bytes, name: str = "photo.jpg", kind: str = "image/jpeg") -> dict:
    response = client.post("/identify", files={"photo": (name, data, kind)})
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.slow
def test_the_version_stores_its_calibration_and_its_open_set_figures(version):
    settings, metrics = version
    figures = metrics["open_set"]
    labels = json.loads((settings.data_dir / "models" / "v1" / "labels.json").read_text())
    assert labels["open_set"] == figures["calibration"] and labels["open_set"]["fitted"] is True
    assert labels["open_set"]["score"] in SCORES and 0.05 <= labels["open_set"]["temperature"] <= 20
    for key in ("auroc_non_car", "auroc_unknown_model", "non_car_false_accept", "unknown_model_false_accept",
                "known_false_reject"):
        assert 0.0 <= figures[key] <= 1.0, key
    assert figures["top1"] == figures["top1_calibrated"]  # temperature scaling keeps the ranking
    assert set(figures["auroc_non_car_by_kind"]) == {"interior", "document", "street", "screenshot"}
    assert metrics["outlier_photos"] > 0


@pytest.mark.slow
def test_thresholds_meet_the_false_accept_target_on_their_calibration_photos(version):
    from autodetect.db import session_scope
    from autodetect.model.provider import ModelProvider
    from autodetect.model.runtime import load_batch
    from autodetect.sandbox.open_set import non_car_photos

    settings, _ = version
    with session_scope(settings) as s:
        model = ModelProvider(settings).get(s)
    photos = [_jpeg(img) for _, img in non_car_photos(sup.SETTINGS["open_set_photos"], part="calibration",
                                                       seed=sup.SETTINGS["train_seed"])]
    verdicts = model.open_set.assess(model.predict(load_batch(photos, model.image_size))).verdicts
    assert np.mean([v != NO_CAR for v in verdicts]) <= settings.open_set_max_false_accept + 1 / len(photos)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["document", "interior"])
def test_a_photo_without_a_car_gets_no_car_recognised_from_the_api(client, kind):
    for seed in (901, 902, 903):  # fresh photos: no part of the training or the calibration
        body = _identify(client, _render(kind, seed))
        assert body["verdict"] == "no_car" and body["message"] == "no car recognised", (kind, seed, body)
        assert len(body["candidates"]) == 3  # the ranking stays for the curious
        assert isinstance(body["ood_score"], float) and 0 <= body["confidence"] <= 1


@pytest.mark.slow
def test_a_known_car_is_answered_as_a_car(client, version):
    from autodetect.sandbox.cars import spec_for
    from autodetect.sandbox.render import render_car

    answers = [_identify(client, _jpeg(render_car(spec_for(name), np.random.default_rng(10_000 * c + 10 * i))))
               for c, name in enumerate(sup.CLASSES) for i in range(3)]  # training photos of each model
    cars = [a for a in answers if a["verdict"] == "car"]
    assert len(cars) >= len(answers) // 2, [a["verdict"] for a in answers]
    assert all(a["message"] == "a car we know" and a["candidates"][0]["probability"] == a["confidence"]
               for a in cars)


@pytest.mark.slow
def test_bad_photos_get_no_car_recognised_never_a_500(client):
    from PIL import Image

    from autodetect.sandbox.cars import spec_for
    from autodetect.sandbox.render import render_car

    car = render_car(spec_for("Audi TT"), np.random.default_rng(5))
    cases = {
        "one colour": _jpeg(Image.new("RGB", (640, 480), (90, 120, 200))),
        "one colour, PNG with alpha": _png(Image.new("RGBA", (300, 300), (0, 0, 0, 0))),
        "one grey level": _png(Image.new("L", (200, 150), 128)),
        "tiny car": _jpeg(car.resize((60, 45))),
        "one pixel": _png(Image.new("RGB", (1, 1), (255, 0, 0))),
        "a strip": _png(car.resize((600, 40))),
        "text screenshot": _render("screenshot", 904),
        "another text screenshot": _png(Image.open(io.BytesIO(_render("screenshot", 905)))),
    }
    for name, data in cases.items():
        kind = "image/png" if data.startswith(b"\x89PNG") else "image/jpeg"
        body = _identify(client, data, kind=kind)
        assert body["verdict"] == "no_car" and body["message"].startswith("no car recognised"), (name, body)
        if name in ("one colour", "one grey level", "one colour, PNG with alpha"):
            assert body["message"] == "no car recognised: the photo is all one colour", name
        if name in ("tiny car", "one pixel", "a strip"):
            assert body["message"] == "no car recognised: the photo is smaller than 64 px", name


def _cli(settings, *args: str) -> str:
    root = Path(__file__).resolve().parents[2]
    code = f"from autodetect.cli import app\napp({['--data-dir', str(settings.data_dir), *args]!r})"
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "AUTODETECT_BROKER_URL": "memory://", "COLUMNS": "160"})
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.mark.slow
def test_the_command_line_says_no_car_recognised(version, tmp_path):
    settings, _ = version
    document, interior = tmp_path / "document.jpg", tmp_path / "interior.jpg"
    document.write_bytes(_render("document", 911))
    interior.write_bytes(_render("interior", 912))
    out = _cli(settings, "identify", str(document), str(interior))
    assert f"{document}: no car recognised" in out and f"{interior}: no car recognised" in out, out
    assert "%" not in out  # no ranking for a photo without a car
    answers = json.loads(_cli(settings, "identify", "--json", str(document)))
    assert answers[0]["verdict"] == "no_car" and answers[0]["message"] == "no car recognised"
    assert len(answers[0]["candidates"]) == 3 and answers[0]["ood_score"] is not None
