"""Calibrated confidence and the open-set answer: "a car we know", "a car, but not a model we know",
"no car recognised" (no TensorFlow).

**Temperature scaling** divides the logits by one number ``T`` fitted on the validation split (the
negative log-likelihood of the true labels, minimised over ``T``); the ranking, hence top-1, is
unchanged, only the probabilities become honest. The serving runtime (LiteRT, ONNX Runtime) returns
softmax probabilities, not logits; ``log(p)`` equals the logits minus one constant per photo
(``logsumexp`` of that photo's logits), and softmax ignores a per-photo constant, so
``softmax(log(p) / T)`` is exactly ``softmax(logits / T)``: temperature scaling needs nothing more.

**Out-of-distribution scores** (higher: more like the photos the model was trained on):

- ``msp``: the largest calibrated probability;
- ``energy``: ``T * logsumexp(log(p) / T)``. With true logits this is the negative free energy of
  Liu et al. (2020); from probabilities the per-photo constant does *not* cancel: the score equals
  ``T * log(sum(p_i ** (1 / T)))``, a function of the probabilities alone (identically 0 at ``T = 1``,
  close to ``log(max p)`` for small ``T``). It is kept as a candidate and measured, not assumed better;
- ``entropy``: minus the entropy of the calibrated probabilities.

A classifier trained on cars alone is often sure of a dashboard or a document; the scores separate
well because training also shows it photos labelled ``OUTLIER`` with a uniform target (outlier
exposure, ``pipeline/open_set.py``), so "none of the classes" is a flat softmax.

Which score serves is chosen by measurement (``fit_open_set``): the best AUROC of known-car
validation photos against non-car photos. Thresholds, each Youden's best (known accepted minus others
accepted) under constraints: ``no_car_below`` on the score, between car photos (known models and models
held out of training) and non-car photos, among the operating points where at most ``max_false_accept``
of the calibration non-car photos pass as cars (the lowest such point when no higher one keeps car
photos answered "no car" within ``max_false_reject``); ``unknown_below`` on the calibrated
confidence, between known models and models held out of training, while at most ``max_false_reject``
of the known-car validation photos are turned away in all.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

CAR, UNKNOWN_MODEL, NO_CAR = "car", "unknown_model", "no_car"
#: The label of an outlier-exposure training photo (``train_data``): its target is uniform over the
#: classes, so a photo unlike every class gets a flat softmax, which the OOD score sees.
OUTLIER = "<outlier>"
MESSAGES = {CAR: "a car we know", UNKNOWN_MODEL: "a car, but not a model we know", NO_CAR: "no car recognised"}
_TINY = 1e-12
_T_BOUNDS = (0.05, 20.0)


def log_probs(probs: np.ndarray) -> np.ndarray:
    """``log(p)``: the logits up to one constant per row (see the module's docstring); 0 is clipped."""
    return np.log(np.clip(np.asarray(probs, dtype=np.float64), _TINY, 1.0))


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def calibrated_probs(probs: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(log(p) / T)``, equal to ``softmax(logits / T)``."""
    return np.exp(_log_softmax(log_probs(probs) / temperature))


def nll(probs: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    """Mean negative log-likelihood of ``labels`` (class indices) under temperature ``T``."""
    rows = _log_softmax(log_probs(probs) / temperature)
    return float(-rows[np.arange(len(labels)), labels].mean())


def _minimise_bounded(f: Callable[[float], float], lo: float, hi: float) -> float:
    """The minimum of ``f`` on [lo, hi]: scipy's bounded Brent when installed, else a golden-section search."""
    try:
        from scipy.optimize import minimize_scalar
    except ImportError:
        ratio = (math.sqrt(5) - 1) / 2
        a, b = lo, hi
        for _ in range(80):  # shrinks the interval by 0.618 per step: 1e-16 of it after 80
            c, d = b - ratio * (b - a), a + ratio * (b - a)
            a, b = (a, d) if f(c) <= f(d) else (c, b)
        return (a + b) / 2
    return float(minimize_scalar(f, bounds=(lo, hi), method="bounded", options={"xatol": 1e-5}).x)


def fit_temperature(probs: np.ndarray, labels: np.ndarray) -> float:
    """The temperature minimising the NLL of ``labels`` (searched in log space within 0.05..20); 1.0
    without samples."""
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) == 0:
        return 1.0
    lo, hi = (math.log(t) for t in _T_BOUNDS)
    return math.exp(_minimise_bounded(lambda log_t: nll(probs, labels, math.exp(log_t)), lo, hi))


# --- the scores -------------------------------------------------------------------------------------
def _msp(probs: np.ndarray, temperature: float) -> np.ndarray:
    return calibrated_probs(probs, temperature).max(axis=1)


def _energy(probs: np.ndarray, temperature: float) -> np.ndarray:
    z = log_probs(probs) / temperature
    top = z.max(axis=1)
    return temperature * (top + np.log(np.exp(z - top[:, None]).sum(axis=1)))


def _entropy(probs: np.ndarray, temperature: float) -> np.ndarray:
    p = calibrated_probs(probs, temperature)
    return (p * np.log(np.clip(p, _TINY, 1.0))).sum(axis=1)


SCORES: dict[str, Callable[[np.ndarray, float], np.ndarray]] = {"msp": _msp, "energy": _energy, "entropy": _entropy}


def auroc(positives: np.ndarray, negatives: np.ndarray) -> float:
    """The probability that a random positive scores above a random negative (ties count half): the
    area under the ROC curve, by the Mann-Whitney rank sum. NaN when either side is empty."""
    pos, neg = np.asarray(positives, np.float64), np.asarray(negatives, np.float64)
    if not len(pos) or not len(neg):
        return float("nan")
    scores = np.concatenate([pos, neg])
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    ranks = (sums / counts)[inverse]  # tied scores share their mean rank
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def threshold_for_false_accept(negatives: np.ndarray, max_share: float) -> float:
    """The lowest threshold ``t`` such that at most ``max_share`` of ``negatives`` score ``>= t``."""
    neg = np.sort(np.asarray(negatives, np.float64))[::-1]
    allowed = int(math.floor(max_share * len(neg) + 1e-9))
    if allowed >= len(neg):
        return -math.inf
    return float(np.nextafter(neg[allowed], math.inf))


def best_threshold(known: np.ndarray, other: np.ndarray, *, max_false_reject: float,
                   lowest: float = -math.inf) -> float:
    """Youden's best threshold ``t`` (accept at ``>= t``) between ``known`` and ``other`` scores: the most
    ``known`` accepted minus ``other`` accepted, among ``t >= lowest`` that turn away at most
    ``max_false_reject`` of ``known`` (if none does: ``lowest``). -inf marks photos already turned away.
    Candidates are ``lowest`` and the midpoints between neighbouring scores, so the threshold sits in
    the middle of a gap rather than against a photo; ties go to the lowest (fewer known turned away)."""
    known, other = np.sort(np.asarray(known, np.float64)), np.sort(np.asarray(other, np.float64))
    if not len(known) or not len(other):
        return lowest

    def below(values: np.ndarray, at: np.ndarray) -> np.ndarray:  # share < at, -inf always counted
        return np.maximum(np.searchsorted(values, at, side="left"), np.isneginf(values).sum()) / len(values)

    values = np.unique(np.concatenate([known, other]))
    values = values[np.isfinite(values)]
    midpoints = (values[:-1] + values[1:]) / 2
    candidates = np.concatenate([[lowest], midpoints[midpoints > lowest]])
    rejected, passed = below(known, candidates), 1 - below(other, candidates)
    gain = np.where(rejected <= max_false_reject + 1e-12, (1 - rejected) - passed, -np.inf)
    return float(candidates[int(np.argmax(gain))]) if np.isfinite(gain).any() else lowest


# --- the answer -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Assessment:
    """The open-set answer for a batch: per photo a verdict, the calibrated probabilities (rows), their
    maximum (the confidence) and the OOD score."""

    verdicts: list[str]
    probs: np.ndarray
    confidence: np.ndarray
    ood_score: np.ndarray


@dataclass(frozen=True)
class OpenSet:
    """A version's calibration: its temperature, its OOD score and the two thresholds. Stored in the
    bundle's ``labels.json`` (key ``open_set``) and in the version's metrics."""

    temperature: float = 1.0
    score: str = "msp"
    no_car_below: float = -math.inf  # OOD score below this: "no car recognised"
    unknown_below: float = -math.inf  # calibrated confidence below this: "a car, but not a model we know"
    fitted: bool = False  # False: no thresholds were fitted (a version from before calibration)

    def assess(self, probs: np.ndarray) -> Assessment:
        probs = np.asarray(probs, dtype=np.float64).reshape(-1, np.shape(probs)[-1])
        calibrated = calibrated_probs(probs, self.temperature)
        confidence = calibrated.max(axis=1)
        scores = SCORES[self.score](probs, self.temperature)
        verdicts = [NO_CAR if s < self.no_car_below else UNKNOWN_MODEL if c < self.unknown_below else CAR
                    for s, c in zip(scores, confidence)]
        return Assessment(verdicts, calibrated, confidence, scores)

    def to_dict(self) -> dict:
        """JSON-safe (infinite thresholds as None)."""
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict | None) -> OpenSet:
        """The calibration stored by ``to_dict``; the unfitted default for None (older versions)."""
        if not data:
            return cls()
        if data.get("score") not in SCORES:
            raise ValueError(f"unknown OOD score {data.get('score')!r}; expected one of {sorted(SCORES)}")
        bound = {k: -math.inf if data.get(k) is None else float(data[k]) for k in ("no_car_below", "unknown_below")}
        return cls(float(data["temperature"]), data["score"], fitted=bool(data.get("fitted", True)), **bound)


def fit_open_set(val_probs: np.ndarray, val_labels: Sequence[int], non_car_probs: np.ndarray,
                 unknown_probs: np.ndarray, *, max_false_accept: float, max_false_reject: float,
                 ) -> tuple[OpenSet, dict[str, float]]:
    """Fit the temperature on the validation photos (``val_labels``: class indices), choose the OOD
    score with the best AUROC of validation photos against ``non_car_probs``, and the two thresholds
    (see the module's docstring). Returns the calibration and the AUROC of each candidate score."""
    temperature = fit_temperature(val_probs, np.asarray(val_labels))
    aurocs = {name: auroc(score(val_probs, temperature), score(non_car_probs, temperature))
              for name, score in SCORES.items()}
    best = max(SCORES, key=lambda name: (np.nan_to_num(aurocs[name], nan=-1.0), name == "msp"))
    known_score, unknown_score, non_car_score = (SCORES[best](p, temperature)
                                                 for p in (val_probs, unknown_probs, non_car_probs))
    no_car_below = best_threshold(np.concatenate([known_score, unknown_score]), non_car_score,  # cars, any model
                                  max_false_reject=max_false_reject,
                                  lowest=threshold_for_false_accept(non_car_score, max_false_accept))
    known_conf, unknown_conf = _msp(val_probs, temperature), _msp(unknown_probs, temperature)
    known_conf[known_score < no_car_below] = -math.inf
    unknown_conf[unknown_score < no_car_below] = -math.inf
    unknown_below = best_threshold(known_conf, unknown_conf, max_false_reject=max_false_reject)
    return OpenSet(temperature, best, no_car_below, unknown_below, fitted=True), aurocs
