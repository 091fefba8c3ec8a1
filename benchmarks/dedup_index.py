"""Near-duplicate lookup at scale: 1,000,000 perceptual hashes in PostgreSQL, looked up the way the dedup
stage does (``autodetect.pipeline.near_duplicates.find_candidates``: the process's in-memory multi-index,
caught up with the database by ``original_seq``, its answers read again by primary key), against a
brute-force scan.

    python benchmarks/dedup_index.py [--rows 1000000] [--queries 1000] [--photos 300] [--threshold N]
                                     [--pg postgresql+psycopg2://postgres:postgres@127.0.0.1:5432/postgres]

What it does, in one run:

1. A scratch database on the ``--pg`` server (dropped afterwards) gets the real schema (the Alembic
   migrations). One listing; ``--rows`` images in stage/state ``done`` (originals, numbered by
   ``original_seq`` in id order as dedup numbers them) are bulk loaded with ``COPY`` (the phash and
   original_seq indexes are dropped for the load and created again with their declared definitions,
   then ``VACUUM ANALYZE``).
2. The hashes are pHash-like, not uniform: real 64-bit pHashes of sandbox photos (decode -> normalize
   -> perceptual_hash, the download stage's own path) are cut into their four 16-bit chunks, and each
   synthetic hash takes every chunk from an independently drawn real photo, then gets 4 random bits
   flipped among the lower 63 (bit 63, pHash's DC bit, is kept as the photo had it: almost always 1).
   So every chunk keeps the skew of real pHash chunks (the top chunk, which holds the lowest
   frequencies, is the most crowded), which is what the index's cost depends on.
3. The index is built as a dedup process builds it on its first lookup (read every numbered
   original's id and hash, then sort the chunk copies); the time is printed, and the sorting alone.
   The table, its primary key and the ``original_seq`` index are loaded into memory (``pg_prewarm``),
   as on a server that has been answering lookups.
4. Queries: half are real sandbox photo hashes around which near copies were planted at distances
   1..threshold+2 (so they have answers at every distance), half are stored hashes with 0..threshold
   random bits flipped. Each is looked up with ``near_candidates`` (one hash) in a fresh transaction,
   as the dedup task does (timed from after the pool checkout to the rows in Python). Then what
   ``dedup_image`` runs per photo: a real photo's hash and its four probes through ``find_candidates``
   (the in-memory search, then one statement that reads its answers again and catches the index up),
   with one new original numbered
   (committed) before each photo, as in a pipeline that finds most photos unique, so every catch-up
   has a row to add; the in-memory search alone on the same photos; p50/p95/p99/max are printed.
5. Brute force: numpy popcount over every hash in memory, per hash and per photo (its 5 hashes), and
   ``bit_count((phash # q)::bit(64)) <= t`` in SQL over every row (a sequential scan) on
   ``--sql-scan-queries`` queries. Recall: every lookup's ids must be identical to numpy's (100% within
   the threshold).

Exit status 1 if recall is not 100% or the per-photo p95 is above the goal (1 ms).
"""

from __future__ import annotations

import argparse
import io
import os
import random
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from autodetect.db import engine_for, session_scope, upgrade
from autodetect.images.decode import (
    decode_image,
    normalize,
    perceptual_hash,
    to_signed64,
)
from autodetect.pipeline.hash_index import BYTES_PER_HASH, HashIndex
from autodetect.pipeline.near_duplicates import (
    current_index,
    find_candidates,
    index_plan,
    near_candidates,
    phash_chunks,
    probe_hashes,
    probe_plan,
)
from autodetect.sandbox.marketplace import Marketplace
from autodetect.settings import configure
from autodetect.storage import Image

GOAL_P95_MS = 1.0  # per photo: its hash and its probes, as dedup looks them up
MASK = (1 << 64) - 1


@contextmanager
def scratch_postgres(url: str, keep: str | None = None) -> Iterator[str]:
    """A fresh database on the server of ``url``, dropped afterwards (``keep``: a named one, reused and
    kept, for repeated runs while tuning)."""
    name = keep or f"autodetect_bench_dedup_{os.getpid()}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        exists = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).first()
        if not exists:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(url).set(database=name).render_as_string(hide_password=False)
    finally:
        if not keep:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def real_hashes(photos: int, seed: int, margins: list[float]) -> tuple[np.ndarray, list[list[int]]]:
    """pHashes (unsigned) of about ``photos`` sandbox photos, through the download stage's path, and
    each photo's extra dedup probes (unsigned)."""
    market = Marketplace(listings=max(12, photos * 10 // 35), models=10, seed=seed, bad_input=False)
    out, probes = [], []
    for listing in market.listings():
        for photo in listing.photos:
            data = market.photo_bytes(photo.path)
            if data is None or photo.original:
                continue
            img = normalize(decode_image(data, 40_000_000, draft_side=512), 512)
            out.append(perceptual_hash(img) & MASK)
            probes.append([h & MASK for h in probe_hashes(img, margins)])
            if len(out) >= photos:
                return np.array(out, dtype=np.uint64), probes
    return np.array(out, dtype=np.uint64), probes


def flip(value: int, bits: int, rng: random.Random, keep_top: bool = True) -> int:
    for b in rng.sample(range(63 if keep_top else 64), bits):
        value ^= 1 << b
    return value


def synthetic_hashes(real: np.ndarray, rows: int, rng: np.random.Generator) -> np.ndarray:
    """``rows`` hashes whose 16-bit chunks each come from an independently drawn real hash, with 4 random
    bits of the lower 63 flipped."""
    out = np.zeros(rows, dtype=np.uint64)
    for i in range(4):
        donors = real[rng.integers(0, len(real), rows)]
        out |= donors & np.uint64(0xFFFF << (16 * i))
    for _ in range(4):  # 4 flips (two may coincide: then 2 fewer bits differ)
        out ^= np.left_shift(np.uint64(1), rng.integers(0, 63, rows).astype(np.uint64))
    return out


def load(url: str, hashes: np.ndarray) -> float:
    """Bulk load ``hashes`` as done originals of one listing, numbered in id order; returns seconds."""
    started = time.perf_counter()
    eng = engine_for(url)
    loaded_later = [ix for ix in Image.__table__.indexes
                    if ix.name.startswith("ix_images_phash") or ix.name == "ix_images_original_seq"]
    with eng.begin() as conn:
        conn.execute(text("INSERT INTO listings (id, source, external_id, title, status, issues, first_seen, "
                          "last_seen, last_crawl, raw, label_method, label_confidence) VALUES (1, 'bench', '1', "
                          "'bench', 'active', '[]', now(), now(), 0, '{}', 'unknown', 0)"))
        for ix in loaded_later:
            conn.execute(text(f"DROP INDEX {ix.name}"))
    signed = hashes.view(np.int64)
    cols = ("listing_id", "position", "url", "stage", "state", "attempts", "updated_at", "phash",
            "phash_c0", "phash_c1", "phash_c2", "phash_c3", "label_conflict", "original_seq", "normalized_key")
    raw = eng.raw_connection()
    try:
        cur = raw.cursor()
        batch = 200_000
        for start in range(0, len(hashes), batch):
            buf = io.StringIO()
            for pos in range(start, min(len(hashes), start + batch)):
                h = int(signed[pos])
                c = phash_chunks(h)
                buf.write(f"1\t{pos}\tu\tdone\tdone\t0\t2025-01-01\t{h}\t{c['phash_c0']}\t{c['phash_c1']}\t"
                          f"{c['phash_c2']}\t{c['phash_c3']}\tf\t{pos + 1}\tn{pos + 1}\n")
            buf.seek(0)
            cur.copy_expert(f"COPY images ({', '.join(cols)}) FROM STDIN", buf)
        raw.commit()
    finally:
        raw.close()
    with eng.begin() as conn:
        for ix in loaded_later:
            ix.create(conn)
    auto = create_engine(url, isolation_level="AUTOCOMMIT")
    with auto.connect() as conn:
        conn.execute(text("VACUUM ANALYZE images"))
    auto.dispose()
    return time.perf_counter() - started


def prepare(url: str, settings, stored: np.ndarray) -> str:
    """The scratch database with ``stored`` loaded (reused when it holds them already) and warmed;
    returns how it was warmed."""
    eng = engine_for(url)
    with eng.begin() as conn:
        have = conn.execute(text("SELECT to_regclass('images') IS NOT NULL")).scalar()
        if have:  # the originals an earlier run added while it looked photos up
            conn.execute(text("DELETE FROM images WHERE id > :n"), {"n": len(stored)})
            conn.execute(text("SELECT setval(pg_get_serial_sequence('images', 'id'), :n)"), {"n": len(stored)})
        count, total = conn.execute(text("SELECT count(*), sum(phash::numeric) FROM images")).one() if have else (0, 0)
    if count != len(stored) or int(total or 0) != int(stored.view(np.int64).astype(object).sum()):
        if have:
            with eng.begin() as conn:
                conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
        upgrade(settings)
        print(f"loaded {len(stored):,} hashes with COPY in {load(url, stored):.1f}s")
    else:
        print(f"reusing {count:,} rows in {make_url(url).database}")
    # A server that has been answering lookups has the table and the indexes the lookup reads in
    # memory: load them (pg_prewarm when the extension is there, else one pass each).
    auto = create_engine(url, isolation_level="AUTOCOMMIT")
    relations = ("images", "images_pkey", "ix_images_original_seq")
    with auto.connect() as conn:
        try:
            conn.execute(text("CREATE EXTENSION IF NOT EXISTS pg_prewarm"))
            for rel in relations:
                conn.execute(text("SELECT pg_prewarm(:r)"), {"r": rel})
            warmed = "pg_prewarm"
        except Exception:  # noqa: BLE001 - no extension: read them instead
            conn.execute(text("SELECT count(normalized_key), max(original_seq) FROM images"))
            warmed = "a pass over the table"
    auto.dispose()
    return f"{', '.join(relations)} warmed with {warmed}"


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, max(0, round(q / 100 * len(values) + 0.5) - 1))]


def timed(fn, *args) -> tuple[object, float]:
    """``fn(*args)`` and its milliseconds."""
    t = time.perf_counter()
    out = fn(*args)
    return out, (time.perf_counter() - t) * 1000


class Oracle:
    """Brute force over every original in memory (ids are 1..N in load order, then the added ones)."""

    def __init__(self, stored: np.ndarray, threshold: int):
        self.hashes, self.threshold = stored, threshold

    def add(self, h: int) -> None:
        self.hashes = np.concatenate([self.hashes, np.array([h], dtype=np.uint64)])

    def near(self, queries: list[int]) -> list[int]:
        d = np.bitwise_count(self.hashes ^ np.uint64(queries[0]))
        for q in queries[1:]:
            np.minimum(d, np.bitwise_count(self.hashes ^ np.uint64(q)), out=d)
        return (np.flatnonzero(d <= self.threshold) + 1).tolist()


def lookups(settings, queries: list[int], oracle: Oracle) -> tuple[list[float], int, int]:
    """One hash at a time through ``near_candidates``: ``(ms per lookup, answers, mismatches)``."""
    threshold = oracle.threshold
    for q in queries[:20]:  # warm up the connection pool and the statement cache
        with session_scope(settings) as s:
            near_candidates(s, to_signed64(q), threshold)
    lat, answers, bad = [], 0, 0
    for q in queries:
        with session_scope(settings) as s:  # a fresh transaction per query, as in dedup_image
            s.connection()  # the pool checkout (and its pre-ping) is not the lookup
            found, ms = timed(near_candidates, s, to_signed64(q), threshold)
        lat.append(ms)
        answers += len(found)
        bad += sorted(i for _, i in found) != oracle.near([q])
    return lat, answers, bad


def photo_lookups(settings, photos: list[list[int]], oracle: Oracle, arrivals: np.ndarray):
    """Each photo's hash and probes through ``find_candidates``, one new original numbered before each:
    ``(ms per photo, in-memory search alone ms, mismatches)``."""
    threshold, plan = oracle.threshold, probe_plan(oracle.threshold)
    lat, search_lat, bad = [], [], 0
    for qs, new in zip(photos, arrivals):
        with session_scope(settings) as s:  # a photo decided unique elsewhere, committed
            s.execute(text("INSERT INTO images (listing_id, position, url, stage, state, attempts, updated_at, "
                           "phash, label_conflict, original_seq, normalized_key) SELECT 1, -1 - m, 'u', 'inference', "
                           "'pending', 0, now(), :h, false, m + 1, 'new' FROM (SELECT max(original_seq) AS m "
                           "FROM images) AS newest"), {"h": to_signed64(int(new))})
        oracle.add(int(new))
        signed = [to_signed64(q) for q in qs]
        with session_scope(settings) as s:
            s.connection()
            found, ms = timed(find_candidates, s, signed, threshold)
            index = current_index(s)
        lat.append(ms)
        _, search_ms = timed(index.search, np.array(qs, dtype=np.uint64), threshold, plan)
        search_lat.append(search_ms)
        bad += sorted(c.id for c in found) != oracle.near(qs)
    return lat, search_lat, bad


def sql_scans(url: str, queries: list[int], oracle: Oracle) -> tuple[list[float], int]:
    """The brute force in SQL: ``bit_count`` over every row."""
    sql = text("SELECT id FROM images WHERE bit_count((phash # :q)::bit(64)) <= :t AND duplicate_of_id IS NULL "
               "AND stage IN ('inference', 'done') AND state != 'failed' ORDER BY id")
    lat, bad = [], 0
    for q in queries:
        t = time.perf_counter()
        with engine_for(url).connect() as conn:
            ids = conn.execute(sql, {"q": to_signed64(q), "t": oracle.threshold}).scalars().all()
        lat.append((time.perf_counter() - t) * 1000)
        bad += ids != oracle.near([q])
    return lat, bad


def build_index(settings, stored: np.ndarray) -> tuple[float, float, int]:
    """The index as a dedup process builds it on first use (read + sort), and the sorting alone:
    ``(seconds, sorting seconds, hashes)``."""
    with session_scope(settings) as s:
        index, ms = timed(current_index, s)
    _, sort_ms = timed(HashIndex.build, stored, np.arange(1, len(stored) + 1))
    return ms / 1000, sort_ms / 1000, len(index)


def row(name: str, lat: list[float], note: str = "", digits: int = 2) -> str:
    return (f"{name:38}{pct(lat, 50):9.{digits}f}{pct(lat, 95):9.{digits}f}{pct(lat, 99):9.{digits}f}"
            f"{max(lat):9.{digits}f}   {note}").rstrip()


def workload(args, threshold: int, margins: list[float]):
    """``(stored hashes, one-hash queries, photos' hash + probes, originals arriving meanwhile)``."""
    rng = np.random.default_rng(args.seed)
    prng = random.Random(args.seed)
    t0 = time.perf_counter()
    real, real_probes = real_hashes(args.real_photos, args.seed, margins)
    print(f"real sandbox pHashes: {len(real)} photos in {time.perf_counter() - t0:.1f}s "
          f"(bit 63 set in {np.mean((real >> np.uint64(63)) == 1):.1%})")
    stored = synthetic_hashes(real, args.rows, rng)
    # Queries: half real photos with planted near copies, half stored hashes with flips.
    n_real = args.queries // 2
    picked = rng.choice(len(real), n_real, replace=False)
    real_q = [int(h) for h in real[picked]]
    photos = [[int(real[k]), *real_probes[k]] for k in picked[:args.photos]]
    planted = [flip(q, prng.randint(1, threshold + 2), prng) for q in real_q for _ in range(3)]
    stored = np.concatenate([stored, np.array(planted, dtype=np.uint64)])
    stored_q = [flip(int(stored[i]), prng.randint(0, threshold), prng)
                for i in rng.integers(0, args.rows, args.queries - n_real)]
    queries = real_q + stored_q
    prng.shuffle(queries)
    return stored, queries, photos, synthetic_hashes(real, len(photos), rng)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--photos", type=int, default=300, help="photos looked up with their probes (at most queries/2)")
    p.add_argument("--threshold", type=int, default=None, help="default: settings.dedup_hamming_threshold")
    p.add_argument("--sql-scan-queries", type=int, default=30)
    p.add_argument("--real-photos", type=int, default=1500, help="sandbox photos whose hashes seed the data")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--pg", default=os.environ.get("AUTODETECT_BENCH_PG",
                                                  "postgresql+psycopg2://postgres:postgres@127.0.0.1:5432/postgres"))
    p.add_argument("--keep-db", default=None, help="use (and keep) this database name; reuse its rows if loaded")
    args = p.parse_args()

    defaults = configure(database_url="sqlite://")  # only for the defaults (threshold, probe margins)
    threshold = args.threshold if args.threshold is not None else defaults.dedup_hamming_threshold
    stored, queries, photos, arrivals = workload(args, threshold, defaults.dedup_probe_margins)

    with scratch_postgres(args.pg, args.keep_db) as url:
        settings = configure(database_url=url, dedup_hamming_threshold=threshold)
        warmed = prepare(url, settings, stored)
        print(f"index: (chunk, radius) {index_plan(threshold)}; {warmed}")
        build_s, sort_s, indexed = build_index(settings, stored)
        oracle = Oracle(stored, threshold)
        lat, answers, bad = lookups(settings, queries, oracle)
        photo_lat, search_lat, photo_bad = photo_lookups(settings, photos, oracle, arrivals)
        scan_lat, scan_bad = sql_scans(url, queries[: args.sql_scan_queries], oracle)
    brute_lat = [timed(oracle.near, [q])[1] for q in queries[:200]]
    brute_photo_lat = [timed(oracle.near, qs)[1] for qs in photos]

    print()
    print(f"rows {len(stored):,}  queries {len(queries)}  photos {len(photos)} (hash + {len(photos[0]) - 1} probes)  "
          f"threshold {threshold}  answers/query {answers / len(queries):.2f}")
    print(f"index build (first lookup in a process): {build_s:.2f} s for {indexed:,} hashes "
          f"(reading id and hash {build_s - sort_s:.2f} s, sorting the chunk copies {sort_s:.2f} s); "
          f"{BYTES_PER_HASH} bytes per hash in memory")
    print(f"{'':38}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'max ms':>9}")
    print(row("one hash (near_candidates)", lat, f"({len(lat)} queries)"))
    print(row("per photo (find_candidates, 5 hashes)", photo_lat,
              f"({len(photo_lat)} photos: search + one statement: re-read and catch-up)"))
    print(row("  of which the in-memory search", search_lat))
    print(row("brute force, numpy popcount, 1 hash", brute_lat, "(hashes in memory)"))
    print(row("brute force, numpy popcount, photo", brute_photo_lat, "(its 5 hashes, hashes in memory)"))
    print(row("brute force, SQL bit_count scan", scan_lat, f"({len(scan_lat)} queries)", digits=1))
    print(f"per photo vs numpy brute force per photo (p95): {pct(photo_lat, 95) / pct(brute_photo_lat, 95):.2f}x "
          f"the time; one hash vs the SQL scan (p50): {statistics.median(scan_lat) / pct(lat, 50):.0f}x faster")
    recall_ok = bad == 0 and photo_bad == 0 and scan_bad == 0
    print(f"recall vs brute force: {len(queries) - bad}/{len(queries)} one-hash lookups identical to numpy, "
          f"{len(photos) - photo_bad}/{len(photos)} photos ({'100%' if recall_ok else 'NOT 100%'}); "
          f"SQL scan agreed on {len(scan_lat) - scan_bad}/{len(scan_lat)}")
    ok = recall_ok and pct(photo_lat, 95) <= GOAL_P95_MS
    print(f"goal per-photo p95 <= {GOAL_P95_MS} ms and 100% recall: {'MET' if ok else 'NOT MET'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
