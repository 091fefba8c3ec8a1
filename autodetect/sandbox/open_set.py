"""The photo sets of the open set: photos without a car, and cars of models outside a version's classes,
rendered on demand from a seed.

Three disjoint *parts*: ``"training"`` photos are a version's outlier exposure (taught as "none of the
classes"), ``"calibration"`` photos choose its thresholds, ``"evaluation"`` photos measure them. The
parts differ in their seeds and, for unknown models, in the models themselves (the models outside the
catalogue are dealt in turn to the three parts), so the reported figures are measured on photos, and
models, that neither the training nor the thresholds saw.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
from PIL import Image

from autodetect.sandbox.cars import CarSpec, specs_outside
from autodetect.sandbox.render import ALL_NON_CAR_KINDS, render_car, render_non_car

PARTS = ("training", "calibration", "evaluation")


def _rng(seed: int, *key: object) -> np.random.Generator:
    digest = hashlib.sha256("\x1f".join(map(str, (seed, *key))).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "big"))


def _check(part: str) -> int:
    if part not in PARTS:
        raise ValueError(f"unknown part {part!r}; expected one of {PARTS}")
    return PARTS.index(part)


def non_car_photos(count: int, *, part: str, seed: int = 0,
                   kinds: Sequence[str] = ALL_NON_CAR_KINDS) -> Iterator[tuple[str, Image.Image]]:
    """``count`` photos without a car, ``(kind, image)``, the ``kinds`` in turn."""
    _check(part)
    for i in range(count):
        kind = kinds[i % len(kinds)]
        yield kind, render_non_car(_rng(seed, "non-car", part, i), kind)


def unknown_models(classes: Iterable[str], part: str) -> tuple[CarSpec, ...]:
    """This part's share of the sandbox models outside ``classes`` (every third one, in CARS order)."""
    return specs_outside(classes)[_check(part)::len(PARTS)]


def unknown_model_photos(classes: Iterable[str], count: int, *, part: str,
                         seed: int = 0) -> Iterator[tuple[str, Image.Image]]:
    """``count`` photos, ``(class name, image)``, of this part's models outside ``classes``, in turn;
    nothing when the sandbox has no such model."""
    specs = unknown_models(classes, part)
    for i in range(count if specs else 0):
        spec = specs[i % len(specs)]
        yield spec.class_name, render_car(spec, _rng(seed, "unknown", part, i))
