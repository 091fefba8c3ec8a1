"""The backbone on the real stack: five worker processes, beat, PostgreSQL, Redis or RabbitMQ."""

from __future__ import annotations

import time

import pytest
import redis
import requests
from sqlalchemy import func, select

from autodetect.db import session_scope
from workers.queues import queue_lengths
from autodetect.storage import Image, Listing, ListingPrediction, ModelVersion, Prediction, TrainingRun
from tests.integration.conftest import AMQP_URL, REDIS_URL, client_app, free_port, make_stack, wait_for

pytestmark = pytest.mark.integration


def _settled(settings) -> bool:
    """Crawled, every photo through its stages, a model active, every listing with photos tagged."""
    with session_scope(settings) as s:
        images = s.scalar(select(func.count()).select_from(Image))
        in_flight = s.scalar(select(func.count()).select_from(Image).where(
            Image.state.in_(("pending", "running"))))
        active = s.scalar(select(func.count()).select_from(ModelVersion).where(ModelVersion.status == "active"))
        with_photos = s.scalar(select(func.count(func.distinct(Image.listing_id))).where(Image.state == "done"))
        tagged = s.scalar(select(func.count()).select_from(ListingPrediction).where(
            ListingPrediction.model_version_id == select(ModelVersion.id).where(
                ModelVersion.status == "active").scalar_subquery()))
        training = s.scalar(select(func.count()).select_from(TrainingRun).where(
            TrainingRun.state.in_(("pending", "running"))))
    return images > 0 and in_flight == 0 and active == 1 and training == 0 and tagged == with_photos


def _assert_consistent(settings, market) -> None:
    with session_scope(settings) as s:
        assert s.scalar(select(func.count()).select_from(Listing)) == len({item.item_id for item in market.listings()})
        active = s.scalar(select(ModelVersion.id).where(ModelVersion.status == "active"))
        unique = s.scalars(select(Image.id).where(Image.duplicate_of_id.is_(None), Image.state == "done")).all()
        rows = s.execute(select(Prediction.image_id, func.count()).where(Prediction.model_version_id == active)
                         .group_by(Prediction.image_id)).all()
        assert sorted(i for i, _ in rows) == sorted(unique), "every unique photo predicted"
        assert all(n == 1 for _, n in rows), "no duplicate prediction rows"
        dups = s.execute(select(Image).where(Image.duplicate_of_id.is_not(None))).scalars().all()
        assert dups, "the sandbox relists photos: some duplicates are expected"
        for d in dups:
            original = s.get(Image, d.duplicate_of_id)
            assert original.duplicate_of_id is None and original.state == "done"
            assert not s.scalars(select(Prediction.id).where(Prediction.image_id == d.id)).all()
        failed = s.scalars(select(Image).where(Image.state == "failed")).all()
        assert all(f.error for f in failed)
        with_photos = set(s.scalars(select(Image.listing_id).where(Image.state == "done")).all())
        tagged = set(s.scalars(select(ListingPrediction.listing_id).where(
            ListingPrediction.model_version_id == active)).all())
        assert tagged == with_photos


def _run(tmp_path, pg_url, broker, sandbox60, *, flush_midway=False, flower=False, deliver_twice=False):
    server, market = sandbox60
    stack = make_stack(tmp_path, pg_url, broker, server.url)
    try:
        stack.start_workers()
        stack.start_beat()
        app = client_app(stack.settings)
        wait_for(lambda: len(app.control.ping(timeout=1.0)) >= 5, 90, stack, "five workers to answer")
        app.send_task("discovery.crawl")
        if flush_midway:
            def some_downloaded():
                with session_scope(stack.settings) as s:
                    return s.scalar(select(func.count()).select_from(Image).where(Image.stage != "download")) >= 5
            wait_for(some_downloaded, 120, stack, "the first downloads", poll=0.05)
            redis.Redis.from_url(REDIS_URL).flushall()  # every queued message is gone (the test machine's Redis)
        wait_for(lambda: _settled(stack.settings), 420, stack, "the pipeline to settle")
        _assert_consistent(stack.settings, market)
        if deliver_twice:
            _deliver_every_task_twice(app, stack)
        if flower:
            _check_flower(stack)
    finally:
        stack.stop()
    return stack


def _snapshot(settings) -> dict:
    with session_scope(settings) as s:
        return {
            "listings": s.scalar(select(func.count()).select_from(Listing)),
            "images": sorted(tuple(r) for r in s.execute(
                select(Image.id, Image.stage, Image.state, Image.sha256, Image.duplicate_of_id))),
            "predictions": sorted(tuple(r) for r in s.execute(select(Prediction.image_id, Prediction.model_version_id))),
            "listing_predictions": s.scalar(select(func.count()).select_from(ListingPrediction)),
            "versions": s.scalar(select(func.count()).select_from(ModelVersion)),
        }


def _deliver_every_task_twice(app, stack) -> None:
    """Send every task type twice, with ids of rows that are already done: nothing may change."""
    from autodetect.storage import TrainingRun

    before = _snapshot(stack.settings)
    with session_scope(stack.settings) as s:
        image_ids = s.scalars(select(Image.id).order_by(Image.id).limit(20)).all()
        run_id = s.scalars(select(TrainingRun.id)).first()
    for _ in range(2):
        app.send_task("discovery.crawl")
        app.send_task("maintenance.sweep")
        app.send_task("training.check")
        app.send_task("training.train", args=(run_id,))
        app.send_task("download.fetch", args=(image_ids,))
        app.send_task("dedup.check", args=(image_ids,))
        for i in image_ids:
            app.send_task("inference.predict", args=(i,))

    def drained():
        inspect = app.control.inspect(timeout=1.0)
        active, reserved = inspect.active() or {}, inspect.reserved() or {}
        busy = any(active.values()) or any(reserved.values())
        return not busy and sum(queue_lengths(app).values()) == 0

    time.sleep(2)
    wait_for(drained, 120, stack, "the repeated tasks to be consumed")
    after = _snapshot(stack.settings)
    assert after == before


def _check_flower(stack) -> None:
    port = free_port()
    stack.spawn("flower", ["celery", "-A", "workers", "flower", f"--port={port}", "--address=127.0.0.1",
                           "--basic-auth=ops:s3cret"])
    url = f"http://127.0.0.1:{port}/api/workers?refresh=1"

    def answered():
        try:
            r = requests.get(url, auth=("ops", "s3cret"), timeout=10)
        except requests.ConnectionError:
            return None
        return r if r.status_code == 200 and len(r.json()) >= 5 else None

    resp = wait_for(answered, 60, stack, "Flower's /api/workers")
    assert {name.split("@")[0] for name in resp.json()} >= {"discovery", "download", "dedup", "inference", "training"}
    assert requests.get(url, timeout=10).status_code == 401
    assert requests.get(url, auth=("ops", "wrong"), timeout=10).status_code == 401


@pytest.mark.slow
def test_redis_stack_end_to_end_with_flower(tmp_path, pg_url, sandbox60):
    redis.Redis.from_url(REDIS_URL).flushdb()
    _run(tmp_path, pg_url, REDIS_URL, sandbox60, flower=True, deliver_twice=True)


@pytest.mark.slow
def test_rabbitmq_stack_end_to_end(tmp_path, pg_url, sandbox60):
    _run(tmp_path, pg_url, AMQP_URL, sandbox60)


@pytest.mark.slow
def test_flushing_the_broker_midway_loses_nothing(tmp_path, pg_url, sandbox60):
    redis.Redis.from_url(REDIS_URL).flushdb()
    started = time.monotonic()
    _run(tmp_path, pg_url, REDIS_URL, sandbox60, flush_midway=True)
    assert time.monotonic() - started < 600
