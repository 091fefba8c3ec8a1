"""Clean training data: the confident-learning rule on planted probabilities, and the review before a
training run on SQLite with a real (colour) ONNX judge: a contradicted photo is recorded with its reason,
left out of ``labelled_samples`` and counted by the status; relabelled, or judged by a version that is
not confident enough, it comes back. The sandbox's label noise: exact, by seed, photos unchanged."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import select, update

from autodetect.db import session_scope, upgrade
from autodetect.model.clean_labels import contradicted_labels, typical_confidence
from autodetect.pipeline.retraining import labelled_samples
from autodetect.pipeline.status import pipeline_status
from autodetect.pipeline.training_exclusions import review_training_photos
from autodetect.sandbox.marketplace import Marketplace
from autodetect.settings import configure
from autodetect.storage import CarClass, Image, Listing, ModelVersion
from autodetect.model.bundle import save_labels
from tests.unit.test_inference_support import add_listings, jpeg, register_version, store_photos

RGB = ["red", "green", "blue"]


def _confident_probs(rng: np.random.Generator, labels: list[int], n_classes: int) -> np.ndarray:
    """Probabilities of a good model: the labelled class between 0.6 and 0.95, the rest spread."""
    probs = np.zeros((len(labels), n_classes))
    for row, label in enumerate(labels):
        own = rng.uniform(0.6, 0.95)
        rest = rng.dirichlet(np.ones(n_classes - 1)) * (1 - own)
        probs[row] = np.insert(rest, label, own)
    return probs


def test_a_planted_flipped_label_is_found_and_correct_ones_are_kept():
    rng = np.random.default_rng(3)
    classes = ["Audi A4", "BMW X5", "Ford F-150"]
    truth = [k for k in range(3) for _ in range(30)]
    probs = _confident_probs(rng, truth, 3)
    labels = [classes[k] for k in truth]
    probs[5] = [0.02, 0.96, 0.02]  # labelled Audi A4, confidently a BMW X5: the planted flip
    probs[6] = [0.45, 0.40, 0.15]  # a hard Audi: below its typical confidence, but not far below
    probs[7] = [0.20, 0.42, 0.38]  # far below, yet no other class near its typical confidence
    probs[8] = [0.05, 0.05, 0.90]  # a Ford labelled Audi
    probs[38] = [0.58, 0.04, 0.38]  # labelled BMW X5: an Audi, below t_Audi (as a judge that trained on it sees it)
    found = contradicted_labels(probs, labels, classes, given_ratio=0.5, suspect_ratio=0.6, min_class_photos=10)
    assert [(c.row, c.given, c.suspected) for c in found] == [(5, "Audi A4", "BMW X5"), (8, "Audi A4", "Ford F-150"),
                                                                (38, "BMW X5", "Audi A4")]
    strict = contradicted_labels(probs, labels, classes, given_ratio=0.5, suspect_ratio=1.0, min_class_photos=10)
    assert [c.row for c in strict] == [5, 8]  # Northcutt's p_k >= t_k misses the one seen in training
    typical = typical_confidence(probs, np.array(truth), min_class_photos=10)
    assert found[0].typical == pytest.approx(typical[1]) and found[0].probability == pytest.approx(0.96)
    assert found[0].given_probability == pytest.approx(0.02)


def test_small_classes_and_unknown_labels_are_not_judged():
    rng = np.random.default_rng(4)
    classes = ["a", "b", "c"]
    truth = [0] * 20 + [1] * 20 + [2] * 3
    probs = _confident_probs(rng, truth, 3)
    labels = [classes[k] for k in truth] + ["not in the model"]
    probs = np.vstack([probs, [0.0, 0.99, 0.01]])
    probs[40] = [0.01, 0.98, 0.01]  # labelled "c" (3 photos: no typical confidence), looks like "b"
    probs[0] = [0.01, 0.01, 0.98]  # labelled "a", looks like "c": but "c" is never a suspect
    assert contradicted_labels(probs, labels, classes, given_ratio=0.5, suspect_ratio=0.6, min_class_photos=10) == []
    with pytest.raises(ValueError):
        contradicted_labels(probs[:5], labels, classes, given_ratio=0.5, suspect_ratio=0.6, min_class_photos=10)


# --- the review before a training run ------------------------------------------------------------
@pytest.fixture
def settings(tmp_path):
    s = configure(data_dir=tmp_path / "data", database_url="", broker_url="memory://", inference_batch_size=8,
                  clean_labels_min_top1=0.8, clean_labels_given_ratio=0.5, clean_labels_suspect_ratio=0.6,
                  clean_labels_min_class_photos=10)
    upgrade(s)
    return s


def _catalogue(settings, grey: bool = False, missing: bool = True) -> list[int]:
    """12 listings of each colour labelled right, one pure red photo labelled green, one photo that is
    not in the store (unless not ``missing``) and a grey photo labelled red (if ``grey``); returns the
    ids of those last ones."""
    photos = {f"{c}{i}": jpeg(c, seed=i) for c in RGB for i in range(12)}
    photos["flipped"], photos["grey"] = jpeg((255, 0, 0)), jpeg((128, 128, 128))
    keys = store_photos(settings, photos)
    listings = [{"photos": [keys[f"{c}{i}"]], "label": c} for c in RGB for i in range(12)]
    listings += [{"photos": [keys["flipped"]], "label": "green"}]
    listings += [{"photos": ["ab/missing.jpg"], "label": "blue"}] if missing else []
    listings += [{"photos": [keys["grey"]], "label": "red"}] if grey else []
    ids = add_listings(settings, listings, stage="done", state="done")
    return ids[36:]


def _judge(settings, name: str, top1: float, open_set: dict | None = None, known_no_car: float | None = None) -> int:
    """A version judging by colour: its test top-1, its open-set calibration (stored with the bundle, as
    training stores it) and the share of its test cars it called "no car"."""
    version_id = register_version(settings, name, RGB)
    if open_set:
        save_labels(settings.data_dir / "models" / name, RGB, backbone="test", image_size=16, open_set=open_set)
    metrics = {"top1": top1, **({"open_set": {"known_no_car": known_no_car}} if known_no_car is not None else {})}
    with session_scope(settings) as s:
        s.execute(update(ModelVersion).where(ModelVersion.id == version_id).values(metrics=metrics))
    return version_id


def _trained_on(settings) -> set[str]:
    with session_scope(settings) as s:
        return {sample.path.rsplit("/", 1)[-1] for sample in labelled_samples(s, settings)}


def _reason(settings, image_id: int) -> str | None:
    with session_scope(settings) as s:
        return s.scalar(select(Image.excluded_reason).where(Image.id == image_id))


def test_a_contradicted_photo_is_recorded_left_out_and_counted(settings):
    flipped, missing = _catalogue(settings)
    everything = _trained_on(settings)
    _judge(settings, "v1", top1=0.9)

    review = review_training_photos(settings)

    assert review.judge == "v1" and review.photos == 38 and dict(review.excluded) == {"label contradicted": 1}
    reason = _reason(settings, flipped)
    assert reason.startswith("label contradicted: seller says green (0.00), v1 says red at 1.00 (typical ")
    with session_scope(settings) as s:
        key = s.scalar(select(Image.normalized_key).where(Image.id == flipped))
        assert pipeline_status(s)["excluded_from_training"] == {"not a car": 0, "label contradicted": 1}
    assert _trained_on(settings) == everything - {key.rsplit("/", 1)[-1]}
    assert _reason(settings, missing) is None  # unreadable: not judged, not excluded


CALIBRATED = {"temperature": 1.0, "score": "msp", "no_car_below": 0.6, "unknown_below": None, "fitted": True}


def test_a_photo_the_judge_calls_no_car_is_left_out_as_not_a_car(settings):
    flipped, _, grey = _catalogue(settings, grey=True)
    _judge(settings, "v1", top1=0.9, open_set=CALIBRATED, known_no_car=0.01)

    review = review_training_photos(settings)

    assert dict(review.excluded) == {"not a car": 1, "label contradicted": 1}
    assert _reason(settings, grey) == "not a car: v1's out-of-distribution score (msp) 0.33 is below its threshold 0.60"
    assert _reason(settings, flipped).startswith("label contradicted: seller says green")
    with session_scope(settings) as s:
        assert pipeline_status(s)["excluded_from_training"] == {"not a car": 1, "label contradicted": 1}


def test_no_car_verdicts_of_a_version_that_turns_away_real_cars_are_not_trusted(settings):
    flipped, _, grey = _catalogue(settings, grey=True)
    _judge(settings, "v1", top1=0.9, open_set=CALIBRATED, known_no_car=0.30)  # 30% of its test cars: "no car"
    assert dict(review_training_photos(settings).excluded) == {"label contradicted": 1}
    assert _reason(settings, grey) is None and _reason(settings, flipped) is not None


def test_reasons_are_cleared_when_relabelled_or_no_longer_judged(settings):
    flipped, _ = _catalogue(settings)
    everything = _trained_on(settings)
    _judge(settings, "v1", top1=0.9)
    review_training_photos(settings)
    assert _reason(settings, flipped) is not None

    with session_scope(settings) as s:  # the seller corrects the listing: red it is
        red = s.scalar(select(CarClass.id).where(CarClass.name == "red"))
        listing = s.scalar(select(Image.listing_id).where(Image.id == flipped))
        s.execute(update(Listing).where(Listing.id == listing).values(class_id=red))
    assert dict(review_training_photos(settings).excluded) == {}
    assert _reason(settings, flipped) is None and _trained_on(settings) == everything

    with session_scope(settings) as s:  # wrong again; then a new version too unsure to judge
        green = s.scalar(select(CarClass.id).where(CarClass.name == "green"))
        s.execute(update(Listing).where(Listing.id == listing).values(class_id=green))
    assert dict(review_training_photos(settings).excluded) == {"label contradicted": 1}
    _judge(settings, "v2", top1=0.6)
    review = review_training_photos(settings)
    assert review.judge is None and "v2's test top-1 0.600 is below 0.800" in review.why_no_judge
    assert _reason(settings, flipped) is None and _trained_on(settings) == everything
    with session_scope(settings) as s:
        assert pipeline_status(s)["excluded_from_training"] == {"not a car": 0, "label contradicted": 0}


def test_a_judge_that_cannot_load_excludes_nothing(settings):
    flipped, _ = _catalogue(settings)
    version_id = _judge(settings, "v1", top1=0.9)
    review_training_photos(settings)
    assert _reason(settings, flipped) is not None
    with session_scope(settings) as s:
        s.execute(update(ModelVersion).where(ModelVersion.id == version_id).values(artifacts={"dir": "models/gone"}))
    review = review_training_photos(settings)
    assert review.judge is None and "cannot load v1" in review.why_no_judge
    assert _reason(settings, flipped) is None


@pytest.mark.slow
def test_a_training_run_reviews_its_photos_first_and_trains_without_the_contradicted_one(settings):
    from autodetect.pipeline.retraining import request_run
    from autodetect.pipeline.training import run_training

    settings = configure(**{**settings.model_dump(), "backbone": "compact_cnn", "image_size": 32, "weights": "none",
                            "min_photos_per_class": 10, "train_time_budget_s": 3, "train_epochs_head": 2,
                            "open_set_photos": 4, "retag_on_promote": False})
    (flipped,) = _catalogue(settings, missing=False)
    _judge(settings, "colours", top1=0.9)  # the run makes "v1"
    with session_scope(settings) as s:
        run_id = request_run(s, "manual", "test").id

    outcome = run_training(settings, run_id, lambda *_: None)

    assert _reason(settings, flipped).startswith("label contradicted: seller says green")
    with session_scope(settings) as s:
        trained = s.get(ModelVersion, outcome["version_id"])
        assert trained.dataset["photos"] == 36  # the 37 labelled photos less the contradicted one


# --- label noise in the sandbox ------------------------------------------------------------------
def test_label_noise_flips_an_exact_share_by_seed_and_leaves_the_photos():
    clean, noisy = Marketplace(200, 5, seed=2), Marketplace(200, 5, seed=2, label_noise=0.05)
    flipped = noisy.flipped_listings()
    assert len(flipped) == 10 and flipped == Marketplace(200, 5, seed=2, label_noise=0.05).flipped_listings()
    assert flipped != Marketplace(200, 5, seed=3, label_noise=0.05).flipped_listings()
    assert clean.flipped_listings() == {}
    for index in range(200):
        a, b = clean.listing(index), noisy.listing(index)
        assert (a.photos, a.price, a.year, a.colour, a.class_name) == (b.photos, b.price, b.year, b.colour, b.class_name)
        if index in flipped:
            true, named = flipped[index]
            assert true == a.class_name != named and b.aspects != a.aspects and b.title != a.title
        else:
            assert (a.aspects, a.title) == (b.aspects, b.title)
    path = clean.listing(next(iter(flipped))).photos[0].path
    assert clean.photo_bytes(path) == noisy.photo_bytes(path)
