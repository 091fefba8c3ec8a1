"""Near-duplicate candidates for the dedup stage: the originals whose 64-bit perceptual hash lies within
``settings.dedup_hamming_threshold`` bits of a photo's, found through an index rather than by reading
every hash. The stage (``dedup``) then confirms each candidate on the pixels.

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
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from itertools import combinations

import numpy as np
from PIL import Image as PILImage
from sqlalchemy import text
from sqlalchemy.orm import Session

from autodetect.db import is_postgres
from autodetect.images.decode import hamming, perceptual_hash

CHUNKS = 4
CHUNK_BITS = 16
#: Chunks from the least to the most crowded. pHash's top chunk holds the lowest frequencies (and the
#: DC bit, almost always 1), so its values cluster most; it gets the smaller radius when there is a choice.
_CHUNK_ORDER = (0, 1, 2, 3)


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

