"""Multi-index hashing finds exactly what a brute-force scan finds within the threshold."""

from __future__ import annotations

import random

import pytest
from sqlalchemy import insert

from autodetect.db import session_scope, upgrade
from autodetect.pipeline.near_duplicates import CHUNKS, chunk_neighbours, near_candidates, phash_chunks
from autodetect.images.decode import hamming, to_signed64
from autodetect.settings import configure
from autodetect.storage import Image, Listing


def test_chunk_neighbours_enumerates_the_hamming_ball():
    ball = chunk_neighbours(0b1010, 2)
    assert len(ball) == len(set(ball)) == 1 + 16 + 120
    assert all(bin(v ^ 0b1010).count("1") <= 2 for v in ball)


def test_chunks_round_trip_signed_hashes():
    value = to_signed64(0xFEDC_BA98_7654_3210)
    chunks = phash_chunks(value)
    assert [chunks[f"phash_c{i}"] for i in range(CHUNKS)] == [0x3210, 0x7654, 0xBA98, 0xFEDC]


@pytest.mark.parametrize("threshold", [4, 10, 12])
def test_index_lookup_equals_brute_force(tmp_path, threshold):
    settings = configure(data_dir=tmp_path, database_url="")
    upgrade(settings)
    rng = random.Random(threshold)
    base = [rng.getrandbits(64) for _ in range(300)]
    hashes = list(base)
    for h in base[:100]:  # near copies at every distance up to threshold + 2
        flips = rng.sample(range(64), rng.randint(0, threshold + 2))
        for b in flips:
            h ^= 1 << b
        hashes.append(h)
    with session_scope(settings) as s:
        s.execute(insert(Listing), [{"source": "t", "external_id": "1", "title": "x"}])
        s.execute(insert(Image), [
            {"listing_id": 1, "position": i, "url": f"u{i}", "stage": "done", "state": "done",
             "phash": to_signed64(h), **phash_chunks(to_signed64(h))}
            for i, h in enumerate(hashes)
        ])
    with session_scope(settings) as s:
        for q in hashes[:60] + base[100:120]:
            found = sorted(i for _, i in near_candidates(s, to_signed64(q), threshold))
            brute = sorted(i + 1 for i, h in enumerate(hashes) if hamming(h, q) <= threshold)
            assert found == brute
