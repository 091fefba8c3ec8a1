"""An in-memory multi-index over 64-bit hashes: the rows whose hash lies within a Hamming threshold of
any of a few query hashes, found by looking up 16-bit chunk values rather than by reading every hash.

Each of the four 16-bit chunks has its own copy of the hashes, sorted by that chunk's value, with a
table of where each of the 65,536 values starts (a counting sort). A lookup gathers, for every query
and every chunk value it is told to probe (the chunk's neighbours within a radius, see
``near_duplicates.index_plan``), that value's run of hashes, all in one vectorized pass, and keeps
those within the threshold of the query (``np.bitwise_count``). At 1,000,000 pHash-like hashes a photo
with its 5 probes gathers ~20,000 hashes instead of reading 1,000,000.

Rows are added in small numbers (each new original): they go to a short **tail** that every lookup
scans in full; when the tail reaches ``TAIL_LIMIT`` rows they are merged into the chunk copies (each
inserted at the end of its value's run: one pass over the copies, tens of milliseconds at a million).

Memory: per hash, 4 chunk copies of (hash 8 B + row position 4 B) and its id (8 B): **56 bytes**
(56 MB per million hashes), plus 2 MB of chunk-value start tables.

A :class:`HashIndex` is immutable: adding rows returns a new one that shares what did not change, so
one thread can look up in an index while another extends it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

CHUNKS = 4
CHUNK_BITS = 16
_VALUES = 1 << CHUNK_BITS
_STARTS = _VALUES + 1  # start-table entries per chunk: one per value, and the chunk's end
#: Memory per hash: its four chunk copies (hash and row position) and its id.
BYTES_PER_HASH = CHUNKS * (8 + 4) + 8
#: Rows scanned in full before they are merged into the chunk copies: scanning 1,024 hashes for a photo's
#: 5 queries costs ~20 us; a merge at 1,000,000 hashes ~40 ms, once per 1,024 originals.
TAIL_LIMIT = 1024

_SHIFTS = np.arange(CHUNKS, dtype=np.uint64) * np.uint64(CHUNK_BITS)


@dataclass(frozen=True)
class ProbePlan:
    """The chunk values a lookup reads for each query: for every k, the query's value of chunk
    ``chunks[k]`` XOR ``masks[k]``."""

    chunks: np.ndarray  # intp
    masks: np.ndarray  # intp, 16-bit

    @classmethod
    def of(cls, balls: Sequence[tuple[int, np.ndarray]]) -> ProbePlan:
        """The plan that reads, for each ``(chunk, flip masks)``, that chunk's values within the masks."""
        return cls(np.concatenate([np.full(len(m), c, dtype=np.intp) for c, m in balls]),
                   np.concatenate([np.asarray(m, dtype=np.intp) for _, m in balls]))


def chunk_values(hashes: np.ndarray) -> np.ndarray:
    """``[hash, chunk]``: the 16-bit chunks (0: the lowest bits) of unsigned 64-bit ``hashes``."""
    return ((hashes[:, None] >> _SHIFTS) & np.uint64(_VALUES - 1)).astype(np.intp)


@dataclass(frozen=True)
class HashIndex:
    """Rows (ids) with their unsigned 64-bit hashes, searchable by Hamming distance."""

    ids: np.ndarray  # int64, the sorted rows' ids, by row position
    sorted_hashes: np.ndarray  # uint64, CHUNKS * n: chunk c's copy at [c n, (c + 1) n), by chunk value
    sorted_rows: np.ndarray  # int32, the row position of each entry of ``sorted_hashes``
    starts: np.ndarray  # int64, CHUNKS * _STARTS: where each chunk value's run starts in ``sorted_hashes``
    tail: np.ndarray  # uint64, the hashes of the rows added since, scanned in full
    tail_ids: np.ndarray  # int64

    @classmethod
    def build(cls, hashes: np.ndarray, ids: np.ndarray) -> HashIndex:
        """The index of rows ``ids`` with unsigned 64-bit ``hashes`` (all sorted, no tail)."""
        hashes = np.ascontiguousarray(hashes, dtype=np.uint64)
        n = len(hashes)
        sorted_hashes = np.empty(CHUNKS * n, dtype=np.uint64)
        sorted_rows = np.empty(CHUNKS * n, dtype=np.int32)
        starts = np.empty(CHUNKS * _STARTS, dtype=np.int64)
        chunks = chunk_values(hashes)
        for c in range(CHUNKS):
            values = chunks[:, c]
            order = np.argsort(values.astype(np.uint16), kind="stable")  # a radix sort on 16 bits
            sorted_hashes[c * n:(c + 1) * n] = hashes[order]
            sorted_rows[c * n:(c + 1) * n] = order
            starts[c * _STARTS] = c * n
            np.cumsum(np.bincount(values, minlength=_VALUES), out=starts[c * _STARTS + 1:(c + 1) * _STARTS])
            starts[c * _STARTS + 1:(c + 1) * _STARTS] += c * n
        return cls(np.ascontiguousarray(ids, dtype=np.int64), sorted_hashes, sorted_rows, starts,
                   np.empty(0, dtype=np.uint64), np.empty(0, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.ids) + len(self.tail_ids)

    def extended(self, hashes: np.ndarray, ids: np.ndarray) -> HashIndex:
        """This index with rows ``ids`` (hashes ``hashes``) added: to the tail, or, when the tail would
        reach ``TAIL_LIMIT``, the tail and them merged into the chunk copies."""
        if not len(ids):
            return self
        tail = np.concatenate([self.tail, np.asarray(hashes, dtype=np.uint64)])
        tail_ids = np.concatenate([self.tail_ids, np.asarray(ids, dtype=np.int64)])
        if len(tail) >= TAIL_LIMIT:
            return self._merged(tail, tail_ids)
        return HashIndex(self.ids, self.sorted_hashes, self.sorted_rows, self.starts, tail, tail_ids)

    def _merged(self, hashes: np.ndarray, ids: np.ndarray) -> HashIndex:
        """The sorted rows and these, each inserted at the end of its chunk values' runs (one pass over
        the copies instead of sorting them again)."""
        k = len(ids)
        rows = np.arange(len(self.ids), len(self.ids) + k, dtype=np.int32)
        keys = (np.arange(CHUNKS) * _STARTS + chunk_values(hashes)).T.ravel()  # chunk by chunk
        order = np.argsort(keys, kind="stable")
        keys = keys[order]
        at = self.starts[keys + 1]  # the end of the key's run, in the old copies
        # Every start moves by the number of new entries of smaller keys (chunk, then value).
        starts = self.starts + np.searchsorted(keys, np.arange(CHUNKS * _STARTS))
        return HashIndex(np.concatenate([self.ids, ids]),
                         np.insert(self.sorted_hashes, at, np.tile(hashes, CHUNKS)[order]),
                         np.insert(self.sorted_rows, at, np.tile(rows, CHUNKS)[order]), starts,
                         np.empty(0, dtype=np.uint64), np.empty(0, dtype=np.int64))

    def search(self, queries: np.ndarray, threshold: int, plan: ProbePlan) -> np.ndarray:
        """The ids of the rows within ``threshold`` bits of any of ``queries`` (unsigned 64-bit), each
        once, given a ``plan`` under which every such row shares a probed chunk value with the query it
        is near (the pigeonhole of ``near_duplicates.index_plan``)."""
        queries = np.asarray(queries, dtype=np.uint64)
        found = self.ids[self._sorted_hits(queries, threshold, plan)]
        if len(self.tail):
            near = np.bitwise_count(self.tail[:, None] ^ queries[None, :]).min(axis=1) <= threshold
            found = np.concatenate([found, self.tail_ids[near]])
        return np.unique(found)

    def _sorted_hits(self, queries: np.ndarray, threshold: int, plan: ProbePlan) -> np.ndarray:
        """Row positions of sorted rows within ``threshold`` of the query whose chunk value led to them
        (a row near another query is found through that query's own chunk values)."""
        keys = (plan.chunks * _STARTS + (chunk_values(queries)[:, plan.chunks] ^ plan.masks)).ravel()
        first = self.starts.take(keys)
        runs = self.starts.take(keys + 1) - first
        run_ends = np.cumsum(runs)
        total = int(run_ends[-1]) if len(keys) else 0
        # Entry positions of all the runs, back to back: run k covers first[k] .. first[k] + runs[k] - 1.
        entries = np.repeat(first - run_ends + runs, runs)
        entries += np.arange(total)
        differ = self.sorted_hashes.take(entries)
        differ ^= np.repeat(np.repeat(queries, len(plan.masks)), runs)  # each entry's own query
        return self.sorted_rows.take(entries[np.bitwise_count(differ) <= threshold])
