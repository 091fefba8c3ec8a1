"""Dedup stage: exact duplicates by sha256, near duplicates by a 64-bit perceptual hash.

Near duplicates are found by multi-index hashing in the database: the hash is split into four
16-bit chunks, each with its own index. Two hashes within Hamming distance ``t`` agree within
``t // 4`` bits on at least one chunk (pigeonhole), so the candidates are the rows whose chunk i lies
within that radius of the query's chunk i, for some i; each candidate's full distance is verified.
That touches a few hundred index entries instead of scanning every hash.

Decisions are serialized (an advisory lock on PostgreSQL, a process lock on embedded SQLite), so an
image is only ever compared with originals decided before it: duplicates always point at an
original, never at another duplicate."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import combinations

from sqlalchemy import or_, select, text, update
from sqlalchemy.orm import Session

from autodetect.db import is_postgres, session_scope
from autodetect.images.decode import hamming
from autodetect.inference import refresh_listing_predictions
from autodetect.pipeline import Dispatch
from autodetect.settings import Settings
from autodetect.storage import Image, Listing, Stage, State, utcnow

CHUNKS = 4
CHUNK_BITS = 16
_DEDUP_LOCK_KEY = 0x0AD7D0D0  # pg_advisory_xact_lock key for dedup decisions
_embedded_lock = threading.Lock()


def chunk_neighbours(chunk: int, radius: int) -> list[int]:
    """All 16-bit values within ``radius`` bits of ``chunk``."""
    values = [chunk]
    for r in range(1, radius + 1):
        for bits in combinations(range(CHUNK_BITS), r):
            flipped = chunk
            for b in bits:
                flipped ^= 1 << b
            values.append(flipped)
    return values


def phash_chunks(value: int) -> dict[str, int]:
    """The 16-bit chunks of a signed 64-bit hash, as the ``phash_c*`` columns."""
    unsigned = value & 0xFFFFFFFFFFFFFFFF
    return {f"phash_c{i}": (unsigned >> (CHUNK_BITS * i)) & 0xFFFF for i in range(CHUNKS)}


def near_candidates(session: Session, phash: int, threshold: int, *, exclude_id: int | None = None):
    """Originals whose perceptual hash is within ``threshold`` bits: ``[(distance, id)]`` nearest first."""
    radius = threshold // CHUNKS
    chunks = phash_chunks(phash)
    cols = [getattr(Image, f"phash_c{i}") for i in range(CHUNKS)]
    cond = or_(*(col.in_(chunk_neighbours(chunks[f"phash_c{i}"], radius)) for i, col in enumerate(cols)))
    query = select(Image.id, Image.phash).where(cond, Image.duplicate_of_id.is_(None),
                                                Image.stage.in_((Stage.inference.value, Stage.done.value)),
                                                Image.state != State.failed.value)
    if exclude_id is not None:
        query = query.where(Image.id != exclude_id)
    found = [(hamming(phash, h), i) for i, h in session.execute(query) if h is not None]
    return sorted(d_i for d_i in found if d_i[0] <= threshold)


@contextmanager
def _decision_lock(session: Session) -> Iterator[None]:
    if is_postgres(session):
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _DEDUP_LOCK_KEY})
        yield
    else:
        with _embedded_lock:
            yield


@dataclass
class DedupOutcome:
    status: str  # unique | duplicate | skipped
    original_id: int | None = None
    distance: int | None = None


def dedup_image(settings: Settings, image_id: int, dispatch: Dispatch) -> DedupOutcome:
    with session_scope(settings) as s, _decision_lock(s):
        image = s.get(Image, image_id)
        if image is None or image.stage != Stage.dedup.value or image.state != State.pending.value:
            return DedupOutcome("skipped")
        original_id, distance = None, None
        exact = s.execute(
            select(Image.id).where(Image.sha256 == image.sha256, Image.id != image.id,
                                   Image.duplicate_of_id.is_(None),
                                   Image.stage.in_((Stage.inference.value, Stage.done.value)),
                                   Image.state != State.failed.value).order_by(Image.id).limit(1)
        ).scalar_one_or_none()
        if exact is not None:
            original_id, distance = exact, 0
        elif image.phash is not None:
            near = near_candidates(s, image.phash, settings.dedup_hamming_threshold, exclude_id=image.id)
            if near:
                distance, original_id = near[0]
        if original_id is None:
            s.execute(update(Image).where(Image.id == image.id)
                      .values(stage=Stage.inference.value, state=State.pending.value, updated_at=utcnow()))
            outcome = DedupOutcome("unique")
        else:
            original = s.get(Image, original_id)
            conflict = _labels_differ(s, image.listing_id, original.listing_id)
            s.execute(update(Image).where(Image.id == image.id).values(
                stage=Stage.done.value, state=State.done.value, duplicate_of_id=original_id,
                duplicate_distance=distance, label_conflict=conflict, updated_at=utcnow()))
            # The duplicate reuses its original's prediction, if there is one already.
            refresh_listing_predictions(s, [image.listing_id], settings)
            outcome = DedupOutcome("duplicate", original_id, distance)
    if outcome.status == "unique":
        dispatch(Stage.inference, [image_id])
    return outcome


def _labels_differ(session: Session, listing_a: int, listing_b: int) -> bool:
    if listing_a == listing_b:
        return False
    labels = dict(session.execute(select(Listing.id, Listing.class_id).where(Listing.id.in_((listing_a, listing_b)))).all())
    a, b = labels.get(listing_a), labels.get(listing_b)
    return a is not None and b is not None and a != b
