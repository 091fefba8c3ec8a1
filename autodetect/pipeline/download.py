"""Download stage: fetch photos safely, decode and verify them, store them content-addressed.

One call takes a batch of image ids (one broker message carries ``download_batch_size`` of them), so
the per-message costs (the broker round trips, the task bookkeeping, the database transactions) are
paid once per batch: one claim of the batch's rows, the network work photo by photo, one transaction
that records every result. No database session is held across the network calls. The claim moves
``pending`` rows to ``running`` (``autodetect.pipeline.fates``), so a second delivery of the same
message, while the first is at work or after it, finds nothing to do.

Every photo ends in its own state, whatever happens to it: done (on to dedup), or a failure counted
on its row with the exception's type and message: transient ones (timeouts, refused connections,
5xx, 429, a full disk) pending again after their backoff, permanent ones (404, not an image, refused
by the guard, a malformed URL) failed at once. One photo's failure never costs its neighbours.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import bindparam, update

from autodetect.db import db_now, session_scope
from autodetect.images.decode import (
    decode_image,
    encode_jpeg,
    normalize,
    perceptual_hash,
)
from autodetect.images.fetch import Fetcher
from autodetect.images.store import ImageStore
from autodetect.pipeline.dispatch import Dispatch
from autodetect.pipeline.fates import Failure, claim_rows, failure_of, moved_on, record_failures
from autodetect.pipeline.near_duplicates import phash_chunks
from autodetect.settings import Settings
from autodetect.storage import Image, Stage

log = logging.getLogger(__name__)

_images = Image.__table__


@dataclass
class DownloadOutcome:
    """What a batch came to, per image id: ``done`` (moved on to dedup), ``failed`` (for good, with its
    reason), ``retry`` (counted, pending again until its backoff is over: the sweeper sends it then),
    ``skipped`` (not pending in the download stage: done already, being worked on, or unknown)."""

    done: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)
    retry: dict[int, str] = field(default_factory=dict)
    skipped: list[int] = field(default_factory=list)


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
        rows = claim_rows(s, settings, Stage.download.value, ids, _images.c.url, _images.c.attempts)
    claimed = {row.id for row in rows}
    outcome.skipped = [i for i in ids if i not in claimed]

    moved: list[dict] = []
    failures: list[Failure] = []
    for row in rows:
        try:
            values = _fetch_one(settings, row.url, fetcher, store)
        except Exception as exc:  # noqa: BLE001 - every failure is this photo's own, and counted
            failures.append(failure_of(row.id, exc))
        else:
            moved.append({"b_id": row.id, **values})
    if moved:
        try:
            store.sync()  # the batch's files are durable before their keys are committed
        except OSError as exc:
            failures += [failure_of(v["b_id"], exc) for v in moved]
            moved = []
    _record(settings, moved, failures, {row.id: row.attempts for row in rows}, outcome)
    for image_id, error in outcome.failed.items():
        log.info("image %s failed: %s", image_id, error)
    if outcome.done:
        dispatch(Stage.dedup, outcome.done)
    return outcome


def _record(settings: Settings, moved: list[dict], failures: list[Failure], attempts: dict[int, int],
            outcome: DownloadOutcome) -> None:
    """One transaction: the downloaded photos on to dedup, the failures counted with their fates."""
    if not moved and not failures:
        return
    in_stage = (_images.c.id == bindparam("b_id")) & (_images.c.stage == Stage.download.value)
    with session_scope(settings) as s:
        # Executemany: the SET clause comes from the keys of the parameter sets, and the fixed values.
        now = db_now(s)
        if moved:
            s.execute(update(_images).where(in_stage).values(**moved_on(settings, Stage.dedup.value, now)), moved)
        final = record_failures(s, settings, Stage.download.value, failures, attempts, now)
    outcome.done = [v["b_id"] for v in moved]
    outcome.failed = final
    outcome.retry = {f.image_id: f.reason for f in failures if f.image_id not in final}
