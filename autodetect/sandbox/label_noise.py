"""Label noise for the sandbox: which listings' sellers name another model than the car in the photos.

An exact share of the listings, chosen by seed (those whose seeded hash is smallest), each naming one
other model of the catalogue drawn from its own seeded generator: the same seed and share always flip the
same listings the same way, and a clean-label method can be scored against them."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Sequence

from autodetect.sandbox.cars import CarSpec


def _hash(*parts: object) -> int:
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=8).digest(), "big")


def flip_labels(size: int, specs: Sequence[CarSpec], model_of: Callable[[int], int], *, seed: int,
                share: float) -> dict[int, CarSpec]:
    """``round(share * size)`` listing indices -> the model each one's seller names instead of its own
    (``model_of(i)`` indexes ``specs``). Empty with one model or a share of 0."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"label_noise must be between 0 and 1, got {share}")
    if share == 0 or len(specs) < 2:
        return {}
    ranked = sorted(range(size), key=lambda i: _hash(seed, "label noise", i))
    flipped = {}
    for i in sorted(ranked[:round(share * size)]):
        own = specs[model_of(i)]
        flipped[i] = random.Random(_hash(seed, "named model", i)).choice([s for s in specs if s is not own])
    return flipped
