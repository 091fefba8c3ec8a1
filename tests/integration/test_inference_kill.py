"""SIGKILL an inference worker in the middle of a batch: no photo is lost, no prediction duplicated.

Real stack: PostgreSQL (a fresh database), Redis, separate ``celery -A workers worker -Q inference``
processes (prefork). The first worker is slowed by ``inference_test_delay_s`` so that it is killed
holding claimed batches (the one in the model and the next, claimed by its pipeline); its message is
unacknowledged (and stays so until the broker's visibility
timeout), its rows stay ``running`` until their lease ends. A second worker takes the other messages; the sweeper (with a
short lease) counts the killed batch's rows as a lost attempt and re-sends them, one by one."""

from __future__ import annotations

import signal
import time

import pytest
import redis
from sqlalchemy import func, select

from autodetect.db import session_scope
from autodetect.storage import Image, ListingPrediction, Prediction
from autodetect.pipeline.sweeper import sweep
from tests.integration.conftest import REDIS_URL, client_app, make_stack, wait_for
from tests.unit.test_inference_support import (
    add_listings,
    jpeg,
    register_version,
    store_photos,
)

pytestmark = pytest.mark.integration

BROKER = REDIS_URL.rsplit("/", 1)[0] + "/12"  # a database of its own: other suites may share db 7
BATCH = 8


def _count(settings, *where) -> int:
    with session_scope(settings) as s:
        return s.scalar(select(func.count()).select_from(Image).where(*where))


def _predictions(settings) -> int:
    with session_scope(settings) as s:
        return s.scalar(select(func.count()).select_from(Prediction))


def _worker(stack, name: str, delay_s: float):
    stack.env["AUTODETECT_INFERENCE_TEST_DELAY_S"] = str(delay_s)
    return stack.spawn(name, ["celery", "-A", "workers", "worker", "-Q", "inference", "-P", "prefork", "-c", "1",
                              "--prefetch-multiplier", "1", "-n", f"{name}@it", "-l", "INFO",
                              "--without-gossip", "--without-mingle", "--without-heartbeat"])


def test_sigkill_mid_batch_loses_nothing_and_duplicates_nothing(tmp_path, pg_url):
    redis.Redis.from_url(BROKER).flushdb()
    stack = make_stack(tmp_path, pg_url, BROKER, "http://127.0.0.1:9", inference_batch_size=str(BATCH),
                       inference_batch_wait_s="0.1", stale_after_s="3", sweeper_interval_s="3600")
    settings = stack.settings
    register_version(settings, "v1", ["red", "green", "blue"])
    keys = list(store_photos(settings, {f"p{i}": jpeg(c, seed=i) for i, c in
                                        enumerate(["red", "green", "blue"] * 2)}).values())
    ids = add_listings(settings, [{"photos": [keys[(i + j) % 6] for j in range(4)], "label": "red"} for i in range(5)])
    # Two more listings whose photos are duplicates of earlier ones: never predicted themselves.
    add_listings(settings, [{"photos": [keys[0], keys[1]], "label": "red", "duplicate_of": [ids[0], ids[1]]}
                            for _ in range(2)], stage="done", state="done", first_id=6)
    unique = len(ids)
    assert unique == 20
    app = client_app(settings)

    def send(stage, rows):  # what workers.dispatch does: one message per batch
        for i in list(rows)[::BATCH]:
            app.send_task("inference.predict", args=(int(i),))

    try:
        first = _worker(stack, "inference1", delay_s=60)
        send("inference", ids)
        # The worker claims a batch and, while the (slowed) model runs, the next one (its pipeline).
        wait_for(lambda: _count(settings, Image.state == "running") == 2 * BATCH, 120, stack,
                 "the first worker to claim its batches", poll=0.1)
        time.sleep(0.5)  # well inside the 60 s pause: the batch is half done
        assert _predictions(settings) == 0
        stack.kill("inference1", signal.SIGKILL)
        first.wait(timeout=20)
        del stack.procs["inference1"]
        stuck = _count(settings, Image.state == "running")
        assert stuck == 2 * BATCH, "the killed worker's rows stay claimed"
        assert _predictions(settings) == 0, "nothing half-written"

        _worker(stack, "inference2", delay_s=0)
        wait_for(lambda: _predictions(settings) == unique - stuck, 120, stack, "the other photos")
        assert _count(settings, Image.state == "running") == stuck

        def swept_and_done():
            sweep(settings, send)  # the beat's maintenance.sweep, called directly
            return _predictions(settings) == unique and _count(settings, Image.state != "done") == 0
        wait_for(swept_and_done, 90, stack, "the sweeper to re-pend the killed batch", poll=1.0)
        log = (stack.logs / "inference2.log").read_text()  # before the stop (a SIGTERM mid-task logs one)
    finally:
        stack.stop()

    with session_scope(settings) as s:
        per_photo = dict(s.execute(select(Prediction.image_id, func.count()).group_by(Prediction.image_id)).all())
        assert sorted(per_photo) == sorted(ids), "every unique photo predicted, duplicates not"
        assert set(per_photo.values()) == {1}, "exactly one prediction each"
        listings = dict(s.execute(select(ListingPrediction.listing_id, ListingPrediction.photos)).all())
    assert listings == {1: 4, 2: 4, 3: 4, 4: 4, 5: 4, 6: 2, 7: 2}
    assert "Traceback" not in log, log[-3000:]
