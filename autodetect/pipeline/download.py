"""Download stage: fetch photos safely, decode and verify them, store them content-addressed.

One call takes a batch of image ids (one broker message carries ``download_batch_size`` of them), so
the per-message costs (the broker round trips, the task bookkeeping, the database transactions) are
paid once per batch: one read of the batch's rows, the network work photo by photo, one transaction
that records every result. No database session is held across the network calls. Rows move on with a
conditional update (``stage = 'download'``), so a second delivery of the same message changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import bindparam, select, update

from autodetect.db import session_scope
from autodetect.pipeline.near_duplicates import phash_chunks
from autodetect.images.decode import (
    UndecodableImage,
    decode_image,
    encode_jpeg,
    normalize,
    perceptual_hash,
)
from autodetect.images.fetch import (
    Fetcher,
    PermanentFetchError,
    TransientFetchError,
    backoff_delay,
)
from autodetect.images.store import ImageStore
from autodetect.pipeline.dispatch import Dispatch
from autodetect.settings import Settings
from autodetect.storage import Image, Stage, State, utcnow

log = logging.getLogger(__name__)

_images = Image.__table__


@dataclass
class DownloadOutcome:
    """What a batch came to, per image id: ``done`` (moved on to dedup), ``failed`` (recorded with its
    reason), ``retry`` (recorded; to be sent again in ``retry_in`` seconds), ``skipped`` (not pending in
    the download stage: done already, or unknown)."""

    done: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)
    retry: dict[int, str] = field(default_factory=dict)
    skipped: list[int] = field(default_factory=list)
    retry_in: float = 0.0


def _fetch_one(settings: Settings, url: str, fetcher: Fetcher, store: ImageStore) -> dict:
    """The new column values of a downloaded photo (raises the fetch and decode errors); its files
    are written but not yet flushed to disk (``store.sync()``)."""
    fetched = fetcher.fetch(url)
    picture = decode_image(fetched.data, settings.download_max_pixels, draft_side=settings.normalized_max_side)
    width, height = picture.info.get("original_size", picture.size)
    original = store.put(fetched.data, kind="original", ext=fetched.ext, sync=False)
    small = normalize(picture, settings.normalized_max_side)
    if small is picture and picture.info.get("plain_jpeg"):
        normalized = original  # already an upright RGB JPEG within the size: no second encode, no copy
    else:
        normalized = store.put(encode_jpeg(small), kind="normalized", ext="jpg", sync=False)
    phash = perceptual_hash(small)
    return dict(sha256=original.sha256, storage_key=original.key, normalized_key=normalized.key,
                size_bytes=original.size, content_type=fetched.content_type, width=width, height=height,
                phash=phash, **phash_chunks(phash))


def download_images(settings: Settings, image_ids: Sequence[int], fetcher: Fetcher, store: ImageStore,
                    dispatch: Dispatch) -> DownloadOutcome:
    outcome = DownloadOutcome()
    ids = sorted({int(i) for i in image_ids})
    with session_scope(settings) as s:
        rows = s.execute(
            select(_images.c.id, _images.c.url, _images.c.attempts)
            .where(_images.c.id.in_(ids), _images.c.stage == Stage.download.value,
                   _images.c.state == State.pending.value)
        ).all()
    pending = {row.id for row in rows}
    outcome.skipped = [i for i in ids if i not in pending]

    moved: list[dict] = []
    failures: list[dict] = []
    for row in rows:
        try:
            values = _fetch_one(settings, row.url, fetcher, store)
        except (TransientFetchError, PermanentFetchError, UndecodableImage) as exc:
            transient = isinstance(exc, TransientFetchError)
            final = not transient or row.attempts + 1 >= settings.download_retries
            (outcome.failed if final else outcome.retry)[row.id] = str(exc)
            if not final:
                outcome.retry_in = max(outcome.retry_in, backoff_delay(row.attempts, exc.retry_after))
            failures.append({"b_id": row.id, "state": State.failed.value if final else State.pending.value,
                             "error": str(exc)[:300]})
        else:
            moved.append({"b_id": row.id, **values, "stage": Stage.dedup.value, "state": State.pending.value,
                          "error": None})

    if moved:
        store.sync()  # the batch's files are durable before their keys are committed
    if moved or failures:
        now = utcnow()
        in_stage = (_images.c.id == bindparam("b_id")) & (_images.c.stage == Stage.download.value)
        with session_scope(settings) as s:
            # Executemany: the SET clause comes from the keys of the parameter sets.
            if moved:
                s.execute(update(_images).where(in_stage).values(updated_at=now), moved)
            if failures:
                s.execute(update(_images).where(in_stage).values(attempts=_images.c.attempts + 1, updated_at=now),
                          failures)
    outcome.done = [v["b_id"] for v in moved]
    for image_id, error in outcome.failed.items():
        log.info("image %s failed: %s", image_id, error)
    if outcome.done:
        # A second delivery racing this one may have moved some of these rows first: dedup is
        # idempotent, so dispatching them again is harmless.
        dispatch(Stage.dedup, outcome.done)
    return outcome
