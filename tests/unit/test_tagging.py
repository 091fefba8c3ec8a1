"""Tagging the catalogue: 5,000 listings with a live progress bar, interrupted and resumed without
predicting any photo twice; the modes; a non-active version; the ``tag`` command (embedded)."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console
from sqlalchemy import func, select, update

from autodetect.cli.views import follow_tagging
from autodetect.db import session_scope, upgrade
from autodetect.model.provider import ModelProvider
from autodetect.settings import configure
from autodetect.storage import Image, ListingPrediction, Prediction
from autodetect.pipeline.tagging import (
    queue_for_tagging,
    start_tagging,
    tag_here,
    tagging_progress,
)
from tests.unit.test_inference_support import (
    add_listings,
    compact_cnn_bundle,
    jpeg,
    register_version,
    store_photos,
)

CLASSES = ["red", "green", "blue", "white", "black"]
N = 5000


@pytest.fixture(scope="module")
def compact_bundle(tmp_path_factory):
    return compact_cnn_bundle(tmp_path_factory.mktemp("compact") / "bundle", CLASSES, size=32)


@pytest.fixture
def settings(tmp_path):
    s = configure(data_dir=tmp_path / "data", database_url="", broker_url="memory://", inference_batch_size=64,
                  inference_batch_wait_s=0.0, tag_chunk_size=1500)
    upgrade(s)
    return s


class CountingModel:
    """Wraps the served model: counts the photos it computes; can stop the run like Ctrl-C."""

    def __init__(self, provider, settings, interrupt_after: int | None = None):
        with session_scope(settings) as s:
            self.model = provider.get(s)
        self.real = self.model.predict
        self.model.predict = self
        self.photos = 0
        self.calls = 0
        self.interrupt_after = interrupt_after

    def __call__(self, x):
        self.calls += 1
        if self.interrupt_after is not None and self.calls > self.interrupt_after:
            raise KeyboardInterrupt  # in the middle of a batch: claimed, nothing written yet
        out = self.real(x)
        self.photos += len(x)
        return out


def _catalogue(settings, n: int = N) -> list[int]:
    keys = store_photos(settings, {f"p{i}": jpeg(c, side=48, seed=i) for i, c in enumerate(CLASSES[:3] * 2)})
    keys = list(keys.values())
    return add_listings(settings, [{"photos": [keys[i % len(keys)]], "label": CLASSES[i % 3]} for i in range(n)],
                        stage="done", state="done")


def _console() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=True, width=100, color_system=None), out


@pytest.mark.slow
def test_tagging_5000_listings_live_progress_interrupted_and_resumed(settings, compact_bundle):
    version_id = register_version(settings, "v1", CLASSES, bundle_from=compact_bundle)
    _catalogue(settings)
    provider = ModelProvider(settings)
    counting = CountingModel(provider, settings, interrupt_after=30)
    assert counting.model.format == "tflite" and counting.model.backbone == "compact_cnn"

    plan = start_tagging(settings, "missing")
    assert (plan.queued, plan.version_id, plan.active) == (N, version_id, True)
    console, out = _console()
    steps = tag_here(settings, plan, provider)
    with pytest.raises(KeyboardInterrupt):
        follow_tagging(console, version_id, poll_s=0.05, work=lambda: next(steps, None) is not None)
    with session_scope(settings) as s:
        done, total = tagging_progress(s, version_id)
        running = s.scalar(select(func.count()).select_from(Image).where(Image.state == "running"))
    assert (done, total) == (30 * 64, N) and running == 0, "the interrupted batch gave its rows back"
    first = out.getvalue()
    shown = {int(m) for m in re.findall(r"(\d+)/5000", first)}
    assert "tagging" in first and len(shown) >= 3 and max(shown) <= done, "a live bar, updated from the database"

    # Restart: only the rest is queued and computed; nothing is predicted twice.
    counting.interrupt_after = None
    plan = start_tagging(settings, "missing")
    assert plan.queued == N - done
    console, out = _console()
    steps = tag_here(settings, plan, provider)
    assert follow_tagging(console, version_id, poll_s=0.05, work=lambda: next(steps, None) is not None) == (N, N)
    assert counting.photos == N, "every photo went through the model exactly once over both runs"
    assert f"{N}/{N}" in out.getvalue()
    with session_scope(settings) as s:
        assert s.scalar(select(func.count()).select_from(Prediction)) == N
        assert s.scalar(select(func.count(func.distinct(Prediction.image_id)))) == N
        assert s.scalar(select(func.count()).select_from(ListingPrediction)) == N
        assert s.scalar(select(func.count()).select_from(Image).where(Image.state != "done")) == 0
    # A third run finds nothing to do.
    assert start_tagging(settings, "missing").queued == 0


def test_tag_all_retries_failures_and_skips_what_is_predicted(settings):
    register_version(settings, "v1", ["red", "green", "blue"])
    ids = _catalogue(settings, 12)
    provider = ModelProvider(settings)
    plan = start_tagging(settings, "missing")
    assert sum(r.predicted for r in tag_here(settings, plan, provider)) == 12
    with session_scope(settings) as s:
        s.execute(update(Image).where(Image.id == ids[0]).values(stage="inference", state="failed", error="x"))
        assert queue_for_tagging(s, "missing", 1) == [], "missing: nothing, the failure is not retried"
    plan = start_tagging(settings, "all")
    assert plan.queued == 12
    results = list(tag_here(settings, plan, provider))
    assert sum(r.predicted for r in results) == 0 and sum(r.skipped for r in results) == 12
    with session_scope(settings) as s:
        assert s.get(Image, ids[0]).state == "done"
        assert s.scalar(select(func.count()).select_from(Prediction)) == 12


def test_tagging_with_a_version_that_is_not_active(settings):
    v1 = register_version(settings, "v1", ["red", "green", "blue"])
    v2 = register_version(settings, "v2", ["blue", "green", "red", "white"], active=False)
    _catalogue(settings, 20)
    provider = ModelProvider(settings)
    list(tag_here(settings, start_tagging(settings, "missing"), provider))
    sent = []
    plan = start_tagging(settings, "missing", "v2", send=lambda version, ids: sent.append((version, list(ids))))
    assert (plan.version, plan.active, plan.queued) == ("v2", False, 20)
    assert [v for v, _ in sent] == [v2] and len(sent[0][1]) == 20
    with session_scope(settings) as s:
        states = set(s.scalars(select(Image.state)))
    assert states == {"done"}, "a non-active version leaves the pipeline state alone"
    assert sum(r.predicted for r in tag_here(settings, plan, provider)) == 20
    with session_scope(settings) as s:
        assert tagging_progress(s, v2) == (20, 20) and tagging_progress(s, v1) == (20, 20)
        assert s.scalar(select(func.count()).select_from(ListingPrediction)
                       .where(ListingPrediction.model_version_id == v2)) == 20
    assert start_tagging(settings, "missing", "v2").queued == 0
    with pytest.raises(Exception, match="no model version 'v9'"):
        start_tagging(settings, "missing", "v9")


def test_the_tag_command_embedded(settings):
    from typer.testing import CliRunner

    from autodetect.cli import app

    register_version(settings, "v1", ["red", "green", "blue"])
    _catalogue(settings, 150)
    runner = CliRunner()
    args = ["--data-dir", str(settings.data_dir), "tag"]
    result = runner.invoke(app, args + ["--missing"])
    assert result.exit_code == 0, result.output
    assert "150 photos queued for v1 (missing), here" in result.output
    with session_scope(settings) as s:
        assert s.scalar(select(func.count()).select_from(Prediction)) == 150
    assert runner.invoke(app, args).exit_code == 2
    assert "0 photos queued" in runner.invoke(app, args + ["--model", "v1"]).output
    # --all: every photo queued again, none recomputed, and none left behind in the queue.
    result = runner.invoke(app, args + ["--all"])
    assert result.exit_code == 0 and "150 photos queued for v1 (all), here" in result.output
    with session_scope(settings) as s:
        assert set(s.scalars(select(Image.state))) == {"done"}
        assert s.scalar(select(func.count()).select_from(Prediction)) == 150
    result = runner.invoke(app, args + ["--missing", "--model", "v7"])
    assert result.exit_code == 2 and "no model version 'v7'" in result.output
