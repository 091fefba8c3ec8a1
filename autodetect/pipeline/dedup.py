"""Dedup stage: exact duplicates by sha256, near duplicates by a 64-bit perceptual hash, confirmed on
the pixels.

**Candidates** come from multi-index hashing over the originals' hashes, held in memory by each
process and caught up with the database before every lookup, which a photo probes with its own hash
and with those of itself lightly padded and cropped, so that cropped copies are found too; what the
index answers is read again from the database (``near_duplicates``).

**Verification**: 64 bits cannot tell every pair of near-identical distinct photos apart (template-like
interiors, one model in one setting), so every hash candidate is confirmed on the two stored
normalized photos (``autodetect.images.alignment``: the best crop of one to the other, a gain and an
offset per colour channel, clipped pixels left out), and the candidate is a duplicate when the
remaining RMS difference is at most ``settings.dedup_max_residual`` grey levels.
Copies measured up to 8.8 levels (JPEG noise, resampling), distinct candidates 12.1 and more
(benchmarks/RESULTS.md, "Dedup index").

Decisions are serialized (an advisory lock on PostgreSQL, a process lock on embedded SQLite), so an
image is only ever compared with originals decided before it: duplicates always point at an
original, never at another duplicate. A photo found unique is numbered under the lock
(``images.original_seq``: one more than the highest so far, so in commit order), which is how every
process's index learns of it. On PostgreSQL the slow part, verification, runs before the lock
against the candidates found then; under the lock the lookup is repeated (the index catches up
again) and only originals decided in between are verified there."""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from PIL import Image as PILImage
from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session

from autodetect.db import db_now, is_postgres, session_scope
from autodetect.images.alignment import Thumb, residual
from autodetect.images.decode import hamming
from autodetect.images.store import ImageStore
from autodetect.pipeline.dispatch import Dispatch
from autodetect.pipeline.fates import Failure, claim_rows, failure_of, moved_on, record_failures
from autodetect.pipeline.listing_predictions import refresh_listing_predictions
from autodetect.pipeline.near_duplicates import ORIGINAL, Candidate, find_candidates, probe_hashes
from autodetect.settings import Settings
from autodetect.storage import Image, Listing, Stage, State, utcnow

log = logging.getLogger(__name__)

_DEDUP_LOCK_KEY = 0x0AD7D0D0  # pg_advisory_xact_lock key for dedup decisions
_embedded_lock = threading.Lock()
#: When a photo cannot be looked at, only hashes this close count (distinct sandbox photos come this
#: close once in ~10,000 photos; at 8 bits, 20 times as often).
_UNVERIFIED_MAX_DISTANCE = 4


@contextmanager
def _decision_lock(session: Session) -> Iterator[None]:
    if is_postgres(session):
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _DEDUP_LOCK_KEY})
        yield
    else:
        with _embedded_lock:
            yield


def hold_off_decisions(session: Session) -> None:
    """On PostgreSQL, hold the decision lock in shared mode until ``session``'s transaction ends: no dedup
    decision is taken meanwhile (one in progress is waited for), while holders do not wait for each other.
    (Embedded SQLite: the database's write lock serializes the transactions already.)"""
    if is_postgres(session):
        session.execute(text("SELECT pg_advisory_xact_lock_shared(:k)"), {"k": _DEDUP_LOCK_KEY})


@dataclass
class DedupOutcome:
    status: str  # unique | duplicate | skipped | failed
    original_id: int | None = None
    distance: int | None = None
    reason: str | None = None


class _Verifier:
    """Pixel verification of hash candidates against one query photo, with memoized answers."""

    def __init__(self, settings: Settings, store: ImageStore, query: PILImage.Image | None, phash: int):
        self.settings = settings
        self.store = store
        self.photo = query if settings.dedup_verify else None
        self._query: Thumb | None = None
        self.phash = phash
        self.answers: dict[int, bool] = {}

    def pick(self, candidates: list[Candidate]) -> Candidate | None:
        """The first candidate (nearest first) that is a copy of the query."""
        for c in candidates:
            if c.id not in self.answers:
                self.answers[c.id] = self._check(c)
            if self.answers[c.id]:
                return c
        return None

    def _check(self, c: Candidate) -> bool:
        if not self.settings.dedup_verify:
            return True
        other = _load(self.store, c.normalized_key) if self.photo is not None else None
        if self.photo is None or other is None:
            # A photo is missing from the store: the photo's own hash decides, strictly.
            log.warning("dedup: cannot verify candidate %s on the pixels; the hash decides", c.id)
            return hamming(self.phash, c.phash) <= min(self.settings.dedup_hamming_threshold, _UNVERIFIED_MAX_DISTANCE)
        if self._query is None:
            self._query = Thumb(self.photo)
        limit = self.settings.dedup_max_residual
        return residual(self._query, Thumb(other), limit) <= limit


def _load(store: ImageStore, key: str | None) -> PILImage.Image | None:
    if not key:
        return None
    try:
        with PILImage.open(io.BytesIO(store.read(key))) as img:
            return img.convert("RGB")
    except (OSError, ValueError):
        return None


@dataclass
class _NearSearch:
    """One photo's near-duplicate lookup: the hashes it probes the index with, and the verifier that
    confirms the candidates on the pixels (memoizing its answers from one lookup to the next)."""

    image_id: int
    queries: list[int]
    threshold: int
    verifier: _Verifier

    def pick(self, session: Session) -> Candidate | None:
        """The nearest candidate found now that the verifier confirms, if any."""
        return self.verifier.pick(find_candidates(session, self.queries, self.threshold, exclude_id=self.image_id))


def _waiting(image_id: int) -> tuple:
    """The conditions under which photo ``image_id`` still waits for its dedup decision (claimed)."""
    return Image.id == image_id, Image.stage == Stage.dedup.value, Image.state == State.running.value


def dedup_image(settings: Settings, image_id: int, dispatch: Dispatch, *,
                store: ImageStore | None = None) -> DedupOutcome:
    """Decide whether photo ``image_id`` (stage dedup, pending) is a duplicate of an earlier original
    (exact by sha256, or near: hash candidates verified on the pixels); move it on accordingly.
    ``store`` holds the normalized photos (default: the data directory's image store)."""
    return dedup_images(settings, [image_id], dispatch, store=store)[0]


def _dedup_claimed(settings: Settings, store: ImageStore, row) -> DedupOutcome:
    """The decision for one claimed photo: its near-duplicate search, then the decision under the lock."""
    search = _near_search(settings, store, row.id, row.phash, row.normalized_key)
    with session_scope(settings) as s, _decision_lock(s):
        return _decide(s, settings, row.id, search)


def _near_search(settings: Settings, store: ImageStore, image_id: int, phash: int | None,
                 key: str | None) -> _NearSearch | None:
    """The photo's near-duplicate lookup (None without a hash); on PostgreSQL the candidates found now
    are verified at once, before the decision lock."""
    if phash is None:
        return None
    photo = _load(store, key)
    queries = [phash, *(probe_hashes(photo, settings.dedup_probe_margins) if photo is not None else [])]
    search = _NearSearch(image_id, queries, settings.dedup_hamming_threshold,
                         _Verifier(settings, store, photo, phash))
    with session_scope(settings) as s:
        # The slow part, verification, outside the lock that other dedup workers wait on (embedded
        # SQLite: one process, whose transactions take the database's write lock anyway: not worth
        # a second lookup).
        if is_postgres(s):
            search.pick(s)
    return search


def _decide(session: Session, settings: Settings, image_id: int, search: _NearSearch | None) -> DedupOutcome:
    """Under the decision lock: find the photo's original, if any, and record the decision."""
    image = session.execute(select(Image.sha256, Image.listing_id).where(*_waiting(image_id))).first()
    if image is None:
        return DedupOutcome("skipped")
    original_id, distance = _find_original(session, image_id, image.sha256, search)
    if original_id is None:
        _mark_unique(session, settings, image_id)
        return DedupOutcome("unique")
    _mark_duplicate(session, settings, image_id, image.listing_id, original_id, distance)
    return DedupOutcome("duplicate", original_id, distance)


def _find_original(session: Session, image_id: int, sha256: str | None,
                   search: _NearSearch | None) -> tuple[int | None, int | None]:
    """``(original id, distance)``: an exact copy's (distance 0), else the nearest verified near
    duplicate's; ``(None, None)`` when the photo is unique."""
    exact = session.execute(
        select(Image.id).where(Image.sha256 == sha256, Image.id != image_id, *ORIGINAL).order_by(Image.id).limit(1)
    ).scalar_one_or_none() if sha256 else None
    if exact is not None:
        return exact, 0
    if search is not None:
        # Again under the lock: originals decided since are verified here, the rest are memoized.
        picked = search.pick(session)
        if picked is not None:
            return picked.id, picked.distance
    return None, None


def _mark_unique(session: Session, settings: Settings, image_id: int) -> None:
    """Under the decision lock: on to inference, numbered after every original decided before."""
    table = Image.__table__  # plain UPDATEs: no ORM session synchronization to evaluate
    prior = table.alias("prior")  # not correlated with the row being updated
    seq = select(func.coalesce(func.max(prior.c.original_seq), 0) + 1).scalar_subquery()
    session.execute(update(table).where(table.c.id == image_id)
                    .values(original_seq=seq, **moved_on(settings, Stage.inference.value, db_now(session))))


def _mark_duplicate(session: Session, settings: Settings, image_id: int, listing_id: int, original_id: int,
                    distance: int) -> None:
    table = Image.__table__  # plain UPDATEs: no ORM session synchronization to evaluate
    original_listing = session.execute(select(Image.listing_id).where(Image.id == original_id)).scalar_one()
    conflict = _labels_differ(session, listing_id, original_listing)
    session.execute(update(table).where(table.c.id == image_id).values(
        stage=Stage.done.value, state=State.done.value, attempts=0, error=None, lease_until=None,
        duplicate_of_id=original_id,
        duplicate_distance=distance, label_conflict=conflict, updated_at=utcnow()))
    # The duplicate reuses its original's prediction, if there is one already.
    refresh_listing_predictions(session, [listing_id], settings)


def dedup_images(settings: Settings, image_ids: Sequence[int], dispatch: Dispatch, *,
                 store: ImageStore | None = None) -> list[DedupOutcome]:
    """One message's batch: claim the photos, decide each in turn (a photo whose decision raises is
    counted as its own failure, see ``autodetect.pipeline.fates``; the others go on), then send
    those found unique on to inference in one dispatch. One outcome per id, in order."""
    store = store or ImageStore(settings.data_dir / "images", fsync=False)
    with session_scope(settings) as s:
        claimed = {row.id: row for row in claim_rows(s, settings, Stage.dedup.value, image_ids, Image.phash,
                                                     Image.normalized_key, Image.attempts)}
    outcomes: dict[int, DedupOutcome] = {}
    failures: list[Failure] = []
    for image_id, row in claimed.items():
        try:
            outcomes[image_id] = _dedup_claimed(settings, store, row)
        except Exception as exc:  # noqa: BLE001 - this photo's own failure, counted; the rest go on
            log.warning("dedup of photo %s failed", image_id, exc_info=True)
            failures.append(failure_of(image_id, exc))
            outcomes[image_id] = DedupOutcome("failed", reason=failures[-1].reason)
    if failures:
        with session_scope(settings) as s:
            record_failures(s, settings, Stage.dedup.value, failures, {i: r.attempts for i, r in claimed.items()})
    unique = [i for i, o in outcomes.items() if o.status == "unique"]
    if unique:
        dispatch(Stage.inference, unique)
    return [outcomes.get(int(i), DedupOutcome("skipped")) for i in image_ids]


def _labels_differ(session: Session, listing_a: int, listing_b: int) -> bool:
    if listing_a == listing_b:
        return False
    labels = dict(session.execute(select(Listing.id, Listing.class_id).where(Listing.id.in_((listing_a, listing_b)))).all())
    a, b = labels.get(listing_a), labels.get(listing_b)
    return a is not None and b is not None and a != b
