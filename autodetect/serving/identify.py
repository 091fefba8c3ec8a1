"""Identify photos with the active model, in-process (``autodetect identify``, the API)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from autodetect.db import session_scope
from autodetect.images.decode import UndecodableImage, decode_image
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


def rank(model: LoadedModel, images: Sequence, top: int) -> list[list[tuple[str, float]]]:
    from autodetect.model.runtime import load_image

    probs = model.predict(np.stack([load_image(img, model.image_size) for img in images]))
    return [[(model.classes[i], float(p[i])) for i in np.argsort(-p)[:top]] for p in probs]


def identify_photos(settings: Settings, paths: Sequence[Path], *, top: int = 3):
    model = active_model(settings)
    images = []
    for path in paths:
        try:
            images.append(decode_image(Path(path).read_bytes(), settings.download_max_pixels))
        except (OSError, UndecodableImage) as exc:
            raise IdentifyError(f"{path}: {exc}") from exc
    return list(zip(paths, rank(model, images, top)))
