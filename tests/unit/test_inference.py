"""The inference stage on SQLite, in-process, with tiny ONNX models (no TensorFlow): batches, top-k,
listing averages and the mismatch flag, bad input, model switches, claims and redelivery."""

from __future__ import annotations

from datetime import timedelta

import shutil
import subprocess
import sys
import time

import pytest
from sqlalchemy import func, select, update

from autodetect.db import session_scope, upgrade
from autodetect.model.provider import MEASURED_FASTEST, ModelProvider, serving_preference
from autodetect.pipeline.inference import predict_batch, predict_pending
from autodetect.pipeline.inference_claims import claim, claim_batch
from autodetect.model.registry import find_version, promote
from autodetect.settings import configure
from autodetect.pipeline.status import pipeline_status
from autodetect.storage import Image, ListingPrediction, Prediction, utcnow
from autodetect.pipeline.sweeper import sweep
from tests.unit.test_inference_support import (
    ROOT,
    add_listings,
    jpeg,
    register_version,
    store_photos,
)

RGB = ["red", "green", "blue"]


@pytest.fixture
def settings(tmp_path):
    s = configure(data_dir=tmp_path / "data", database_url="", broker_url="memory://", inference_batch_size=8,
                  inference_batch_wait_s=0.0, top_k=3, mismatch_confidence=0.6, stale_after_s=0)
    upgrade(s)
    return s


@pytest.fixture
def photos(settings):
    return store_photos(settings, {c: jpeg(c, seed=i) for i, c in enumerate(RGB)} | {
        "red2": jpeg("red", seed=7), "grey": jpeg((128, 128, 128))})


def _counts(settings):
    with session_scope(settings) as s:
        return dict(s.execute(select(Image.state, func.count()).group_by(Image.state)).all())


def test_batch_topk_listing_average_and_mismatch(settings, photos):
    v1 = register_version(settings, "v1", RGB)
    ids = add_listings(settings, [
        {"photos": [photos["red"], photos["red2"]], "label": "red"},       # agrees
        {"photos": [photos["blue"]], "label": "green"},                     # confidently disagrees
        {"photos": [photos["red"], photos["grey"]], "label": "red"},       # one photo ambiguous
    ])
    provider = ModelProvider(settings)
    result = predict_batch(settings, provider)
    assert (result.predicted, result.failed, result.listings, result.model) == (5, 0, 3, "v1")
    assert predict_batch(settings, provider).claimed == 0, "nothing left: a second message finds no work"
    with session_scope(settings) as s:
        preds = {p.image_id: p for p in s.scalars(select(Prediction))}
        assert set(preds) == set(ids) and all(p.model_version_id == v1 for p in preds.values())
        red = preds[ids[0]]
        assert red.top_class == "red" and len(red.topk) == 3 and red.topk[0] == ["red", red.top_probability]
        assert [p for _, p in red.topk] == sorted([p for _, p in red.topk], reverse=True)
        assert sum(p for _, p in red.topk) == pytest.approx(1.0, abs=1e-4)
        lp = {x.listing_id: x for x in s.scalars(select(ListingPrediction))}
        assert {x.model_version_id for x in lp.values()} == {v1}
        # Listing 1 averages its two red photos; listing 3 averages red with grey (uniform).
        expect = (preds[ids[0]].top_probability + preds[ids[1]].top_probability) / 2
        assert lp[1].top_class == "red" and lp[1].photos == 2 and lp[1].top_probability == pytest.approx(expect, 1e-5)
        grey = dict(preds[ids[4]].topk)
        assert lp[3].top_probability == pytest.approx((preds[ids[3]].top_probability + grey["red"]) / 2, 1e-5)
        assert not lp[1].mismatch and not lp[3].mismatch
        assert lp[2].top_class == "blue" and lp[2].top_probability >= 0.6 and lp[2].mismatch
        status = pipeline_status(s)
    assert [(x["listing"], x["seller_label"], x["model_says"]) for x in status["suspects"]] == [(2, "green", "blue")]
    assert status["listings"]["tagged"] == 3
    assert _counts(settings) == {"done": 5}


def test_a_duplicate_photo_counts_once_per_listing(settings, photos):
    register_version(settings, "v1", RGB)
    [orig] = add_listings(settings, [{"photos": [photos["red"]], "label": "red"}])
    # Listing 2 relists the same photo twice (duplicates of image ``orig``) plus a blue one.
    add_listings(settings, [{"photos": [photos["red"], photos["red"], photos["blue"]], "label": "red",
                             "duplicate_of": [orig, orig, None]}], first_id=2)
    with session_scope(settings) as s:
        s.execute(update(Image).where(Image.duplicate_of_id.is_not(None)).values(stage="done", state="done"))
    predict_batch(settings, ModelProvider(settings))
    with session_scope(settings) as s:
        assert s.scalar(select(func.count()).select_from(Prediction)) == 2, "duplicates are not predicted"
        lp = s.scalars(select(ListingPrediction).where(ListingPrediction.listing_id == 2)).one()
        assert lp.photos == 2, "the relisted photo counts once, with its original's prediction"


def test_a_vanished_photo_fails_clearly_and_the_rest_succeed(settings, photos):
    register_version(settings, "v1", RGB)
    ids = add_listings(settings, [{"photos": [photos["red"], photos["green"], photos["blue"]], "label": "red"}])
    (settings.data_dir / "images" / photos["green"]).unlink()
    result = predict_batch(settings, ModelProvider(settings))
    assert (result.predicted, result.failed) == (2, 1)
    with session_scope(settings) as s:
        failed = s.get(Image, ids[1])
        assert (failed.stage, failed.state) == ("inference", "failed")
        assert failed.error == f"photo file missing from the store: {photos['green']}"
        assert sorted(s.scalars(select(Prediction.image_id))) == [ids[0], ids[2]]
        assert s.scalars(select(ListingPrediction.photos)).one() == 2
        assert pipeline_status(s)["errors"] == [{"stage": "inference", "error": failed.error, "photos": 1}]


@pytest.mark.parametrize("damage", ["missing_dir", "corrupt_model", "corrupt_labels", "other_classes"])
def test_a_broken_promoted_model_is_given_up_and_the_last_good_one_restored(settings, photos, damage):
    """The provider keeps the last good model (the API answers with it), but the pipeline does not let
    it stand in: its predictions would not be the active version's. The photos wait, uncounted (the
    model is not their fault); the version has the bounded fate: after ``model_load_attempts`` failed
    loads it is ``failed`` with the reason, the version before it is active again and predicts them."""
    register_version(settings, "v1", RGB)
    register_version(settings, "v2", ["blue", "red", "green"], active=False)
    directory = settings.data_dir / "models" / "v2"
    if damage == "missing_dir":
        shutil.rmtree(directory)
    elif damage == "corrupt_model":
        (directory / "model.onnx").write_bytes(b"not a model at all")
    elif damage == "corrupt_labels":
        (directory / "labels.json").write_text("{half")
    else:
        (directory / "labels.json").write_text('{"classes": ["a", "b"], "backbone": "test", "image_size": 16}')
    clock = [1000.0]
    provider = ModelProvider(settings, clock=lambda: clock[0])
    add_listings(settings, [{"photos": [photos["red"]], "label": "red"}])
    assert predict_batch(settings, provider).model == "v1"
    with session_scope(settings) as s:
        promote(s, find_version(s, "v2"))
    ids = add_listings(settings, [{"photos": [photos["green"], photos["blue"]], "label": "red"}], first_id=2)
    for attempt in range(1, settings.model_load_attempts + 1):
        result = predict_batch(settings, provider)
        assert result.predicted == 0 and result.errors[0].startswith("cannot load model v2:")
        assert provider.load_failures(find_v2_id(settings)) == attempt
        assert {"missing_dir": "not found", "corrupt_model": "model.onnx", "corrupt_labels": "corrupt",
                "other_classes": "other classes"}[damage] in provider.last_error
        assert [_row(settings, i)[:3] for i in ids] == [("inference", "pending", 0)] * 2, "waiting, uncounted"
        with session_scope(settings) as s:
            assert provider.get(s).name == "v1", "the last good model stays loaded (the API's stand-in)"
        clock[0] += settings.inference_model_retry_s + 1
    with session_scope(settings) as s:
        v2 = find_version(s, "v2")
        assert v2.status == "failed" and v2.metrics["load_error"].startswith("cannot load model v2:")
        assert find_version(s, "v1").status == "active"
    assert predict_batch(settings, provider).predicted == 2
    with session_scope(settings) as s:
        assert {s.get(Image, i).state for i in ids} == {"done"}
        assert set(s.scalars(select(Prediction.model_version_id))) == {1}


def find_v2_id(settings) -> int:
    with session_scope(settings) as s:
        return find_version(s, "v2").id


def test_versions_with_different_classes_never_mix(settings, photos):
    v1 = register_version(settings, "v1", RGB)
    ids = add_listings(settings, [{"photos": [photos["red"], photos["blue"]], "label": "red"}])
    provider = ModelProvider(settings)
    predict_batch(settings, provider)
    with session_scope(settings) as s:
        before = s.scalars(select(ListingPrediction)).one()
        before = (before.top_class, before.topk, before.photos)
    v2_classes = ["yellow", "blue", "red", "green"]  # another order, and a class v1 never had
    v2 = register_version(settings, "v2", v2_classes)
    with session_scope(settings) as s:
        s.execute(update(Image).values(stage="inference", state="pending"))  # what a re-tag does
    assert predict_batch(settings, provider).model == "v2"
    with session_scope(settings) as s:
        preds = {(p.image_id, p.model_version_id): p for p in s.scalars(select(Prediction))}
        assert set(preds) == {(i, v) for i in ids for v in (v1, v2)}
        for (image_id, version), p in preds.items():
            allowed = set(RGB) if version == v1 else set(v2_classes)
            assert {name for name, _ in p.topk} <= allowed and p.top_class in allowed
        assert preds[(ids[0], v1)].top_class == preds[(ids[0], v2)].top_class == "red"
        lps = {x.model_version_id: x for x in s.scalars(select(ListingPrediction))}
        assert set(lps) == {v1, v2}
        assert (lps[v1].top_class, lps[v1].topk, lps[v1].photos) == before, "v1's listing answer unchanged"
        assert {n for n, _ in lps[v2].topk} <= set(v2_classes) and lps[v2].photos == 2
        assert pipeline_status(s)["listings"]["tagged"] == 1


def test_a_promotion_during_a_batch_requeues_it_for_the_new_version(settings, photos):
    register_version(settings, "v1", RGB)
    v2 = register_version(settings, "v2", RGB, active=False)
    ids = add_listings(settings, [{"photos": [photos["red"], photos["green"]], "label": "red"}])
    provider = ModelProvider(settings)
    with session_scope(settings) as s:
        model = provider.get(s)
    real = model.predict

    def promote_meanwhile(x):
        with session_scope(settings) as s:
            promote(s, find_version(s, "v2"))
        return real(x)

    model.predict = promote_meanwhile
    result = predict_batch(settings, provider)
    assert result.model == "v1" and result.requeued == ids
    assert _counts(settings) == {"pending": 2}
    assert predict_batch(settings, provider).model == "v2"
    with session_scope(settings) as s:
        assert s.scalar(select(func.count()).select_from(Prediction).where(Prediction.model_version_id == v2)) == 2
    assert _counts(settings) == {"done": 2}


def _row(settings, image_id):
    with session_scope(settings) as s:
        return s.execute(select(Image.stage, Image.state, Image.attempts, Image.error, Image.next_attempt_at,
                                Image.lease_until).where(Image.id == image_id)).one()


def _make_due(settings, *where):
    with session_scope(settings) as s:
        s.execute(update(Image).where(*where).values(next_attempt_at=utcnow() - timedelta(seconds=1),
                                                     updated_at=utcnow() - timedelta(seconds=2)))


def test_a_poison_photo_is_counted_alone_and_its_neighbours_are_predicted(settings, photos):
    settings = configure(**{**settings.model_dump(), "max_attempts": 2})
    register_version(settings, "v1", RGB)
    ids = add_listings(settings, [{"photos": [photos[c] for c in RGB], "label": "red"}])
    provider = ModelProvider(settings)
    with session_scope(settings) as s:
        model = provider.get(s)
    real = model.predict

    def poisoned(x):  # the runtime falls over on the green photo, whatever batch it is in
        if (x[..., 1].mean(axis=(1, 2)) > x[..., 0].mean(axis=(1, 2)) + 0.1).any():
            raise RuntimeError("runtime fell over")
        return real(x)

    model.predict = poisoned
    result = predict_batch(settings, provider)
    assert (result.predicted, result.failed) == (2, 1)
    green = _row(settings, ids[1])
    assert green[:4] == ("inference", "pending", 1, "RuntimeError: runtime fell over")
    assert green.next_attempt_at > utcnow() + timedelta(seconds=30), "backs off before its next try"
    assert predict_batch(settings, provider).claimed == 0, "not due yet: not claimed"
    _make_due(settings, Image.id == ids[1])
    assert predict_batch(settings, provider).failed == 1
    assert _row(settings, ids[1])[:3] == ("inference", "failed", 2), "failed for good after max_attempts"
    assert _counts(settings) == {"done": 2, "failed": 1}


def test_a_killed_batch_is_swept_counted_and_predicted_once(settings, photos):
    register_version(settings, "v1", RGB)
    ids = add_listings(settings, [{"photos": [photos[c] for c in RGB], "label": "red"}])
    provider = ModelProvider(settings)
    # A worker killed mid-batch: its rows stay claimed ("running") until their lease ends.
    with session_scope(settings) as s:
        assert claim(s, 2) == ids[:2]
    assert _row(settings, ids[0]).lease_until > utcnow() + timedelta(seconds=60)
    assert predict_batch(settings, provider).predicted == 1, "the claimed rows are not taken twice"
    sent = []
    sweep(settings, lambda stage, rows: sent.append((getattr(stage, "value", stage), list(rows))))
    assert not [x for x in sent if x[0] == "inference"], "inside their lease: left alone"
    with session_scope(settings) as s:
        s.execute(update(Image).where(Image.id.in_(ids[:2])).values(lease_until=utcnow() - timedelta(seconds=1)))
    sweep(settings, lambda stage, rows: sent.append((getattr(stage, "value", stage), list(rows))))
    assert _row(settings, ids[0])[:3] == ("inference", "pending", 1), "the lost claim counts as an attempt"
    assert "lost" in _row(settings, ids[0]).error
    _make_due(settings, Image.id.in_(ids[:2]))
    sent.clear()
    sweep(settings, lambda stage, rows: sent.append((getattr(stage, "value", stage), list(rows))))
    assert sent == [("inference", [ids[0]]), ("inference", [ids[1]])], "tried before: sent alone"
    assert predict_batch(settings, provider).predicted == 1 and predict_batch(settings, provider).predicted == 1
    # Redelivered messages and a re-pended row that already has its prediction: no new rows, no compute.
    with session_scope(settings) as s:
        s.execute(update(Image).where(Image.id == ids[0]).values(stage="inference", state="pending", attempts=0))
    again = predict_batch(settings, provider)
    assert (again.predicted, again.skipped) == (0, 1)
    with session_scope(settings) as s:
        rows = s.execute(select(Prediction.image_id, func.count()).group_by(Prediction.image_id)).all()
    assert sorted(rows) == [(i, 1) for i in ids]
    assert _counts(settings) == {"done": 3}


def test_a_partial_batch_waits_at_most_the_batch_wait(settings, photos):
    register_version(settings, "v1", RGB)
    s2 = configure(**{**settings.model_dump(), "inference_batch_size": 32, "inference_batch_wait_s": 0.4})
    started = time.monotonic()
    assert claim_batch(s2) == [], "nothing pending: no waiting at all"
    assert time.monotonic() - started < 0.2
    add_listings(s2, [{"photos": [photos["red"]] * 3, "label": "red"}])
    started = time.monotonic()
    assert len(claim_batch(s2)) == 3
    assert 0.35 <= time.monotonic() - started < 1.5
    add_listings(s2, [{"photos": [photos["red"]] * 40, "label": "red"}], first_id=2)
    started = time.monotonic()
    assert len(claim_batch(s2)) == 32, "a full batch does not wait"
    assert time.monotonic() - started < 0.3


def test_serving_format_preference(tmp_path):
    measured = configure(data_dir=tmp_path)
    for backbone in ("inception_v3", "mobilenet_v3_small", "compact_cnn"):
        assert serving_preference(measured, backbone)[0] == MEASURED_FASTEST[backbone]
    assert serving_preference(measured, "unmeasured") == ("tflite", "onnx")
    assert serving_preference(configure(data_dir=tmp_path, serving_format="onnx"), "inception_v3") == ("onnx", "tflite")


def _cli(*args: str) -> str:
    """``autodetect ARGS`` in a fresh interpreter; its output, exit code and the heavy modules it loaded."""
    code = f"""
import sys
from autodetect.cli import app
try:
    app({list(args)!r})
except SystemExit as e:
    print("exit", e.code)
print("heavy", sorted(k for k in sys.modules if k.split(".")[0] in ("tensorflow", "keras", "celery")))
"""
    out = subprocess.run([sys.executable, "-c", code], check=False, cwd=ROOT, capture_output=True, text=True,
                         timeout=120, env={"AUTODETECT_BROKER_URL": "memory://", "PATH": "/usr/bin:/bin",
                                           "COLUMNS": "120"})
    return out.stdout + out.stderr


def test_identify_prints_the_top_three_without_workers_or_tensorflow(settings, photos, tmp_path):
    register_version(settings, "v1", ["green", "red", "blue", "grey"])
    photo = tmp_path / "street.jpg"
    photo.write_bytes(jpeg("red", side=300))
    out = _cli("--data-dir", str(settings.data_dir), "identify", str(photo))
    assert "heavy []" in out and ("exit 0" in out or "exit None" in out), out
    lines = [line for line in out.splitlines() if "%" in line]
    assert len(lines) == 3 and "red" in lines[0], out
    out = _cli("--data-dir", str(settings.data_dir), "identify", str(photo), str(tmp_path / "nope.jpg"))
    assert "nope.jpg" in out and "exit 2" in out and "Traceback" not in out, out  # a clear error
    from autodetect.serving.identify import identify_photos

    [(_, answer)] = identify_photos(settings, [photo])
    ranking = answer.ranking
    assert answer.verdict == "car"  # a version without open-set calibration answers as before
    assert ranking[0][0] == "red" and len(ranking) == 3
    assert all(0 <= p <= 1 for _, p in ranking) and [p for _, p in ranking] == sorted((p for _, p in ranking), reverse=True)


def test_the_worker_path_never_imports_tensorflow(settings, photos):
    register_version(settings, "v1", RGB)
    add_listings(settings, [{"photos": [photos["red"]], "label": "red"}])
    code = f"""
import sys
from autodetect.settings import configure
configure(data_dir={str(settings.data_dir)!r}, broker_url="memory://")
import workers.inference as w
print(w.predict.run())
bad = sorted(k for k in sys.modules if k.split(".")[0] in ("tensorflow", "keras", "tf_keras"))
print("heavy", bad)
"""
    out = subprocess.run([sys.executable, "-c", code], check=False, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert "'predicted': 1" in out.stdout and "heavy []" in out.stdout, out.stdout + out.stderr


def test_one_message_drains_the_queue_as_a_pipeline(settings, photos):
    register_version(settings, "v1", RGB)
    ids = add_listings(settings, [{"photos": [photos[c] for c in RGB] * 2, "label": "red"} for _ in range(5)])
    assert len(ids) == 30
    provider = ModelProvider(settings)
    seen = []
    with session_scope(settings) as s:
        model = provider.get(s)
    real = model.predict

    def watch(x):
        with session_scope(settings) as s:  # while the model runs, the next batch is already claimed
            seen.append(s.scalar(select(func.count()).select_from(Image).where(Image.state == "running")))
        return real(x)

    model.predict = watch
    result = predict_pending(settings, provider)
    assert (result.predicted, result.batches, result.failed) == (30, 4, 0)  # batches of 8: 8, 8, 8, 6
    assert max(seen) <= 16 and seen[-1] in (6, 14), "at most two batches claimed at a time"
    assert set(result.seconds) == {"claim", "read", "decode", "model", "write"}
    assert _counts(settings) == {"done": 30}
    assert predict_pending(settings, provider).batches == 0, "a surplus message finds nothing"
    # budget 0: one batch per message
    with session_scope(settings) as s:
        s.execute(update(Image).values(stage="inference", state="pending"))
    assert predict_pending(settings, provider, budget_s=0).batches == 1


@pytest.mark.parametrize("fail_at", [1, 3])
def test_a_pipeline_that_fails_gives_back_what_it_did_not_write(settings, photos, fail_at):
    register_version(settings, "v1", RGB)
    add_listings(settings, [{"photos": [photos[c] for c in RGB] * 2, "label": "red"} for _ in range(5)])
    provider = ModelProvider(settings)
    with session_scope(settings) as s:
        model = provider.get(s)
    real, calls = model.predict, []

    def flaky(x):
        calls.append(len(x))
        if len(calls) == fail_at:
            raise KeyboardInterrupt  # or any error: Ctrl-C in the middle of a batch
        return real(x)

    model.predict = flaky
    with pytest.raises(KeyboardInterrupt):
        predict_pending(settings, provider)
    written = 8 * (fail_at - 1)
    assert _counts(settings) == {k: v for k, v in {"done": written, "pending": 30 - written}.items() if v}
    with session_scope(settings) as s:
        assert s.scalar(select(func.count()).select_from(Prediction)) == written
    model.predict = real
    assert predict_pending(settings, provider).predicted == 30 - written
    assert _counts(settings) == {"done": 30}


def test_serving_threads_share_the_cores(tmp_path, monkeypatch):
    from autodetect.model.provider import serving_threads

    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(8)))
    assert serving_threads(configure(data_dir=tmp_path)) == 8, "LiteRT alone would take one thread"
    assert serving_threads(configure(data_dir=tmp_path), share=2) == 4
    assert serving_threads(configure(data_dir=tmp_path), share=16) == 1
    assert serving_threads(configure(data_dir=tmp_path, inference_threads=3), share=2) == 3
