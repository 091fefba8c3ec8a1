"""``/identify`` decodes an upload straight at the model's size (JPEG draft mode), never at full resolution
and without encoding it again: the answers agree with the path it replaced (decode at the stored photos'
size, shrink, encode a JPEG, decode that), which stays here as the reference."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import test_api_support as sup  # noqa: E402

from autodetect.db import session_scope, upgrade  # noqa: E402
from autodetect.images.decode import decode_image, encode_jpeg, normalize  # noqa: E402
from autodetect.settings import Settings  # noqa: E402

pytestmark = pytest.mark.slow  # trains the tiny model (in a subprocess), shared with the API tests

PHOTOS_PER_CLASS = 8
UPLOAD_SIZE = (1600, 1200)


def decode_as_before(settings: Settings, data: bytes) -> bytes:
    """The path /identify took before: decoded at the stored photos' size, shrunk, encoded as JPEG again."""
    picture = decode_image(data, settings.download_max_pixels, draft_side=settings.normalized_max_side)
    return encode_jpeg(normalize(picture, settings.normalized_max_side))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from autodetect.model.provider import ModelProvider

    root = sup.tiny_model(tmp_path_factory)
    settings = Settings(data_dir=tmp_path_factory.mktemp("decode"), database_url="")
    upgrade(settings)
    sup.build_catalogue(settings, [], root / "bundle")
    with session_scope(settings) as s:
        model = ModelProvider(settings).get(s)
    return settings, model


def uploads() -> list[tuple[str, bytes]]:
    """Phone-sized sandbox photos of the model's classes, as JPEG uploads, with their class."""
    from autodetect.sandbox.cars import spec_for
    from autodetect.sandbox.render import render_car

    out = []
    for c, name in enumerate(sup.CLASSES):
        for i in range(PHOTOS_PER_CLASS):
            img = render_car(spec_for(name), np.random.default_rng(70_000 + 100 * c + i), size=UPLOAD_SIZE)
            buf = io.BytesIO()
            img.save(buf, "JPEG", quality=90)
            out.append((name, buf.getvalue()))
    return out


def test_uploads_decode_at_the_models_size_and_answer_as_before(tiny):
    from autodetect.serving.identify import rank
    from autodetect.serving.routes.identify import TOP_MODELS, decode_for_model

    settings, model = tiny
    photos = uploads()
    agree = 0
    for _, data in photos:
        picture = decode_for_model(settings, data, model.image_size)
        # reduced while decoded (1/8 at most), never below the model's side
        assert min(picture.size) >= model.image_size
        assert picture.size[0] <= UPLOAD_SIZE[0] // 2 and picture.info["original_size"] == UPLOAD_SIZE
        new = rank(model, [picture], TOP_MODELS, settings.identify_min_side)[0]
        old = rank(model, [decode_as_before(settings, data)], TOP_MODELS, settings.identify_min_side)[0]
        agree += new.ranking[0][0] == old.ranking[0][0]
    assert agree >= 0.95 * len(photos), f"top-1 agrees on {agree} of {len(photos)} photos"


def test_small_and_non_jpeg_uploads_are_decoded_whole(tiny):
    """A photo already near the model's size is not reduced; a PNG has no draft mode and is decoded whole."""
    from PIL import Image

    from autodetect.serving.routes.identify import decode_for_model

    settings, model = tiny
    small = io.BytesIO()
    Image.new("RGB", (120, 90), "red").save(small, "JPEG")
    assert decode_for_model(settings, small.getvalue(), model.image_size).size == (120, 90)
    png = io.BytesIO()
    Image.new("RGB", (640, 480), "blue").save(png, "PNG")
    assert decode_for_model(settings, png.getvalue(), model.image_size).size == (640, 480)
