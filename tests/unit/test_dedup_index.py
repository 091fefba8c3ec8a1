"""The near-duplicate index: the in-memory multi-index (``hash_index``) finds exactly what a brute-force
scan finds within the threshold, also while it grows; the lookup built on it (``find_candidates``)
catches up with the originals dedup numbers, never answers an original that stopped being one, and
rebuilds when the table it mirrored was reset; migration 0004 numbers the originals already there."""

from __future__ import annotations

import os
import random
import threading
import uuid

import numpy as np
import pytest
from sqlalchemy import create_engine, insert, select, text, update

from autodetect.db import engine_for, session_scope, upgrade
from autodetect.images.decode import hamming, to_signed64
from autodetect.images.store import ImageStore
from autodetect.pipeline.dedup import dedup_image
from autodetect.pipeline.hash_index import CHUNKS, TAIL_LIMIT, HashIndex
from autodetect.pipeline.near_duplicates import (
    current_index,
    find_candidates,
    flip_masks,
    near_candidates,
    phash_chunks,
    probe_plan,
)
from autodetect.settings import configure
from autodetect.storage import Image, Listing

MASK = (1 << 64) - 1


def test_flip_masks_enumerate_the_hamming_ball():
    masks = flip_masks(2).tolist()
    assert len(masks) == len(set(masks)) == 1 + 16 + 120
    assert all(0 <= m < 1 << 16 and bin(m).count("1") <= 2 for m in masks)
    assert flip_masks(0).tolist() == [0]


def test_chunks_round_trip_signed_hashes():
    value = to_signed64(0xFEDC_BA98_7654_3210)
    chunks = phash_chunks(value)
    assert [chunks[f"phash_c{i}"] for i in range(CHUNKS)] == [0x3210, 0x7654, 0xBA98, 0xFEDC]


def _crowded_hashes(rng: np.random.Generator, n: int, threshold: int) -> np.ndarray:
    """Random hashes whose top chunk takes one of 12 values (long runs, like pHash's top chunk), half of
    them near copies of the others (0..threshold + 2 bits flipped)."""
    base = rng.integers(0, 1 << 48, n // 2, dtype=np.uint64) | (rng.integers(0, 12, n // 2, dtype=np.uint64) << np.uint64(48))
    copies = base.copy()
    for k in range(len(copies)):
        for bit in rng.choice(64, int(rng.integers(0, threshold + 3)), replace=False):
            copies[k] ^= np.uint64(1) << np.uint64(bit)
    out = np.concatenate([base, copies])
    rng.shuffle(out)
    return out


def _brute_ids(hashes: np.ndarray, ids: np.ndarray, queries: np.ndarray, threshold: int) -> list[int]:
    near = np.bitwise_count(hashes[:, None] ^ queries[None, :]).min(axis=1) <= threshold
    return sorted(ids[near].tolist())


@pytest.mark.parametrize("threshold", [0, 3, 8, 12])
def test_hash_index_equals_brute_force_while_it_grows(threshold):
    """Built, then grown in small batches (to the tail, merged into the sorted copies past
    ``TAIL_LIMIT``): every query set (a hash and its probes) finds what a full scan finds."""
    rng = np.random.default_rng(threshold)
    hashes = _crowded_hashes(rng, 6000, threshold)
    ids = rng.permutation(10 * len(hashes))[:len(hashes)].astype(np.int64) + 1
    plan = probe_plan(threshold)
    index, n = HashIndex.build(hashes[:3000], ids[:3000]), 3000
    merges = 0
    while n < len(hashes):
        k = int(rng.integers(1, 200))
        tail_before = len(index.tail)
        index, n = index.extended(hashes[n:n + k], ids[n:n + k]), min(len(hashes), n + k)
        merges += len(index.tail) < tail_before + k
        assert len(index) == n
        for _ in range(5):
            near = hashes[rng.integers(0, n, 3)] ^ (np.uint64(1) << rng.integers(0, 64, 3).astype(np.uint64))
            queries = np.concatenate([near, rng.integers(0, 1 << 63, 2, dtype=np.uint64)])
            found = index.search(queries, threshold, plan)
            assert found.tolist() == _brute_ids(hashes[:n], ids[:n], queries, threshold)
    assert merges >= 2 and len(hashes) - 3000 > 2 * TAIL_LIMIT


def _settings(tmp_path):
    settings = configure(data_dir=tmp_path, database_url="")
    upgrade(settings)
    return settings


def _add_originals(session, hashes: list[int], first_seq: int = 1) -> list[int]:
    """Done originals of listing 1 (created if missing), numbered from ``first_seq``; their ids."""
    if session.get(Listing, 1) is None:
        session.execute(insert(Listing), [{"id": 1, "source": "t", "external_id": "1", "title": "x"}])
    return session.execute(insert(Image).returning(Image.id), [
        {"listing_id": 1, "position": first_seq + k, "url": f"u{first_seq + k}", "stage": "done", "state": "done",
         "phash": to_signed64(h), "original_seq": first_seq + k, "normalized_key": f"n{first_seq + k}"}
        for k, h in enumerate(hashes)]).scalars().all()


def _brute(session, queries: list[int], threshold: int) -> list[tuple[int, int]]:
    """``[(distance, id)]`` over every original in the table, nearest first, ties by id."""
    rows = session.execute(select(Image.id, Image.phash).where(Image.original_seq.is_not(None),
                                                               Image.state != "failed",
                                                               Image.duplicate_of_id.is_(None))).all()
    found = [(min(hamming(q, h) for q in queries), i) for i, h in rows]
    return sorted((d, i) for d, i in found if d <= threshold)


def _near_set(rng: random.Random, n: int, threshold: int) -> list[int]:
    base = [rng.getrandbits(64) | 1 << 63 for _ in range(n)]
    copies = []
    for h in base[: n // 3]:  # near copies at every distance up to threshold + 2
        for bit in rng.sample(range(64), rng.randint(0, threshold + 2)):
            h ^= 1 << bit
        copies.append(h)
    return base + copies


@pytest.mark.parametrize("threshold", [4, 10, 12])
def test_lookup_equals_brute_force_on_sqlite(tmp_path, threshold):
    settings = _settings(tmp_path)
    rng = random.Random(threshold)
    hashes = _near_set(rng, 300, threshold)
    with session_scope(settings) as s:
        ids = _add_originals(s, hashes)
    with session_scope(settings) as s:
        for k, q in enumerate(hashes[:60] + [rng.getrandbits(64) for _ in range(20)]):
            probes = [q, q ^ 0b1011 << 20]
            found = find_candidates(s, probes, threshold, exclude_id=ids[0])
            assert [(c.distance, c.id) for c in found] == [x for x in _brute(s, probes, threshold) if x[1] != ids[0]]
            assert all(c.normalized_key == f"n{c.id}" and c.phash == to_signed64(hashes[c.id - 1]) for c in found)
            assert near_candidates(s, q, threshold) == _brute(s, [q], threshold)


def test_lookup_catches_up_with_originals_numbered_since(tmp_path):
    settings = _settings(tmp_path)
    rng = random.Random(3)
    hashes = _near_set(rng, 200, 8)
    with session_scope(settings) as s:
        _add_originals(s, hashes[:100])
    q = hashes[150]  # numbered only after the index was built
    with session_scope(settings) as s:
        before = near_candidates(s, q, 8)  # builds the index
        assert before == _brute(s, [q], 8)
    with session_scope(settings) as s:
        new_ids = _add_originals(s, hashes[100:], first_seq=101)
        # a photo still waiting for its decision (not numbered) is no original yet
        s.execute(insert(Image), [{"listing_id": 1, "position": 0, "url": "w", "stage": "dedup",
                                   "state": "pending", "phash": to_signed64(q)}])
    with session_scope(settings) as s:
        after = near_candidates(s, q, 8)
        assert after == _brute(s, [q], 8)
        assert {i for _, i in after} & set(new_ids)
        assert len(current_index(s)) == len(hashes)


def test_an_original_that_failed_or_was_merged_is_not_answered(tmp_path):
    settings = _settings(tmp_path)
    base = 0x8123_4567_89AB_CDEF
    with session_scope(settings) as s:
        a, b, c = _add_originals(s, [base, base ^ 0b11, base ^ 0b111 << 30])
    with session_scope(settings) as s:
        assert [i for _, i in near_candidates(s, base, 8)] == [a, b, c]
        s.execute(update(Image).where(Image.id == a).values(state="failed"))
        s.execute(update(Image).where(Image.id == c).values(duplicate_of_id=b))
    with session_scope(settings) as s:
        index = current_index(s)
        assert index.search(np.array([base], dtype=np.uint64), 8, probe_plan(8)).tolist() == [a, b, c]
        assert near_candidates(s, base, 8) == [(2, b)]  # the database's answer, not the index's


def test_the_index_is_rebuilt_when_the_table_is_reset(tmp_path, caplog):
    settings = _settings(tmp_path)
    rng = random.Random(9)
    first, second = _near_set(rng, 90, 8), _near_set(rng, 90, 8)
    with session_scope(settings) as s:
        _add_originals(s, first)
    with session_scope(settings) as s:
        near_candidates(s, first[0], 8)
        s.execute(text("DELETE FROM images"))
    with session_scope(settings) as s:
        assert _add_originals(s, second)[-1] == len(second)  # the same ids and numbers, other hashes
    with session_scope(settings) as s:
        for q in second[:30] + first[:10]:
            assert near_candidates(s, q, 8) == _brute(s, [q], 8)
    assert "rebuilding" in caplog.text


def test_lookups_from_many_threads_while_originals_arrive(tmp_path):
    """Every thread's answer is what a scan of the originals in its own transaction finds."""
    settings = _settings(tmp_path)
    rng = random.Random(4)
    hashes = _near_set(rng, 600, 8)
    with session_scope(settings) as s:
        _add_originals(s, hashes[:200])
    errors: list[object] = []

    def look(seed: int) -> None:
        r = random.Random(seed)
        try:
            for _ in range(25):
                q = r.choice(hashes)
                with session_scope(settings) as s:
                    assert near_candidates(s, q, 8) == _brute(s, [q], 8)
        except Exception as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=look, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for start in range(200, len(hashes), 40):
        with session_scope(settings) as s:
            _add_originals(s, hashes[start:start + 40], first_seq=start + 1)
    for t in threads:
        t.join()
    assert not errors, errors


def _waiting_photos(settings, hashes: list[int]) -> list[int]:
    with session_scope(settings) as s:
        s.execute(insert(Listing), [{"id": 1, "source": "t", "external_id": "1", "title": "x"}])
        return s.execute(insert(Image).returning(Image.id), [
            {"listing_id": 1, "position": k, "url": f"u{k}", "stage": "dedup", "state": "pending",
             "sha256": f"{k:064x}", "phash": to_signed64(h), **phash_chunks(to_signed64(h))}
            for k, h in enumerate(hashes)]).scalars().all()


def _decide_in_order(settings, tmp_path, hashes: list[int]):
    """``dedup_image`` on each photo in turn (no photos in the store: the hash decides, strictly)."""
    ids = _waiting_photos(settings, hashes)
    store = ImageStore(tmp_path / "empty-store", fsync=False)
    outcomes = [dedup_image(settings, i, lambda stage, ids: None, store=store) for i in ids]
    with session_scope(settings) as s:
        seqs = dict(s.execute(select(Image.id, Image.original_seq)).all())
    return ids, outcomes, seqs


_DECISIONS = [0x8000_1111_2222_3333, 0x8000_1111_2222_3333 ^ 0b101, 0xF0F0_0000_FFFF_1234,
              0x8000_1111_2222_3333 ^ 0b11 << 40, 0xF0F0_0000_FFFF_1234 ^ 1]


def _assert_decisions(ids, outcomes, seqs) -> None:
    a, b, c, d, e = ids
    assert [(o.status, o.original_id) for o in outcomes] == [
        ("unique", None), ("duplicate", a), ("unique", None), ("duplicate", a), ("duplicate", c)]
    assert [seqs[i] for i in ids] == [1, None, 2, None, None]


def test_dedup_numbers_its_originals_and_finds_them_at_once(tmp_path):
    settings = _settings(tmp_path)
    _assert_decisions(*_decide_in_order(settings, tmp_path, _DECISIONS))


@pytest.mark.integration
def test_dedup_numbers_its_originals_on_postgres(tmp_path):
    """The numbering statement and the catch-up on PostgreSQL (its own scratch database)."""
    admin_url = os.environ.get("AUTODETECT_TEST_PG", "postgresql+psycopg2://postgres:postgres@127.0.0.1:5432/postgres")
    name = f"autodetect_dedup_{uuid.uuid4().hex[:10]}"
    try:
        admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # noqa: BLE001 - no server: nothing to test here
        pytest.skip(f"no PostgreSQL: {exc}")
    url = admin_url.rsplit("/", 1)[0] + f"/{name}"
    try:
        settings = configure(data_dir=tmp_path, database_url=url)
        upgrade(settings)
        _assert_decisions(*_decide_in_order(settings, tmp_path, _DECISIONS))
    finally:
        engine_for(url).dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_migration_numbers_the_originals_already_there(tmp_path):
    settings = configure(data_dir=tmp_path, database_url="")
    upgrade(settings, "0003")
    rows = [  # (stage, state, duplicate of, phash)
        ("done", "done", None, 5), ("dedup", "pending", None, 6), ("inference", "pending", None, 7),
        ("done", "done", 1, 5), ("inference", "failed", None, 8), ("done", "done", None, None),
        ("download", "pending", None, None), ("done", "done", None, -3)]
    with session_scope(settings) as s:
        s.execute(text("INSERT INTO listings (id, source, external_id, title, status, issues, first_seen, "
                       "last_seen, last_crawl, raw, label_method, label_confidence) VALUES (1, 't', '1', 'x', "
                       "'active', '[]', '2025-01-01', '2025-01-01', 0, '{}', 'unknown', 0)"))
        for k, (stage, state, dup, phash) in enumerate(rows):
            s.execute(text("INSERT INTO images (listing_id, position, url, stage, state, attempts, updated_at, "
                           "duplicate_of_id, phash, label_conflict) VALUES (1, :k, :u, :stage, :state, 0, "
                           "'2025-01-01', :dup, :phash, 0)"),
                      {"k": k, "u": f"u{k}", "stage": stage, "state": state, "dup": dup, "phash": phash})
    upgrade(settings)
    with session_scope(settings) as s:
        seqs = s.execute(select(Image.original_seq).order_by(Image.id)).scalars().all()
    assert seqs == [1, None, 2, None, 3, None, None, 4]
