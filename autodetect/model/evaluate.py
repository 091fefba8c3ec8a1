"""Held-out evaluation from any predict function (no TensorFlow).

``predict`` maps uint8 images (N, S, S, 3) to probabilities (N, C) in ``classes`` order: a
``ServingModel``, ``keras_model.predict`` or a lambda. Images are loaded with ``runtime.load_image``,
the same loader that serving uses.

Report these numbers from the test split; never the best validation epoch. ``open_set_metrics`` adds
the open-set figures of a calibrated version (``calibration``).
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from autodetect.model.calibration import CAR, NO_CAR, UNKNOWN_MODEL, OpenSet, auroc
from autodetect.model.runtime import load_batch
from autodetect.model.split import Sample


@dataclass
class Metrics:
    top1: float
    top3: float
    top5: float
    mean_per_class: float  # mean over classes present in the samples of each class's top-1 accuracy
    listing_top1: float  # a listing's photos' probabilities averaged, against the listing's label
    listing_top3: float
    n_images: int
    n_listings: int
    n_unknown: int = 0  # samples whose label is not in ``classes`` (counted as wrong; not in the matrix)
    per_class: dict[str, float] = field(default_factory=dict)  # class -> top-1 accuracy (present classes)
    confusion: list[list[int]] = field(default_factory=list)  # [true][predicted], ``classes`` order
    images_per_s: float = 0.0  # predict throughput, image loading excluded
    examples: dict[str, list[dict]] = field(default_factory=dict)  # "right"/"wrong": a few photos (``examples``)

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        return (
            f"top-1 {self.top1:.1%}  top-3 {self.top3:.1%}  top-5 {self.top5:.1%}  "
            f"mean/class {self.mean_per_class:.1%}  listing top-1 {self.listing_top1:.1%}  "
            f"({self.n_images} photos, {self.n_listings} listings)"
        )


def _topk_hits(probs: np.ndarray, truth: np.ndarray, k: int) -> np.ndarray:
    """Boolean per row: is ``truth`` (-1 = unknown, never a hit) among the k highest probabilities."""
    if probs.shape[0] == 0:
        return np.zeros(0, bool)
    k = min(k, probs.shape[1])
    top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return (top == truth[:, None]).any(axis=1) & (truth >= 0)


def metrics_from_probs(
    probs: np.ndarray, samples: Sequence[Sample], classes: Sequence[str], *, images_per_s: float = 0.0
) -> Metrics:
    """All metrics from precomputed probabilities (rows in ``samples`` order)."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.shape != (len(samples), len(classes)):
        raise ValueError(f"probabilities of shape {probs.shape}; expected {(len(samples), len(classes))}")
    index = {c: i for i, c in enumerate(classes)}
    truth = np.array([index.get(s.label, -1) for s in samples], dtype=np.int64)
    n = len(samples)
    hit1, hit3, hit5 = (_topk_hits(probs, truth, k) for k in (1, 3, 5))
    pred = probs.argmax(axis=1) if n else np.zeros(0, np.int64)

    confusion = np.zeros((len(classes), len(classes)), dtype=np.int64)
    known = truth >= 0
    np.add.at(confusion, (truth[known], pred[known]), 1)
    per_class = {}
    for i, c in enumerate(classes):
        total = confusion[i].sum()
        if total:
            per_class[c] = float(confusion[i, i] / total)

    # Listing level: average the probabilities of a listing's photos; its label is the majority label.
    rows: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(samples):
        rows[s.listing].append(i)
    if rows:
        lprobs = np.stack([probs[r].mean(axis=0) for r in rows.values()])
        ltruth = np.array(
            [index.get(Counter(samples[i].label for i in r).most_common(1)[0][0], -1) for r in rows.values()]
        )
        l1, l3 = _topk_hits(lprobs, ltruth, 1).mean(), _topk_hits(lprobs, ltruth, 3).mean()
    else:
        l1 = l3 = 0.0

    def mean(a) -> float:
        return float(np.mean(a)) if len(a) else 0.0

    return Metrics(
        top1=mean(hit1),
        top3=mean(hit3),
        top5=mean(hit5),
        mean_per_class=mean(list(per_class.values())),
        listing_top1=float(l1),
        listing_top3=float(l3),
        n_images=n,
        n_listings=len(rows),
        n_unknown=int((~known).sum()),
        per_class=per_class,
        confusion=confusion.tolist(),
        images_per_s=images_per_s,
        examples=examples(probs, samples, classes, truth),
    )


def examples(probs: np.ndarray, samples: Sequence[Sample], classes: Sequence[str], truth: np.ndarray,
             per_kind: int = 12) -> dict[str, list[dict]]:
    """A few photos to look at: right answers, one class after another (the first photo of each class,
    then the second...), and the most confident wrong answers. Each: path, listing, true and predicted
    class, the predicted class's probability (before calibration)."""
    if not len(samples):
        return {"right": [], "wrong": []}
    pred = probs.argmax(axis=1)
    top = probs[np.arange(len(samples)), pred]

    def row(i: int) -> dict:
        return {"path": samples[i].path, "listing": samples[i].listing, "true": samples[i].label,
                "predicted": classes[pred[i]], "p": round(float(top[i]), 4)}

    seen: Counter = Counter()
    right = []  # (k, i): photo i is the k-th right answer of its class
    for i in np.flatnonzero(pred == truth):
        seen[truth[i]] += 1
        right.append((seen[truth[i]], i))
    wrong = sorted(np.flatnonzero(pred != truth), key=lambda i: -top[i])
    return {"right": [row(i) for _, i in sorted(right)[:per_kind]], "wrong": [row(i) for i in wrong[:per_kind]]}


def score_histogram(scores: dict[str, np.ndarray], bins: int = 30) -> dict:
    """Counts of each set's OOD scores over shared bins (finite scores only): ``{"edges": [...],
    "counts": {name: [...]}}``, for the report's histogram of cars, non-cars and unknown models."""
    finite = {name: np.asarray(s, np.float64)[np.isfinite(s)] for name, s in scores.items()}
    pooled = np.concatenate([*finite.values(), np.zeros(0)])
    low, high = (float(pooled.min()), float(pooled.max())) if len(pooled) else (0.0, 1.0)
    edges = np.linspace(low, high if high > low else low + 1.0, bins + 1)
    return {"edges": [float(e) for e in edges],
            "counts": {name: np.histogram(s, edges)[0].tolist() for name, s in finite.items()}}


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """The confidence-weighted gap between confidence and accuracy over equal-width confidence bins."""
    if not len(labels):
        return 0.0
    confidence, hit = probs.max(axis=1), probs.argmax(axis=1) == labels
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    gaps = [abs(confidence[which == b].mean() - hit[which == b].mean()) * (which == b).sum()
            for b in range(bins) if (which == b).any()]
    return float(sum(gaps) / len(labels))


def open_set_metrics(open_set: OpenSet, known_probs: np.ndarray, known_labels: np.ndarray,
                     non_car_probs: np.ndarray, unknown_probs: np.ndarray) -> dict[str, float]:
    """The open-set figures of a calibrated version on held-out photos: known-car photos (``known_labels``:
    class indices, the test split), photos without a car and photos of models it was not trained on.

    AUROC of the OOD score of known cars against each other set; at the operating point: the share of
    non-car photos accepted as a car (any answer but "no car"), of unknown-model photos answered as a
    known model, and of known-car photos turned away; closed-set top-1 before and after calibration
    (equal: temperature scaling keeps the ranking) and with rejection (a photo turned away counts wrong)."""
    known_labels = np.asarray(known_labels, dtype=np.int64)
    known, non_car, unknown = (open_set.assess(p) for p in (known_probs, non_car_probs, unknown_probs))
    verdicts = np.array(known.verdicts)

    def share(values, of) -> float:
        return float(np.mean(np.isin(values, of))) if len(values) else float("nan")

    raw_hit = known_probs.argmax(axis=1) == known_labels if len(known_labels) else np.zeros(0, bool)
    calibrated_hit = known.probs.argmax(axis=1) == known_labels if len(known_labels) else raw_hit
    return {
        "auroc_non_car": auroc(known.ood_score, non_car.ood_score),
        "auroc_unknown_model": auroc(known.ood_score, unknown.ood_score),
        "non_car_false_accept": share(non_car.verdicts, (CAR, UNKNOWN_MODEL)),
        "unknown_model_false_accept": share(unknown.verdicts, (CAR,)),
        "known_false_reject": share(verdicts, (NO_CAR, UNKNOWN_MODEL)),
        "known_no_car": share(verdicts, (NO_CAR,)),
        "top1": float(raw_hit.mean()) if len(raw_hit) else 0.0,
        "top1_calibrated": float(calibrated_hit.mean()) if len(raw_hit) else 0.0,
        "top1_with_rejection": float((calibrated_hit & (verdicts == CAR)).mean()) if len(raw_hit) else 0.0,
        "ece": expected_calibration_error(np.asarray(known_probs, np.float64), known_labels),
        "ece_calibrated": expected_calibration_error(known.probs, known_labels),
        "n_known": len(known_labels), "n_non_car": len(non_car.verdicts), "n_unknown_model": len(unknown.verdicts),
    }


def predict_samples(
    predict: Callable[[np.ndarray], np.ndarray],
    samples: Sequence[Sample],
    *,
    image_size: int,
    batch_size: int = 32,
) -> tuple[np.ndarray, float]:
    """Probabilities for every sample (loaded with ``load_image``) and the predict throughput (img/s)."""
    outs, predict_s = [], 0.0
    for start in range(0, len(samples), batch_size):
        batch = load_batch([s.path for s in samples[start : start + batch_size]], image_size)
        t0 = time.perf_counter()
        outs.append(np.asarray(predict(batch), dtype=np.float32))
        predict_s += time.perf_counter() - t0
    probs = np.concatenate(outs) if outs else np.zeros((0, 0), np.float32)
    return probs, (len(samples) / predict_s if predict_s > 0 else 0.0)


def evaluate(
    predict: Callable[[np.ndarray], np.ndarray],
    samples: Sequence[Sample],
    classes: Sequence[str],
    *,
    image_size: int,
    batch_size: int = 32,
) -> Metrics:
    """Evaluate ``predict`` on ``samples`` (the test split). See ``Metrics`` for the definitions."""
    probs, rate = predict_samples(predict, samples, image_size=image_size, batch_size=batch_size)
    if not len(samples):
        probs = np.zeros((0, len(classes)))
    return metrics_from_probs(probs, samples, classes, images_per_s=rate)


def plot_confusion(metrics: Metrics, classes: Sequence[str], path: str | Path, *, title: str = "") -> Path:
    """Save the row-normalized confusion matrix as a PNG (matplotlib, Agg). Names shown up to 60 classes."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    m = np.asarray(metrics.confusion, dtype=np.float64)
    if m.size == 0:
        m = np.zeros((len(classes), len(classes)))
    rows = m.sum(axis=1, keepdims=True)
    norm = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    k = len(classes)
    side = min(max(4.0, 0.28 * k + 2.5), 40.0)
    fig, ax = plt.subplots(figsize=(side, side * 0.9))
    im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    if k <= 60:
        ax.set_xticks(range(k), labels=list(classes), rotation=90, fontsize=7)
        ax.set_yticks(range(k), labels=list(classes), fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or f"Confusion (test): top-1 {metrics.top1:.1%}, top-3 {metrics.top3:.1%}")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
