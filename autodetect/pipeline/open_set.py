"""A candidate's open set: its outlier exposure, its calibration and its evaluation (no TensorFlow:
calibration and evaluation run the exported model).

Outlier exposure (Hendrycks et al., 2019): the training set gets sandbox photos without a car and of
models outside the classes (the *training* part) with a uniform target (``model.train_data``),
``open_set_outlier_share`` of the training photos in number. Calibration: the temperature, the OOD
score and the thresholds are fitted on the validation split plus the sandbox's *calibration* photos
(photos without a car; cars of models outside the version's classes). Evaluation: the figures recorded
with the version are measured on the test split plus the sandbox's *evaluation* photos (other seeds,
other unknown models). Sandbox photos are rendered here, stored as the pipeline stores a photo
(normalized JPEG); the three parts share no photo and no unknown model. For a catalogue of real photos
they are synthetic, so their figures say how the thresholds behave on drawn scenes, not more.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

from autodetect.images.decode import encode_jpeg, normalize
from autodetect.model.calibration import OUTLIER, SCORES, OpenSet, auroc, fit_open_set
from autodetect.model.evaluate import open_set_metrics, predict_samples, score_histogram
from autodetect.model.runtime import load_batch
from autodetect.model.split import Sample
from autodetect.sandbox.open_set import non_car_photos, unknown_model_photos
from autodetect.settings import Settings

Predict = Callable[[np.ndarray], np.ndarray]


def outlier_samples(settings: Settings, classes: Sequence[str], count: int, folder: Path) -> list[Sample]:
    """``count`` outlier-exposure photos written to ``folder``: half without a car, half of models outside
    ``classes`` (the sandbox's *training* part), labelled ``OUTLIER``."""
    folder.mkdir(parents=True, exist_ok=True)
    seed, side = settings.train_seed, settings.normalized_max_side
    photos = [*non_car_photos(count // 2, part="training", seed=seed),
              *unknown_model_photos(classes, count - count // 2, part="training", seed=seed)]
    samples = []
    for i, (name, img) in enumerate(photos):
        path = folder / f"{i}.jpg"
        path.write_bytes(encode_jpeg(normalize(img, side)))
        samples.append(Sample(str(path), OUTLIER, f"outlier-{i}", f"outlier-{i}:{name}"))
    return samples


def _probs(predict: Predict, photos: Iterable, image_size: int, max_side: int) -> tuple[np.ndarray, list[str]]:
    """Probabilities of ``(name, image)`` photos, each stored as the pipeline stores one; and their names."""
    names, data = [], []
    for name, img in photos:
        names.append(name)
        data.append(encode_jpeg(normalize(img, max_side)))
    batches = [predict(load_batch(data[i:i + 64], image_size)) for i in range(0, len(data), 64)]
    return (np.concatenate(batches) if batches else np.zeros((0, 0))), names


def _known(predict: Predict, samples: Sequence[Sample], classes: list[str], image_size: int):
    """Probabilities and class indices of the samples whose label is one of ``classes``."""
    index = {c: i for i, c in enumerate(classes)}
    kept = [s for s in samples if s.label in index]
    probs, _ = predict_samples(predict, kept, image_size=image_size)
    return probs.reshape(len(kept), len(classes)), np.array([index[s.label] for s in kept], dtype=np.int64)


def _sandbox_sets(predict: Predict, classes: list[str], part: str, settings: Settings, image_size: int):
    """Probabilities of this part's non-car photos (with their kinds) and unknown-model photos."""
    count, side = settings.open_set_photos, settings.normalized_max_side
    non_car, kinds = _probs(predict, non_car_photos(count, part=part, seed=settings.train_seed), image_size, side)
    unknown, _ = _probs(predict, unknown_model_photos(classes, count, part=part, seed=settings.train_seed),
                        image_size, side)
    width = len(classes)
    return non_car.reshape(-1, width), kinds, unknown.reshape(-1, width)


def calibrate_open_set(settings: Settings, predict: Predict, val: Sequence[Sample], test: Sequence[Sample],
                       classes: Sequence[str], image_size: int) -> tuple[OpenSet, dict]:
    """Fit a version's open set on ``val`` and the calibration photos, and measure it on ``test`` and the
    evaluation photos. Returns the calibration and the figures to record with the version."""
    classes = list(classes)
    val_probs, val_labels = _known(predict, val, classes, image_size)
    non_car, _, unknown = _sandbox_sets(predict, classes, "calibration", settings, image_size)
    open_set, candidates = fit_open_set(val_probs, val_labels, non_car, unknown,
                                        max_false_accept=settings.open_set_max_false_accept,
                                        max_false_reject=settings.open_set_max_false_reject)
    test_probs, test_labels = _known(predict, test, classes, image_size)
    non_car, kinds, unknown = _sandbox_sets(predict, classes, "evaluation", settings, image_size)
    figures = open_set_metrics(open_set, test_probs, test_labels, non_car, unknown)
    score = SCORES[open_set.score]
    known_scores, non_car_scores = score(test_probs, open_set.temperature), score(non_car, open_set.temperature)
    figures["auroc_non_car_by_kind"] = {kind: auroc(known_scores, non_car_scores[np.array(kinds) == kind])
                                        for kind in dict.fromkeys(kinds)}
    figures["score_auroc_validation"] = candidates
    figures["score_histogram"] = score_histogram({"car": known_scores, "non_car": non_car_scores,
                                                  "unknown_model": score(unknown, open_set.temperature)})
    figures["calibration"] = open_set.to_dict()
    return open_set, _json_safe(figures)


def _json_safe(value):
    """``value`` with NaN and infinities as None (JSON has neither; PostgreSQL's JSON refuses them)."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value
