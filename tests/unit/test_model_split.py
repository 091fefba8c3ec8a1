"""The train/val/test split: by group, stratified by class, stable under additions (no TensorFlow)."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from autodetect.model.split import Sample, group_hash, select_classes, split_samples


def catalogue(n_classes=6, groups_per_class=40, photos=3, prefix="", seed=0):
    rng = random.Random(seed)
    out = []
    for c in range(n_classes):
        for g in range(groups_per_class):
            gid = f"{prefix}c{c}-g{g}"
            for p in range(rng.randint(1, photos)):
                out.append(Sample(f"/img/{gid}-{p}.jpg", f"class{c}", gid, gid))
    return out


def sides_of(split):
    return {s.group: side for side in ("train", "val", "test") for s in getattr(split, side)}


def test_no_group_on_two_sides_and_nothing_lost():
    samples = catalogue()
    # Two listings joined by a duplicate photo form one group.
    samples.append(Sample("/img/dup-a.jpg", "class0", "c0-g0", "other-listing"))
    split = split_samples(samples, seed=7)
    assert sorted(split.train + split.val + split.test, key=lambda s: s.path) == sorted(samples, key=lambda s: s.path)
    groups = [{s.group for s in getattr(split, side)} for side in ("train", "val", "test")]
    assert not (groups[0] & groups[1]) and not (groups[0] & groups[2]) and not (groups[1] & groups[2])
    assert split.classes == sorted({s.label for s in samples})
    assert split.assignments == sides_of(split)


def test_stratified_by_class():
    split = split_samples(catalogue(n_classes=5, groups_per_class=200), seed=1)
    for side, share in (("val", 0.15), ("test", 0.15), ("train", 0.70)):
        groups_per_class = Counter(label for label, _ in {(s.label, s.group) for s in getattr(split, side)})
        for label in split.classes:
            assert abs(groups_per_class[label] / 200 - share) < 0.08, (side, label, groups_per_class[label])


def test_stable_when_groups_are_added():
    before = split_samples(catalogue(groups_per_class=40), seed=3)
    more = catalogue(groups_per_class=40) + catalogue(groups_per_class=25, prefix="new-", seed=9)
    more += catalogue(n_classes=8, groups_per_class=30, prefix="newclass-", seed=5)[-200:]
    after = split_samples(more, seed=3)
    old, new = sides_of(before), sides_of(after)
    assert all(new[g] == side for g, side in old.items())
    assert {s.path for s in before.test} <= {s.path for s in after.test}


def test_seed_changes_the_split_and_is_deterministic():
    samples = catalogue()
    assert sides_of(split_samples(samples, seed=1)) == sides_of(split_samples(list(reversed(samples)), seed=1))
    assert sides_of(split_samples(samples, seed=1)) != sides_of(split_samples(samples, seed=2))
    assert 0 <= group_hash(1, "x") < 1


@pytest.mark.parametrize("n_groups", [3, 4, 5, 8])
def test_small_classes_get_val_and_test(n_groups):
    for seed in range(20):
        samples = catalogue(n_classes=3, groups_per_class=n_groups, seed=seed)
        samples += [Sample("/img/tiny-a.jpg", "tiny", "t1", "t1"), Sample("/img/tiny-b.jpg", "tiny", "t2", "t2")]
        split = split_samples(samples, seed=seed)
        for label in ("class0", "class1", "class2"):
            for side in ("train", "val", "test"):
                assert any(s.label == label for s in getattr(split, side)), (seed, label, side)
        assert sum(s.label == "tiny" for s in split.train + split.val + split.test) == 2


def test_pinned_groups_keep_their_side():
    samples = catalogue(n_classes=2, groups_per_class=10)
    first = split_samples(samples, seed=4)
    flipped = {g: ("test" if side == "train" else "train") for g, side in first.assignments.items()}
    second = split_samples(samples, seed=4, pinned=flipped)
    assert second.assignments == flipped
    with pytest.raises(ValueError):
        split_samples(samples, seed=4, pinned={"c0-g0": "holdout"})


def test_bad_shares_rejected():
    with pytest.raises(ValueError):
        split_samples(catalogue(), seed=1, val_share=0.6, test_share=0.5)


def test_select_classes_counts_dropped():
    samples = [Sample(f"/a{i}", "big", f"g{i}", f"g{i}") for i in range(5)]
    samples += [Sample(f"/b{i}", "small", f"h{i}", f"h{i}") for i in range(2)]
    kept, dropped = select_classes(samples, min_photos=3)
    assert {s.label for s in kept} == {"big"} and len(kept) == 5
    assert dropped == {"small": 2}
