"""``autodetect train --images DIR``: bad folders give clear messages and train nothing; the registry
promotes a candidate only when it matches or beats the active version on the same test set."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from sqlalchemy import select
from PIL import Image, ImageDraw
from typer.testing import CliRunner

from autodetect.cli import app
from autodetect.db import session_scope, upgrade
from autodetect.settings import configure
from autodetect.storage import ModelVersion, TrainingRun
from autodetect.pipeline.retraining import request_run
from autodetect.pipeline.training import run_training

CLASSES = ("circle", "square", "triangle")


def _shape(name: str, rng: random.Random) -> Image.Image:
    """An easy, reliably learnable picture per class: the test is about promotion, not vision."""
    img = Image.new("RGB", (96, 96), tuple(rng.randrange(60, 200) for _ in range(3)))
    draw = ImageDraw.Draw(img)
    x, y, r = rng.randrange(25, 70), rng.randrange(25, 70), rng.randrange(14, 24)
    if name == CLASSES[0]:
        draw.ellipse((x - r, y - r, x + r, y + r), fill=(230, 30, 30))
    elif name == CLASSES[1]:
        draw.rectangle((x - r, y - r, x + r, y + r), fill=(30, 30, 230))
    else:
        draw.polygon([(x, y - r), (x - r, y + r), (x + r, y + r)], fill=(30, 200, 30))
    return img


def _photos(folder: Path, per_class: int, seed: int, *, shuffled: bool = False) -> None:
    rng = random.Random(seed)
    images = [(name, _shape(name, rng)) for name in CLASSES for _ in range(per_class)]
    labels = [name for name, _ in images]
    if shuffled:  # a model trained on these learns nothing true
        rng.shuffle(labels)
    for i, ((_, img), label) in enumerate(zip(images, labels)):
        (folder / label).mkdir(parents=True, exist_ok=True)
        img.save(folder / label / f"{i}.jpg", quality=90)


@pytest.fixture
def settings(tmp_path):
    s = configure(data_dir=tmp_path / "data", database_url="", backbone="compact_cnn", image_size=48,
                  weights="none", min_photos_per_class=8, train_time_budget_s=30, train_epochs_head=10, train_batch_size=8,
                  train_patience=100,
                  retag_on_promote=False)
    upgrade(s)
    return s


def test_bad_folders_give_clear_messages_and_train_nothing(settings, tmp_path):
    runner = CliRunner()
    missing = runner.invoke(app, ["train", "--images", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "is not a folder" in " ".join(missing.output.split())

    one = tmp_path / "one"
    _photos(one, 3, seed=1)
    for name in CLASSES[1:]:
        for f in (one / name).iterdir():
            f.unlink()
    (one / "Empty").mkdir()
    (one / CLASSES[0] / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (one / CLASSES[0] / "notes.txt").write_text("hello")
    (one / "stray.jpg").write_bytes(b"")
    result = runner.invoke(app, ["train", "--images", str(one)])
    assert result.exit_code == 2, result.output
    out = "".join(result.output.split())  # rich wraps long lines anywhere
    for said in ("broken.jpg", "not a photo", "no usable photo", "belong to no class", "below the minimum",
                 "at least 2 are needed"):
        assert said.replace(" ", "") in out, said
    with session_scope(settings) as s:
        assert s.scalars(select(ModelVersion)).all() == []


@pytest.mark.slow
def test_worse_candidate_is_not_promoted_and_better_one_is(settings, tmp_path):
    good, noise = tmp_path / "good", tmp_path / "noise"
    _photos(good, 20, seed=2)
    _photos(noise, 20, seed=2, shuffled=True)
    (good / CLASSES[0] / "deep" / "er").mkdir(parents=True)
    (good / CLASSES[0] / "0.jpg").rename(good / CLASSES[0] / "deep" / "er" / "nested.jpg")

    def train(folder: Path, **params) -> dict:
        with session_scope(settings) as s:
            run_id = request_run(s, "manual", "test", {"images": str(folder), **params}).id
        return run_training(settings, run_id, lambda *_: None)

    first = train(noise)
    assert first["promoted"], "the first version is promoted: there is nothing to beat"
    better = train(good)
    assert better["promoted"], better
    assert better["candidate"]["top1"] > better["incumbent"]["top1"]
    # Same photos, same test split, but barely trained (one epoch): worse than the active version.
    worse = train(good, time_budget_s=0.01)
    assert not worse["promoted"], worse
    assert worse["candidate"]["top1"] < worse["incumbent"]["top1"]
    with session_scope(settings) as s:
        statuses = [v.status for v in s.scalars(select(ModelVersion).order_by(ModelVersion.id))]
        runs = s.scalars(select(TrainingRun).order_by(TrainingRun.id)).all()
    assert statuses == ["retired", "active", "rejected"]
    assert [r.state for r in runs] == ["done"] * 3 and runs[2].outcome["promoted"] is False
