"""Which given labels a model contradicts: confident learning (Northcutt, Jiang & Chuang, 2021).

No TensorFlow, no database: probabilities in, verdicts out.

A model's probabilities are not comparable across classes (an easy class is predicted at 0.95, a hard
one at 0.6), so confident learning measures each class against itself: the *typical self-confidence*
of class j, ``t_j``, is the mean predicted probability of j over the photos labelled j. A photo labelled
j is a label error candidate when

- its probability of j is far below that class's typical one: ``p_j < given_ratio * t_j``, and
- another class k is predicted near or above how confidently k is typically predicted on its own photos:
  ``p_k >= suspect_ratio * t_k`` (and ``p_k > p_j``); of several such classes, the most probable is the
  suspect.

Northcutt's rule is ``suspect_ratio = 1`` on out-of-sample probabilities (cross-validated). The judge
here is the previous version, which trained on most of the photos it judges: its probabilities there
are pulled towards the given label, and a flipped photo it trained on is typically predicted at 0.5 to
0.8 of its true class's ``t``, one it did not train on at about 1 (measured in ``benchmarks/clean_labels.py``).

Classes with fewer than ``min_class_photos`` labelled photos get no ``t_j`` (too few to estimate it):
their photos are not judged and they are never the suspect.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Contradiction:
    row: int  # index into the probabilities and labels
    given: str  # the label the photo carries
    given_probability: float
    suspected: str  # the class the model confidently sees instead
    probability: float  # of ``suspected``
    typical: float  # ``t`` of ``suspected``: how confident the model is on photos labelled so


def typical_confidence(probs: np.ndarray, labels: np.ndarray, *, min_class_photos: int = 1) -> np.ndarray:
    """``t_j`` per class (NaN for classes with fewer than ``min_class_photos`` rows labelled j); ``labels``
    holds class indices, -1 for rows whose label is not one of the model's classes."""
    n_classes = probs.shape[1]
    known = labels >= 0
    counts = np.bincount(labels[known], minlength=n_classes)
    sums = np.bincount(labels[known], weights=probs[known, labels[known]], minlength=n_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        typical = sums / counts
    typical[counts < max(1, min_class_photos)] = np.nan
    return typical


def contradicted_labels(probs: np.ndarray, labels: Sequence[str], classes: Sequence[str], *,
                        given_ratio: float, suspect_ratio: float, min_class_photos: int) -> list[Contradiction]:
    """The rows whose label the model contradicts by the rule above (rows in ``labels`` order; labels
    that are not among ``classes`` are not judged)."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.shape != (len(labels), len(classes)):
        raise ValueError(f"probabilities of shape {probs.shape}; expected {(len(labels), len(classes))}")
    index = {c: i for i, c in enumerate(classes)}
    given = np.array([index.get(label, -1) for label in labels], dtype=np.int64)
    typical = typical_confidence(probs, given, min_class_photos=min_class_photos)
    rows = np.flatnonzero((given >= 0) & ~np.isnan(typical[np.maximum(given, 0)]))
    p_given = probs[rows, given[rows]]
    far_below = p_given < given_ratio * typical[given[rows]]
    # Classes near or above their own typical confidence, other than the given one and above it.
    confident = probs[rows] >= suspect_ratio * np.nan_to_num(typical, nan=np.inf)[None, :]
    confident[np.arange(len(rows)), given[rows]] = False
    confident &= probs[rows] > p_given[:, None]
    candidates = np.where(confident, probs[rows], -np.inf)
    suspect = candidates.argmax(axis=1)
    flagged = far_below & confident.any(axis=1)
    return [Contradiction(int(r), classes[given[r]], float(probs[r, given[r]]), classes[k], float(probs[r, k]),
                          float(typical[k]))
            for r, k in zip(rows[flagged], suspect[flagged], strict=True)]
