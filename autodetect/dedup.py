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
from functools import cache
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
#: Chunks from the least to the most crowded. pHash's top chunk holds the lowest frequencies (and the
#: DC bit, almost always 1), so its values cluster most; it gets the smaller radius when there is a choice.
_CHUNK_ORDER = (0, 1, 2, 3)


def index_plan(threshold: int) -> list[tuple[int, int]]:
    """``[(chunk, radius)]`` to probe for hashes within ``threshold`` bits (chunks with radius -1 are not
    probed at all).

    Pigeonhole, refined: with ``threshold = 4 r + a`` (0 <= a < 4), two hashes within the threshold
    agree within ``r`` bits on one of ``a + 1`` chunks or within ``r - 1`` bits on one of the others
    (otherwise they would differ in at least ``(a + 1)(r + 1) + (3 - a) r = threshold + 1`` bits). So
    only ``a + 1`` chunks need the full radius ``threshold // 4``; the rest get one bit less."""
    if threshold < 0:
        return []
    r, a = divmod(threshold, CHUNKS)
    return [(chunk, r if k <= a else r - 1) for k, chunk in enumerate(_CHUNK_ORDER)]
_DEDUP_LOCK_KEY = 0x0AD7D0D0  # pg_advisory_xact_lock key for dedup decisions
_embedded_lock = threading.Lock()
_ORIGINAL_STAGES = (Stage.inference.value, Stage.done.value)


@cache
def _flip_masks(radius: int) -> tuple[int, ...]:
    """Every 16-bit mask with at most ``radius`` bits set, fewest bits first."""
    return tuple(sum(1 << b for b in bits) for r in range(radius + 1)
                 for bits in combinations(range(CHUNK_BITS), r))


def chunk_neighbours(chunk: int, radius: int) -> list[int]:
    """All 16-bit values within ``radius`` bits of ``chunk``."""
    return [chunk ^ mask for mask in _flip_masks(radius)]


def phash_chunks(value: int) -> dict[str, int]:
    """The 16-bit chunks of a signed 64-bit hash, as the ``phash_c*`` columns."""
    unsigned = value & 0xFFFFFFFFFFFFFFFF
    return {f"phash_c{i}": (unsigned >> (CHUNK_BITS * i)) & 0xFFFF for i in range(CHUNKS)}


def near_candidates(session: Session, phash: int, threshold: int, *, exclude_id: int | None = None):
    """Originals whose perceptual hash is within ``threshold`` bits: ``[(distance, id)]`` nearest first
    (ties by id, so the oldest original wins)."""
    plan = [(i, r) for i, r in index_plan(threshold) if r >= 0]
    if not plan:
        return []
    chunks = phash_chunks(phash)
    probes = {i: chunk_neighbours(chunks[f"phash_c{i}"], r) for i, r in plan}
    if is_postgres(session):
        rows = _near_postgres(session, phash, threshold, probes, exclude_id)
    else:
        cols = {i: getattr(Image, f"phash_c{i}") for i in probes}
        cond = or_(*(cols[i].in_(values) for i, values in probes.items()))
        query = select(Image.id, Image.phash).where(cond, Image.duplicate_of_id.is_(None),
                                                    Image.stage.in_(_ORIGINAL_STAGES),
                                                    Image.state != State.failed.value)
        if exclude_id is not None:
            query = query.where(Image.id != exclude_id)
        rows = session.execute(query).all()
    found = {(hamming(phash, h), i) for i, h in rows if h is not None}
    return sorted(d_i for d_i in found if d_i[0] <= threshold)


def _near_postgres(session: Session, phash: int, threshold: int, probes: dict[int, list[int]],
                   exclude_id: int | None):
    """On PostgreSQL the distance is verified inside the index: each ``(phash_cN, phash)`` index is
    probed for the chunk's neighbours and its entries filtered by ``bit_count`` on the index tuple (an
    index-only scan: no table row is read for the thousands of chunk matches that are too far); only
    the few hashes within the threshold are then joined back to their rows for the stage filters."""
    params: dict[str, object] = {"q": phash, "t": threshold, **{f"a{i}": v for i, v in probes.items()}}
    if exclude_id is not None:
        params["x"] = exclude_id
    return session.execute(_postgres_query(tuple(probes), exclude_id is not None), params).all()


@cache
def _postgres_query(chunks: tuple[int, ...], exclude: bool):
    parts = [f"SELECT phash FROM images WHERE phash_c{i} = ANY(CAST(:a{i} AS integer[])) "
             f"AND bit_count(CAST(phash # CAST(:q AS bigint) AS bit(64))) <= :t" for i in chunks]
    # LATERAL with OFFSET 0 (which keeps the planner from flattening it into a hash join over the
    # whole table): one index probe per hit, as the planner cannot know how few pass ``bit_count``.
    return text(f"WITH hits AS ({' UNION '.join(parts)}) "
                "SELECT r.id, r.phash FROM hits CROSS JOIN LATERAL ("
                "SELECT i.id, i.phash FROM images i "
                "WHERE i.phash_c0 = CAST(hits.phash & 65535 AS integer) AND i.phash = hits.phash "
                "AND i.duplicate_of_id IS NULL AND i.stage IN ('inference', 'done') AND i.state <> 'failed'"
                f"{' AND i.id <> :x' if exclude else ''} OFFSET 0) r")


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
