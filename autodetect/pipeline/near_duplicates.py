"""Near-duplicate candidates for the dedup stage: the originals whose 64-bit perceptual hash lies within
``settings.dedup_hamming_threshold`` bits of a photo's, found through an index rather than by reading
every hash. The stage (``dedup``) then confirms each candidate on the pixels.

**Candidates** come from multi-index hashing in memory (``hash_index``): the hash is split into four
16-bit chunks. Two hashes within Hamming distance ``t`` agree within ``t // 4`` bits on at least one
chunk (pigeonhole; :func:`index_plan` refines it so that only ``t % 4 + 1`` chunks need that radius and
the rest one bit less), so the candidates are the hashes whose chunk i lies within that radius of the
query's chunk i, for some i; each candidate's full distance is then checked. That touches a few
thousand hashes of a million, not every one.

**PostgreSQL (or SQLite) stays the source of truth.** Each process keeps one index per database, built
on first use from the originals' ids and hashes (about 2 s per million; 56 bytes per hash, see
``hash_index``), and kept in step with it by every lookup: dedup numbers the originals it decides
(``images.original_seq``, assigned under its decision lock, so in commit order). A lookup searches the
index, then ONE statement reads again by primary key what the index answered, with the original filters
(not a duplicate, stage inference or done, not failed; so an original that failed or changed since is
never used, and the normalized photo comes from that read), together with the originals numbered after
the newest the index holds (one indexed range); those are taken into the index and are candidates too
when they are near. One round trip per photo.

pHash describes the picture's low frequencies: re-encoding, resizing and brightness move it by a few
bits, but a crop of a few percent per edge zooms and shifts the whole picture and moves it by up to 18
bits, as far as distinct photos of one model in the same setting can be. So a photo **probes** the
index with more than its own hash: for each of ``settings.dedup_probe_margins`` (3% and 6%), the hash
of the photo padded by that share per edge (edge pixels repeated: undoes the zoom of a crop when the
original came first) and of its centre with that share cut off (when the crop came first). Crops then
land within a few bits like the other copies.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from itertools import chain, combinations

import numpy as np
from PIL import Image as PILImage
from sqlalchemy import and_
from sqlalchemy.orm import Session

from autodetect.images.decode import hamming, perceptual_hash
from autodetect.pipeline.hash_index import CHUNK_BITS, CHUNKS, HashIndex, ProbePlan
from autodetect.storage import Image, Stage, State

log = logging.getLogger(__name__)

#: Chunks from the least to the most crowded. pHash's top chunk holds the lowest frequencies (and the
#: DC bit, almost always 1), so its values cluster most; it gets the smaller radius when there is a choice.
_CHUNK_ORDER = (0, 1, 2, 3)
_MASK64 = (1 << 64) - 1
#: The conditions under which a photo is an original that later photos may duplicate.
ORIGINAL = (Image.duplicate_of_id.is_(None), Image.stage.in_((Stage.inference.value, Stage.done.value)),
            Image.state != State.failed.value)


# --- the pigeonhole --------------------------------------------------------------------------------

def index_plan(threshold: int) -> list[tuple[int, int]]:
    """``[(chunk, radius)]`` to probe for hashes within ``threshold`` bits (a chunk with radius -1 is not
    probed at all).

    Pigeonhole, refined: with ``threshold = 4 r + a`` (0 <= a < 4), two hashes within the threshold
    agree within ``r`` bits on one of ``a + 1`` chunks or within ``r - 1`` bits on one of the others
    (otherwise they would differ in at least ``(a + 1)(r + 1) + (3 - a) r = threshold + 1`` bits). So
    only ``a + 1`` chunks need the full radius ``threshold // 4``; the rest get one bit less."""
    if threshold < 0:
        return []
    r, a = divmod(threshold, CHUNKS)
    return [(chunk, r if k <= a else r - 1) for k, chunk in enumerate(_CHUNK_ORDER)]


@cache
def flip_masks(radius: int) -> np.ndarray:
    """Every 16-bit mask with at most ``radius`` bits set, fewest bits first (read-only)."""
    masks = np.array([sum(1 << b for b in bits) for r in range(radius + 1)
                      for bits in combinations(range(CHUNK_BITS), r)], dtype=np.intp)
    masks.flags.writeable = False
    return masks


@cache
def probe_plan(threshold: int) -> ProbePlan:
    """:func:`index_plan` as the index reads it."""
    return ProbePlan.of([(chunk, flip_masks(r)) for chunk, r in index_plan(threshold) if r >= 0])


def phash_chunks(value: int) -> dict[str, int]:
    """The 16-bit chunks of a signed 64-bit hash, as the ``phash_c*`` columns."""
    unsigned = value & _MASK64
    return {f"phash_c{i}": (unsigned >> (CHUNK_BITS * i)) & 0xFFFF for i in range(CHUNKS)}


# --- the lookup ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Candidate:
    """An original found near a query: its distance (the smallest over the probes), id, hash and
    normalized photo."""

    distance: int
    id: int
    phash: int
    normalized_key: str | None


def near_candidates(session: Session, phash: int, threshold: int, *, exclude_id: int | None = None,
                    probes: Sequence[int] = ()) -> list[tuple[int, int]]:
    """Originals whose perceptual hash is within ``threshold`` bits of ``phash`` (or of any of the
    extra ``probes``): ``[(distance, id)]`` nearest first, ties by id (the oldest original first); the
    distance is the smallest over the probes."""
    return [(c.distance, c.id) for c in find_candidates(session, [phash, *probes], threshold,
                                                        exclude_id=exclude_id)]


def find_candidates(session: Session, queries: Sequence[int], threshold: int, *,
                    exclude_id: int | None = None) -> list[Candidate]:
    """:func:`near_candidates` for several query hashes at once, with each original's hash and photo:
    the index searched, and in one statement its answers read again from the database and the originals
    numbered since caught up (those near the queries are candidates too)."""
    queries = list(dict.fromkeys(queries))
    if threshold < 0 or not queries:
        return []
    unsigned = np.array([q & _MASK64 for q in queries], dtype=np.uint64)
    rows = _synced(session).lookup(session, unsigned, threshold)
    found = {}
    for image_id, h, key in rows:
        distance = min(hamming(q, h) for q in queries) if h is not None else threshold + 1
        if distance <= threshold and image_id != exclude_id:
            found[image_id] = Candidate(distance, image_id, h, key)
    return sorted(found.values(), key=lambda c: (c.distance, c.id))


# --- one index per database, in sync with it -------------------------------------------------------
# The statements on the lookup's path are plain SQL text with the integers we hold inlined: building
# and compiling SQLAlchemy statements there costs more than the database's answer.

_ORIGINAL_SQL = str(and_(*ORIGINAL).compile(compile_kwargs={"literal_binds": True}))
_BATCH = 100_000  # rows converted at a time when the whole index is read


def _rows(session: Session, sql: str) -> list:
    return session.connection().exec_driver_sql(sql).all()


def _arrays(rows: Sequence[tuple[int, int | None]]) -> tuple[np.ndarray, np.ndarray]:
    """``(unsigned hashes, ids)`` of ``[(id, signed hash)]``, leaving out rows without a hash."""
    pairs = np.array([(i, h) for i, h in rows if h is not None], dtype=np.int64).reshape(-1, 2)
    return pairs[:, 1].view(np.uint64), pairs[:, 0].copy()


def _read_numbered(session: Session, upto: int) -> tuple[np.ndarray, np.ndarray]:
    """``(unsigned hashes, ids)`` of every original numbered up to ``upto``, straight from the driver's
    cursor in batches (a million rows in about a second; SQLAlchemy's rows would take three)."""
    cursor = session.connection().connection.cursor()
    try:
        cursor.execute(f"SELECT id, phash FROM images WHERE original_seq <= {int(upto)} AND phash IS NOT NULL")
        parts = [np.fromiter(chain.from_iterable(batch), dtype=np.int64, count=2 * len(batch))
                 for batch in iter(lambda: cursor.fetchmany(_BATCH), [])]
    finally:
        cursor.close()
    pairs = np.concatenate([np.empty(0, dtype=np.int64), *parts]).reshape(-1, 2)
    return pairs[:, 1].view(np.uint64), pairs[:, 0].copy()


class _SyncedIndex:
    """One database's numbered originals in a :class:`HashIndex`; ``last`` is the newest one read
    ``(original_seq, id, phash)``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._index: HashIndex | None = None
        self._last: tuple[int, int, int | None] = (0, 0, None)

    def caught_up(self, session: Session) -> HashIndex:
        """The index with every original numbered in ``session``'s view of the database."""
        # The transaction is begun before the lock is taken (on SQLite that takes the database's write
        # lock, which another thread may hold while it waits for ours).
        session.connection()
        with self._lock:
            if self._index is None or not self._catch_up(session):
                self._rebuild(session)
            return self._index

    def lookup(self, session: Session, queries: np.ndarray, threshold: int) -> list[tuple[int, int, str | None]]:
        """``[(id, signed hash, normalized key)]`` of the originals the database has now that may lie
        within ``threshold`` of ``queries``: those the index finds, read again by primary key with the
        original filters, and those numbered since the index's newest, in ONE statement (a lookup is one
        round trip). The index then takes in the newly numbered ones."""
        session.connection()  # begun before the lock is taken (see ``caught_up``)
        with self._lock:
            if self._index is None:
                self._rebuild(session)
            ids = self._index.search(queries, threshold, probe_plan(threshold)).tolist()
            seq = int(self._last[0])
            reread = (f" UNION ALL SELECT NULL, id, phash, normalized_key, 1 FROM images "
                      f"WHERE id IN ({', '.join(map(str, ids))}) AND {_ORIGINAL_SQL}") if ids else ""
            rows = _rows(session, f"SELECT original_seq, id, phash, normalized_key, "
                                  f"CASE WHEN {_ORIGINAL_SQL} THEN 1 ELSE 0 END FROM images "
                                  f"WHERE original_seq >= {seq}{reread}")
            numbered = sorted((r for r in rows if r[0] is not None), key=lambda r: r[0])
            if not self._take_in(numbered):
                self._rebuild(session)
                return self._lookup_rebuilt(session, queries, threshold)
            return [(i, h, key) for seq_, i, h, key, ok in rows if ok and (seq_ is None or seq_ > seq)]

    def _lookup_rebuilt(self, session: Session, queries: np.ndarray,
                             threshold: int) -> list[tuple[int, int, str | None]]:
        """After a rebuild (lock held): the fresh index's answers, read again by primary key."""
        ids = self._index.search(queries, threshold, probe_plan(threshold)).tolist()
        if not ids:
            return []
        return [tuple(r) for r in _rows(session, f"SELECT id, phash, normalized_key FROM images "
                                                 f"WHERE id IN ({', '.join(map(str, ids))}) AND {_ORIGINAL_SQL}")]

    def _catch_up(self, session: Session) -> bool:
        """Add the originals numbered after ``last``; False when ``last`` itself is no longer what was
        read (the table was emptied or that row deleted): the index must be rebuilt."""
        rows = _rows(session, f"SELECT original_seq, id, phash FROM images "
                              f"WHERE original_seq >= {int(self._last[0])} ORDER BY original_seq")
        return self._take_in(rows)

    def _take_in(self, numbered: Sequence[Sequence]) -> bool:
        """Add ``numbered`` (rows ``(original_seq, id, phash, ...)`` from ``last`` on, in order) to the
        index; False when the first is not ``last`` as it was read (the index must be rebuilt)."""
        rows = [tuple(r[:3]) for r in numbered]
        if self._last[0]:
            if not rows or rows[0] != self._last:
                log.warning("dedup hash index: original #%d is no longer what was read; rebuilding", self._last[0])
                return False
            rows = rows[1:]
        if rows:
            self._index = self._index.extended(*_arrays([(i, h) for _, i, h in rows]))
            self._last = rows[-1]
        return True

    def _rebuild(self, session: Session) -> None:
        """Read every numbered original's id and hash (those numbered later are caught up later)."""
        started = time.perf_counter()
        newest = _rows(session, "SELECT original_seq, id, phash FROM images WHERE original_seq IS NOT NULL "
                                "ORDER BY original_seq DESC LIMIT 1")
        self._last = tuple(newest[0]) if newest else (0, 0, None)
        hashes, ids = _read_numbered(session, self._last[0])
        read = time.perf_counter()
        self._index = HashIndex.build(hashes, ids)
        log.info("dedup hash index: %d originals read in %.2f s, indexed in %.2f s", len(self._index),
                 read - started, time.perf_counter() - read)


_indexes: dict[object, _SyncedIndex] = {}
_indexes_lock = threading.Lock()


def _synced(session: Session) -> _SyncedIndex:
    """This process's index of the database ``session`` is bound to (built on first use)."""
    url = session.get_bind().engine.url
    with _indexes_lock:
        return _indexes.setdefault(url, _SyncedIndex())


def current_index(session: Session) -> HashIndex:
    """This process's index of the database ``session`` is bound to, with every original numbered in
    the session's view of it (built on first use; a dedup worker may call it at start to warm up)."""
    return _synced(session).caught_up(session)


def _forget_indexes() -> None:
    """A forked child starts without its parent's indexes (and locks): it builds its own on first use."""
    global _indexes_lock
    _indexes.clear()
    _indexes_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_indexes)


# --- probes ----------------------------------------------------------------------------------------

def probe_hashes(img: PILImage.Image, margins: Sequence[float]) -> list[int]:
    """The extra hashes a photo probes the index with, for each margin: the photo padded by that share
    of its size per edge (edge pixels repeated) and its centre with that share cut off per edge.
    A margin too small to move a pixel, or too big for the photo, gives nothing."""
    w, h = img.size
    grey = None  # pHash looks at the luminance only: convert once
    out = []
    for margin in margins:
        dx, dy = round(w * margin), round(h * margin)
        if dx < 1 or dy < 1 or w <= 4 * dx or h <= 4 * dy:
            continue
        if grey is None:
            grey = img.convert("L")
        padded = PILImage.fromarray(np.pad(np.asarray(grey), ((dy, dy), (dx, dx)), mode="edge"))
        out += [perceptual_hash(padded), perceptual_hash(grey.crop((dx, dy, w - dx, h - dy)))]
    return out

