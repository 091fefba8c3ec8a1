"""Train/validation/test split by group, stratified by class, stable under additions (no TensorFlow).

A *group* is a listing, or a set of listings connected by duplicate photos (the caller computes it).
All photos of a group land on one side, so no car is seen in training and again in evaluation.

Each group's side comes from a hash of ``(seed, group)``: a number ``u`` in [0, 1) that does not depend
on any other group. ``u < test_share`` -> test, ``u < test_share + val_share`` -> val, else train. Adding
new groups therefore never moves an existing group, and the test set of two model versions trained on
growing data stays the same (plus the new groups that hash into it). Because each class's groups are
hashed independently, every class is split in the same proportions in expectation (stratified).

Small classes: a class with at least 3 groups gets at least one group in val, in test and in train. If
the hashes leave a side empty, the group whose ``u`` lies nearest that side's interval is moved there.
That correction is the one place where a later addition can move a group (back to where its hash puts
it), and only in classes that had no natural group on some side. Callers that need strict stability
persist ``Split.assignments`` and pass them back as ``pinned``: pinned groups keep their side.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

TRAIN, VAL, TEST = "train", "val", "test"
SIDES = (TRAIN, VAL, TEST)


@dataclass(frozen=True)
class Sample:
    """One photo: its file, its label (canonical class), its group and its listing."""

    path: str
    label: str
    group: str
    listing: str


@dataclass
class Split:
    train: list[Sample]
    val: list[Sample]
    test: list[Sample]
    classes: list[str]  # sorted; the model's output order
    assignments: dict[str, str] = field(default_factory=dict)  # group -> "train" | "val" | "test"

    def counts(self) -> dict[str, dict[str, int]]:
        """Photos, groups and listings per side (for reports)."""
        out = {}
        for side in SIDES:
            samples = getattr(self, side)
            out[side] = {
                "photos": len(samples),
                "groups": len({s.group for s in samples}),
                "listings": len({s.listing for s in samples}),
            }
        return out


def group_hash(seed: int | str, group: str) -> float:
    """A stable number in [0, 1) for ``group`` under ``seed`` (sha256, independent of Python's hash seed)."""
    digest = hashlib.sha256(f"{seed}\x1f{group}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _group_labels(samples: Iterable[Sample]) -> dict[str, str]:
    """The class of each group: its most frequent label (ties: the alphabetically first)."""
    votes: dict[str, Counter] = defaultdict(Counter)
    for s in samples:
        votes[s.group][s.label] += 1
    return {g: min(c.items(), key=lambda kv: (-kv[1], kv[0]))[0] for g, c in votes.items()}


def split_samples(
    samples: Sequence[Sample],
    *,
    seed: int | str,
    val_share: float = 0.15,
    test_share: float = 0.15,
    pinned: Mapping[str, str] | None = None,
) -> Split:
    """Split ``samples`` by group into train/val/test, stratified by class and stable (see module doc)."""
    if not (0 <= val_share < 1 and 0 <= test_share < 1 and val_share + test_share < 1):
        raise ValueError(f"bad shares: val_share={val_share}, test_share={test_share}")
    pinned = dict(pinned or {})
    bad = {side for side in pinned.values() if side not in SIDES}
    if bad:
        raise ValueError(f"pinned sides must be one of {SIDES}, got {sorted(bad)}")

    group_label = _group_labels(samples)
    by_class: dict[str, list[str]] = defaultdict(list)
    for g, label in group_label.items():
        by_class[label].append(g)

    def natural(u: float) -> str:
        if u < test_share:
            return TEST
        if u < test_share + val_share:
            return VAL
        return TRAIN

    # Distance of u from each side's interval on [0, 1): used to pick the group to move.
    intervals = {TEST: (0.0, test_share), VAL: (test_share, test_share + val_share), TRAIN: (test_share + val_share, 1.0)}

    def distance(u: float, side: str) -> float:
        lo, hi = intervals[side]
        return 0.0 if lo <= u < hi else min(abs(u - lo), abs(u - hi))

    assignment: dict[str, str] = {}
    for label in sorted(by_class):
        groups = sorted(by_class[label])
        u = {g: group_hash(seed, g) for g in groups}
        side_of = {g: pinned.get(g) or natural(u[g]) for g in groups}
        if len(groups) >= 3:
            for need in (TEST, VAL, TRAIN):
                members = {s: [g for g in groups if side_of[g] == s] for s in SIDES}
                if members[need]:
                    continue
                # Movable: unpinned groups on a side that keeps at least one group afterwards.
                candidates = [
                    g for s in SIDES if s != need and len(members[s]) > 1 for g in members[s] if g not in pinned
                ]
                if candidates:
                    best = min(candidates, key=lambda g: (distance(u[g], need), g))
                    side_of[best] = need
        assignment.update(side_of)

    parts: dict[str, list[Sample]] = {side: [] for side in SIDES}
    for s in samples:
        parts[assignment[s.group]].append(s)
    classes = sorted({s.label for s in samples})
    return Split(parts[TRAIN], parts[VAL], parts[TEST], classes, assignment)


def select_classes(samples: Sequence[Sample], min_photos: int) -> tuple[list[Sample], dict[str, int]]:
    """Keep the classes with at least ``min_photos`` photos.

    Returns ``(kept_samples, dropped)`` where ``dropped`` maps each dropped class to its photo count.
    Count unique photos: drop duplicates before calling.
    """
    counts = Counter(s.label for s in samples)
    dropped = {label: n for label, n in sorted(counts.items()) if n < min_photos}
    kept = [s for s in samples if s.label not in dropped]
    return kept, dropped
