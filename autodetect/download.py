"""Download stage: fetch a photo safely, decode and verify it, store it content-addressed.

No database session is held across the network call. The row moves on with a conditional update
(``stage = 'download'``), so a second delivery of the same message changes nothing."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import update

from autodetect.db import session_scope
from autodetect.dedup import phash_chunks
from autodetect.images.decode import UndecodableImage, decode_image, encode_jpeg, normalize, perceptual_hash
from autodetect.images.fetch import Fetcher, PermanentFetchError, TransientFetchError, backoff_delay
from autodetect.images.store import ImageStore
from autodetect.pipeline import Dispatch
from autodetect.settings import Settings
from autodetect.storage import Image, Stage, State, utcnow

log = logging.getLogger(__name__)

@dataclass
class DownloadOutcome:
    status: str  # done | retry | failed | skipped
    error: str | None = None
    retry_in: float | None = None


def _record_failure(settings: Settings, image_id: int, error: str, *, final: bool) -> None:
    with session_scope(settings) as s:
        s.execute(
            update(Image)
            .where(Image.id == image_id, Image.stage == Stage.download.value)
            .values(state=State.failed.value if final else State.pending.value, error=error[:300],
                    attempts=Image.attempts + 1, updated_at=utcnow())
        )


def download_image(settings: Settings, image_id: int, fetcher: Fetcher, store: ImageStore,
                   dispatch: Dispatch) -> DownloadOutcome:
    with session_scope(settings) as s:
        image = s.get(Image, image_id)
        if image is None or image.stage != Stage.download.value or image.state != State.pending.value:
            return DownloadOutcome("skipped")
        url, attempts = image.url, image.attempts
    try:
        fetched = fetcher.fetch(url)
        picture = decode_image(fetched.data, settings.download_max_pixels, draft_side=settings.normalized_max_side)
    except TransientFetchError as exc:
        final = attempts + 1 >= settings.download_retries
        _record_failure(settings, image_id, str(exc), final=final)
        if final:
            return DownloadOutcome("failed", str(exc))
        return DownloadOutcome("retry", str(exc), backoff_delay(attempts, exc.retry_after))
    except (PermanentFetchError, UndecodableImage) as exc:
        _record_failure(settings, image_id, str(exc), final=True)
        return DownloadOutcome("failed", str(exc))

    width, height = picture.info.get("original_size", picture.size)
    original = store.put(fetched.data, kind="original", ext=fetched.ext)
    small = normalize(picture, settings.normalized_max_side)
    normalized = store.put(encode_jpeg(small), kind="normalized", ext="jpg")
    phash = perceptual_hash(small)
    with session_scope(settings) as s:
        moved = s.execute(
            update(Image)
            .where(Image.id == image_id, Image.stage == Stage.download.value)
            .values(stage=Stage.dedup.value, state=State.pending.value, error=None, updated_at=utcnow(),
                    sha256=original.sha256, storage_key=original.key, normalized_key=normalized.key,
                    size_bytes=original.size, content_type=fetched.content_type,
                    width=width, height=height, phash=phash, **phash_chunks(phash))
            .returning(Image.id)
        ).scalar_one_or_none()
    if moved is not None:
        dispatch(Stage.dedup, [image_id])
    return DownloadOutcome("done")
