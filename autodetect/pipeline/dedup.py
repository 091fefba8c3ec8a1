"""Dedup stage: exact duplicates by sha256, near duplicates by a 64-bit perceptual hash, confirmed on
the pixels.

**Candidates** come from multi-index hashing in the database: the hash is split into four 16-bit
chunks, each with its own index ``(phash_cN, phash)``. Two hashes within Hamming distance ``t`` agree
within ``t // 4`` bits on at least one chunk (pigeonhole; :func:`index_plan` refines it so that only
``t % 4 + 1`` chunks need that radius and the rest one bit less), so the candidates are the rows whose
chunk i lies within that radius of the query's chunk i, for some i; each candidate's full distance is
checked (inside the index on PostgreSQL). That touches a few thousand index entries, not every hash.

pHash describes the picture's low frequencies: re-encoding, resizing and brightness move it by a few
bits, but a crop of a few percent per edge zooms and shifts the whole picture and moves it by up to 18
bits, as far as distinct photos of one model in the same setting can be. So a photo **probes** the
index with more than its own hash: for each of ``settings.dedup_probe_margins`` (3% and 6%), the hash
of the photo padded by that share per edge (edge pixels repeated: undoes the zoom of a crop when the
original came first) and of its centre with that share cut off (when the crop came first). Crops then
land within a few bits like the other copies.

**Verification**: 64 bits cannot tell every pair of near-identical distinct photos apart (template-like
interiors, one model in one setting), so every hash candidate is confirmed on the two stored
normalized photos: the crop of one that best aligns with all of the other is searched (up to 8% per
edge, both ways, coarse grid then coordinate ascent), each colour channel is fitted by a gain and an
offset (brightness, contrast), pixels clipped white in either photo are left out, and the candidate is
a duplicate when the remaining RMS difference is at most ``settings.dedup_max_residual`` grey levels.
Copies measured up to 8.8 levels (JPEG noise, resampling), distinct candidates 12.1 and more
(benchmarks/RESULTS.md, "Dedup index").

Decisions are serialized (an advisory lock on PostgreSQL, a process lock on embedded SQLite), so an
image is only ever compared with originals decided before it: duplicates always point at an
original, never at another duplicate. On PostgreSQL the slow part, verification, runs before the
lock against the candidates found then; under the lock the lookup is repeated and only originals
decided in between are verified there."""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache, lru_cache
from itertools import combinations

import numpy as np
from PIL import Image as PILImage
from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from autodetect.db import is_postgres, session_scope
from autodetect.images.decode import hamming, perceptual_hash
from autodetect.images.store import ImageStore
from autodetect.pipeline.inference import refresh_listing_predictions
from autodetect.pipeline.dispatch import Dispatch
from autodetect.settings import Settings
from autodetect.storage import Image, Listing, Stage, State, utcnow

log = logging.getLogger(__name__)

CHUNKS = 4
CHUNK_BITS = 16
#: Chunks from the least to the most crowded. pHash's top chunk holds the lowest frequencies (and the
#: DC bit, almost always 1), so its values cluster most; it gets the smaller radius when there is a choice.
_CHUNK_ORDER = (0, 1, 2, 3)
_DEDUP_LOCK_KEY = 0x0AD7D0D0  # pg_advisory_xact_lock key for dedup decisions
_embedded_lock = threading.Lock()
_ORIGINAL_STAGES = (Stage.inference.value, Stage.done.value)
#: When a photo cannot be looked at, only hashes this close count (distinct sandbox photos come this
#: close once in ~10,000 photos; at 8 bits, 20 times as often).
_UNVERIFIED_MAX_DISTANCE = 4


# --- the index -------------------------------------------------------------------------------------

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
    """:func:`near_candidates` for several query hashes at once, with each original's hash and photo."""
    queries = list(dict.fromkeys(queries))
    plan = [(i, r) for i, r in index_plan(threshold) if r >= 0]
    if not plan or not queries:
        return []
    if is_postgres(session):
        rows = _near_postgres(session, queries, threshold, plan, exclude_id)
    else:
        rows = _near_generic(session, queries, plan, exclude_id)
    found = []
    for image_id, h, key in rows:
        if h is None:
            continue
        distance = min(hamming(q, h) for q in queries)
        if distance <= threshold:
            found.append(Candidate(distance, image_id, h, key))
    return sorted(set(found), key=lambda c: (c.distance, c.id))


def _near_generic(session: Session, queries: list[int], plan: list[tuple[int, int]], exclude_id: int | None):
    """Any database (SQLite): one ``IN`` list of chunk neighbours per chunk index, OR-ed; the distance
    is checked in Python. The lists are integers we computed, inlined into the statement."""
    conds = []
    for i, r in plan:
        values = sorted({v for q in queries for v in chunk_neighbours(phash_chunks(q)[f"phash_c{i}"], r)})
        conds.append(f"phash_c{i} IN ({','.join(map(str, values))})")
    sql = (f"SELECT id, phash, normalized_key FROM images WHERE ({' OR '.join(conds)}) "
           "AND duplicate_of_id IS NULL AND stage IN ('inference', 'done') AND state <> 'failed'")
    params = {}
    if exclude_id is not None:
        sql += " AND id <> :x"
        params["x"] = exclude_id
    return session.execute(text(sql), params).all()


def _near_postgres(session: Session, queries: list[int], threshold: int, plan: list[tuple[int, int]],
                   exclude_id: int | None):
    """On PostgreSQL the distance is checked inside the index: each ``(phash_cN, phash)`` index is
    probed for the chunk's neighbours and its entries filtered by ``bit_count`` on the index tuple (an
    index-only scan: no table row is read for the thousands of chunk matches that are too far); only
    the few hashes within the threshold are then joined back to their rows for the stage filters.

    The statement is prepared once per connection (planning a lookup with several probes costs more
    than running it)."""
    chunks = tuple(i for i, _ in plan)
    name, sql = _postgres_statement(len(queries), chunks, exclude_id is not None)
    conn = session.connection()
    prepared = conn.info.setdefault("autodetect_dedup_prepared", set())  # lives with the DBAPI connection
    if name not in prepared:
        conn.exec_driver_sql(f"PREPARE {name} AS {sql}")
        prepared.add(name)
    args: list[object] = []
    for q in queries:
        c = phash_chunks(q)
        args += [q, *(chunk_neighbours(c[f"phash_c{i}"], r) for i, r in plan)]
    args.append(threshold)
    if exclude_id is not None:
        args.append(exclude_id)
    placeholders = ", ".join(["%s"] * len(args))
    return conn.exec_driver_sql(f"EXECUTE {name} ({placeholders})", tuple(args)).all()


@cache
def _postgres_statement(n_queries: int, chunks: tuple[int, ...], exclude: bool) -> tuple[str, str]:
    """``(name, SQL with $n parameters)``: per query its hash, then one neighbour array per chunk; then
    the threshold; then the id to leave out."""
    per_query = 1 + len(chunks)
    t = n_queries * per_query + 1
    parts = [f"SELECT phash FROM images WHERE phash_c{i} = ANY(${k * per_query + 2 + n}::integer[]) "
             f"AND bit_count((phash # ${k * per_query + 1}::bigint)::bit(64)) <= ${t}::integer"
             for k in range(n_queries) for n, i in enumerate(chunks)]
    # LATERAL with OFFSET 0 (which keeps the planner from flattening it into a hash join over the
    # whole table): one index probe per hit, as the planner cannot know how few pass ``bit_count``.
    sql = (f"WITH hits AS ({' UNION '.join(parts)}) "
           "SELECT r.id, r.phash, r.normalized_key FROM hits CROSS JOIN LATERAL ("
           "SELECT i.id, i.phash, i.normalized_key FROM images i "
           "WHERE i.phash_c0 = (hits.phash & 65535)::integer AND i.phash = hits.phash "
           "AND i.duplicate_of_id IS NULL AND i.stage IN ('inference', 'done') AND i.state <> 'failed'"
           f"{f' AND i.id <> ${t + 1}::bigint' if exclude else ''} OFFSET 0) r")
    name = f"autodetect_near_{n_queries}_{''.join(map(str, chunks))}_{int(exclude)}"
    return name, sql


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


# --- verification ----------------------------------------------------------------------------------

_MAX_CROP = 0.08  # per edge, what the alignment search allows (the sandbox crops at most 6%)
_WORK_W = 128  # working width of the fine comparison (colour)
_COARSE_W = 64  # working width of the coarse alignment search (grey)
_FINE = (64, 48)  # comparison grid (x, y)
_COARSE = (24, 18)
_COARSE_CUTS = [(float(lo), float(hi)) for lo in np.linspace(0.0, _MAX_CROP, 5)
                for hi in np.linspace(0.0, _MAX_CROP, 5)]
_REFINE_STEPS = (0.01, 0.005, 0.0025)
_GREY = np.array([0.299, 0.587, 0.114], dtype=np.float32)
# All sampling is gathers and element-wise arithmetic, no BLAS: multi-threaded BLAS on these tiny
# matrices stalls badly on a busy machine.


class Thumb:
    """A photo prepared for verification: small colour and grey float arrays."""

    def __init__(self, img: PILImage.Image):
        img = img.convert("RGB")
        h = max(8, round(img.height * _WORK_W / img.width))
        self.rgb = np.asarray(img.resize((_WORK_W, h), PILImage.Resampling.BOX), dtype=np.float32)
        hc = max(8, round(img.height * _COARSE_W / img.width))
        small = np.asarray(img.resize((_COARSE_W, hc), PILImage.Resampling.BOX), dtype=np.float32)
        self.coarse = (small * _GREY).sum(axis=2)
        self.h, self.w = self.rgb.shape[:2]


@lru_cache(maxsize=8192)
def _taps(n_out: int, n_in: int, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Linear interpolation taps ``(i0, i1, f)`` sampling ``n_out`` points over the span [lo, hi]
    (fractions of ``n_in`` pixels): ``x[i0] * (1 - f) + x[i1] * f``."""
    pos = (lo + (hi - lo) * (np.arange(n_out) + 0.5) / n_out) * n_in - 0.5
    pos = np.clip(pos, 0, n_in - 1)
    i0 = np.floor(pos).astype(np.intp)
    return i0, np.minimum(i0 + 1, n_in - 1), (pos - i0).astype(np.float32)


@lru_cache(maxsize=64)
def _coarse_taps(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The taps of every (low, high) cut of the coarse grid, concatenated."""
    taps = [_taps(n_out, n_in, lo, 1.0 - hi) for lo, hi in _COARSE_CUTS]
    return tuple(np.concatenate(t) for t in zip(*taps))  # type: ignore[return-value]


def _rows(x: np.ndarray, taps) -> np.ndarray:
    i0, i1, f = taps
    shape = (-1,) + (1,) * (x.ndim - 1)
    return x[i0] * (1 - f).reshape(shape) + x[i1] * f.reshape(shape)


def _cols(x: np.ndarray, taps) -> np.ndarray:
    i0, i1, f = taps
    shape = (-1,) + (1,) * (x.ndim - 2)
    return x[:, i0] * (1 - f).reshape(shape) + x[:, i1] * f.reshape(shape)


def _unit(v: np.ndarray) -> np.ndarray:
    v = v - v.mean(axis=-1, keepdims=True)
    return v / np.maximum(np.sqrt((v * v).sum(axis=-1, keepdims=True)), 1e-6)


def _sample(t: Thumb, box: tuple[float, float, float, float]) -> np.ndarray:
    """The region ``box`` = (left, top, right, bottom cut, as fractions) of ``t`` on the fine grid,
    as (3, y * x)."""
    left, top, right, bottom = (round(v, 5) for v in box)
    fx, fy = _FINE
    region = _cols(_rows(t.rgb, _taps(fy, t.h, top, 1 - bottom)), _taps(fx, t.w, left, 1 - right))
    return region.transpose(2, 0, 1).reshape(3, -1)


def _coarse_align(whole: Thumb, other: Thumb) -> tuple[float, tuple[float, float, float, float]]:
    """The coarse-grid crop of ``other`` that best matches all of ``whole`` (grey correlation)."""
    cx, cy = _COARSE
    h, w = whole.coarse.shape
    a = _unit(_cols(_rows(whole.coarse, _taps(cy, h, 0.0, 1.0)), _taps(cx, w, 0.0, 1.0)).ravel())
    h, w = other.coarse.shape
    n = len(_COARSE_CUTS)
    grid = _cols(_rows(other.coarse, _coarse_taps(cy, h)), _coarse_taps(cx, w))  # (n*cy, n*cx)
    grid = grid.reshape(n, cy, n, cx).transpose(0, 2, 1, 3).reshape(n * n, cy * cx)
    scores = (_unit(grid) * a).sum(axis=1)
    k = int(np.argmax(scores))
    iy, ix = divmod(k, n)
    (top, bottom), (left, right) = _COARSE_CUTS[iy], _COARSE_CUTS[ix]
    return float(scores[k]), (left, top, right, bottom)


def _refine(whole: Thumb, other: Thumb, box: tuple[float, float, float, float]):
    """Coordinate ascent of the colour correlation over the four cuts; returns (box, target, region)."""
    target = _sample(whole, (0.0, 0.0, 0.0, 0.0))
    unit_target = _unit(target).ravel()

    def score(b):
        return float((_unit(_sample(other, b)).ravel() * unit_target).sum())

    best, best_score = box, score(box)
    for step in _REFINE_STEPS:
        improved = True
        while improved:
            improved = False
            for k in range(4):
                for d in (-step, step):
                    b = list(best)
                    b[k] = min(_MAX_CROP + 0.02, max(0.0, b[k] + d))
                    b = tuple(b)
                    if b == best:
                        continue
                    s = score(b)
                    if s > best_score + 1e-7:
                        best, best_score, improved = b, s, True
    return best, target, _sample(other, best)


_CLIPPED = 245.0  # a pixel this bright in either photo may be clipped (a brightened copy saturates)


def _fit_residual(target: np.ndarray, region: np.ndarray) -> float:
    """RMS of the per-pixel worst channel difference after fitting ``region`` to ``target`` by a gain and
    an offset per channel, over the pixels that are not clipped in either (when enough are left)."""
    keep = (target.max(axis=0) < _CLIPPED) & (region.max(axis=0) < _CLIPPED)
    if keep.mean() >= 0.25:
        target, region = target[:, keep], region[:, keep]
    xm, ym = region.mean(axis=1, keepdims=True), target.mean(axis=1, keepdims=True)
    x, y = region - xm, target - ym
    gain = (x * y).sum(axis=1, keepdims=True) / np.maximum((x * x).sum(axis=1, keepdims=True), 1e-6)
    if (gain < 0).any():
        return float("inf")  # a negative image is not a copy
    worst = np.abs(y - gain * x).max(axis=0)
    return float(np.sqrt((worst * worst).mean()))


def residual(a: Thumb, b: Thumb, limit: float | None = None) -> float:
    """How far apart two photos are once aligned: the RMS (grey levels, 0-255) of the per-pixel worst
    channel difference after the best crop of one to the other and a per-channel gain and offset fit.

    With ``limit``, only the side of ``limit`` the answer falls on is exact: the fine alignment is
    skipped when the coarse one already gives at most ``limit``, or more than three times it."""
    first = _coarse_align(a, b)
    second = _coarse_align(b, a)
    whole, other, box = (a, b, first[1]) if first[0] >= second[0] else (b, a, second[1])
    coarse = _fit_residual(_sample(whole, (0.0, 0.0, 0.0, 0.0)), _sample(other, box))
    if limit is not None and (coarse <= limit or coarse > 3 * limit):
        return coarse
    _, target, region = _refine(whole, other, box)
    return min(coarse, _fit_residual(target, region))


# --- the stage -------------------------------------------------------------------------------------

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


def dedup_image(settings: Settings, image_id: int, dispatch: Dispatch, *,
                store: ImageStore | None = None) -> DedupOutcome:
    """Decide whether photo ``image_id`` (stage dedup, pending) is a duplicate of an earlier original
    (exact by sha256, or near: hash candidates verified on the pixels); move it on accordingly.
    ``store`` holds the normalized photos (default: the data directory's image store)."""
    store = store or ImageStore(settings.data_dir / "images", fsync=False)
    threshold = settings.dedup_hamming_threshold
    with session_scope(settings) as s:
        row = s.execute(select(Image.phash, Image.normalized_key).where(
            Image.id == image_id, Image.stage == Stage.dedup.value, Image.state == State.pending.value)).first()
        if row is None:
            return DedupOutcome("skipped")
        phash, key = row
    queries: list[int] = []
    verifier = None
    if phash is not None:
        photo = _load(store, key)
        queries = [phash, *(probe_hashes(photo, settings.dedup_probe_margins) if photo is not None else [])]
        verifier = _Verifier(settings, store, photo, phash)
        with session_scope(settings) as s:
            # The slow part, verification, outside the lock that other dedup workers wait on (embedded
            # SQLite: one process, whose transactions take the database's write lock anyway: not worth
            # a second lookup).
            if is_postgres(s):
                verifier.pick(find_candidates(s, queries, threshold, exclude_id=image_id))

    with session_scope(settings) as s, _decision_lock(s):
        image = s.execute(select(Image.sha256, Image.listing_id).where(
            Image.id == image_id, Image.stage == Stage.dedup.value, Image.state == State.pending.value)).first()
        if image is None:
            return DedupOutcome("skipped")
        original_id, distance = None, None
        exact = s.execute(
            select(Image.id).where(Image.sha256 == image.sha256, Image.id != image_id,
                                   Image.duplicate_of_id.is_(None), Image.stage.in_(_ORIGINAL_STAGES),
                                   Image.state != State.failed.value).order_by(Image.id).limit(1)
        ).scalar_one_or_none() if image.sha256 else None
        if exact is not None:
            original_id, distance = exact, 0
        elif verifier is not None:
            # Again under the lock: originals decided since are verified here, the rest are memoized.
            picked = verifier.pick(find_candidates(s, queries, threshold, exclude_id=image_id))
            if picked is not None:
                original_id, distance = picked.id, picked.distance
        table = Image.__table__  # plain UPDATEs: no ORM session synchronization to evaluate
        if original_id is None:
            s.execute(update(table).where(table.c.id == image_id)
                      .values(stage=Stage.inference.value, state=State.pending.value, updated_at=utcnow()))
            outcome = DedupOutcome("unique")
        else:
            original_listing = s.execute(select(Image.listing_id).where(Image.id == original_id)).scalar_one()
            conflict = _labels_differ(s, image.listing_id, original_listing)
            s.execute(update(table).where(table.c.id == image_id).values(
                stage=Stage.done.value, state=State.done.value, duplicate_of_id=original_id,
                duplicate_distance=distance, label_conflict=conflict, updated_at=utcnow()))
            # The duplicate reuses its original's prediction, if there is one already.
            refresh_listing_predictions(s, [image.listing_id], settings)
            outcome = DedupOutcome("duplicate", original_id, distance)
    if outcome.status == "unique":
        dispatch(Stage.inference, [image_id])
    return outcome


def dedup_images(settings: Settings, image_ids: Sequence[int], dispatch: Dispatch, *,
                 store: ImageStore | None = None) -> list[DedupOutcome]:
    """``dedup_image`` for each photo in turn (one message's batch); those found unique go on to
    inference in one dispatch at the end."""
    store = store or ImageStore(settings.data_dir / "images", fsync=False)
    unique: list[int] = []
    outcomes = [dedup_image(settings, int(i), lambda _stage, ids: unique.extend(ids), store=store)
                for i in image_ids]
    if unique:
        dispatch(Stage.inference, unique)
    return outcomes


def _labels_differ(session: Session, listing_a: int, listing_b: int) -> bool:
    if listing_a == listing_b:
        return False
    labels = dict(session.execute(select(Listing.id, Listing.class_id).where(Listing.id.in_((listing_a, listing_b)))).all())
    a, b = labels.get(listing_a), labels.get(listing_b)
    return a is not None and b is not None and a != b
