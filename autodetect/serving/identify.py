"""Identify photos with the active model, in-process (``autodetect identify``, the API).

Every answer is a verdict besides the ranking: "car" (a model we know), "unknown_model" (a car, but not
a model we know) or "no_car" (no car recognised), from the version's calibration (``model.calibration``:
calibrated probabilities, the OOD score, the thresholds chosen at evaluation). A photo smaller than
``identify_min_side`` or all one colour cannot show a car: it is "no car recognised" whatever the model
says. A version trained before calibration has no thresholds: its verdict is "car" unless that rule
applies, with uncalibrated probabilities (temperature 1)."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from autodetect.db import session_scope
from autodetect.images.decode import UndecodableImage, decode_image
from autodetect.model.calibration import CAR, MESSAGES, NO_CAR
from autodetect.model.provider import LoadedModel, load_serving_model
from autodetect.model.registry import active_version
from autodetect.settings import Settings


class IdentifyError(Exception):
    pass


def active_model(settings: Settings) -> LoadedModel:
    with session_scope(settings) as s:
        version = active_version(s)
        if version is None:
            raise IdentifyError("no active model yet: run `autodetect demo` or `autodetect train --now` first")
        try:
            return load_serving_model(settings, version)
        except Exception as exc:
            raise IdentifyError(f"cannot load model {version.name}: {exc}") from exc


#: Largest spread of any colour channel (grey levels between the 1st and the 99th percentile of a
#: nearest-neighbour sample of the photo) of a photo "all one colour": JPEG noise and a faint gradient
#: stay below it; an object, a texture or sensor noise does not (the sample averages nothing away).
ONE_COLOUR_SPREAD = 12
_SAMPLE_SIDE = 64


@dataclass(frozen=True)
class Answer:
    """One photo's answer: the verdict, the ``top`` models with calibrated probabilities, the confidence
    (the largest calibrated probability), the OOD score, and why the photo was refused before the model."""

    verdict: str
    ranking: list[tuple[str, float]]
    confidence: float
    ood_score: float
    refused: str | None = None

    @property
    def message(self) -> str:
        return MESSAGES[self.verdict] + (f": {self.refused}" if self.refused else "")


def refusal(image, min_side: int) -> str | None:
    """Why a photo (a PIL image, encoded bytes or a file) cannot show a car, whatever the model says:
    its short side is under ``min_side``, or it is all one colour."""
    if isinstance(image, Image.Image):
        return _refusal(image, min_side)
    with Image.open(io.BytesIO(image) if isinstance(image, (bytes, bytearray)) else os.fspath(image)) as img:
        return _refusal(img, min_side)


def _refusal(img: Image.Image, min_side: int) -> str | None:
    if min(img.size) < min_side:
        return f"the photo is smaller than {min_side} px"
    sample = np.asarray(img.convert("RGB").resize((_SAMPLE_SIDE, _SAMPLE_SIDE), Image.Resampling.NEAREST))
    low, high = np.percentile(sample.reshape(-1, 3), [1, 99], axis=0)
    return "the photo is all one colour" if (high - low).max() <= ONE_COLOUR_SPREAD else None


def answer(model: LoadedModel, batch: np.ndarray, refusals: Sequence[str | None], top: int) -> list[Answer]:
    """The answers for a batch of photos at the model's size (uint8, N x S x S x 3), ``refusals`` the
    photos' own (``refusal``)."""
    assessment = model.open_set.assess(model.predict(batch))
    answers = []
    for i, probs in enumerate(assessment.probs):
        refused = refusals[i]
        verdict = NO_CAR if refused else assessment.verdicts[i] if model.open_set.fitted else CAR
        ranking = [(model.classes[j], float(probs[j])) for j in np.argsort(-probs)[:top]]
        answers.append(Answer(verdict, ranking, float(assessment.confidence[i]), float(assessment.ood_score[i]),
                              refused))
    return answers


def rank(model: LoadedModel, images: Sequence, top: int, min_side: int = 64) -> list[Answer]:
    """Answers for photos (PIL images, encoded bytes or files): verdict, ranking, confidence, OOD score."""
    from autodetect.model.runtime import load_image

    batch = np.stack([load_image(img, model.image_size) for img in images])
    return answer(model, batch, [refusal(img, min_side) for img in images], top)


def identify_photos(settings: Settings, paths: Sequence[Path], *, top: int = 3):
    model = active_model(settings)
    images = []
    for path in paths:
        try:
            images.append(decode_image(Path(path).read_bytes(), settings.download_max_pixels))
        except (OSError, UndecodableImage) as exc:
            raise IdentifyError(f"{path}: {exc}") from exc
    return list(zip(paths, rank(model, images, top, settings.identify_min_side)))
