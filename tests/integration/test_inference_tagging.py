"""``autodetect tag`` on the real stack: 5,000 listings tagged through the inference queue by a
separate worker process, watched by the database-fed progress bar; the worker is SIGKILLed midway,
the tag is started again, and every photo ends with exactly one prediction."""

from __future__ import annotations

import io
import re
import signal
import threading

import pytest
import redis
from rich.console import Console
from sqlalchemy import func, select

from autodetect.cli.views import follow_tagging
from autodetect.db import session_scope
from autodetect.storage import Image, ListingPrediction, Prediction
from autodetect.pipeline.sweeper import sweep
from autodetect.pipeline.tagging import start_tagging
from tests.integration.conftest import REDIS_URL, client_app, make_stack, wait_for
from tests.unit.test_inference_support import (
    add_listings,
    jpeg,
    register_version,
    store_photos,
)

pytestmark = pytest.mark.integration

BROKER = REDIS_URL.rsplit("/", 1)[0] + "/11"
N = 5000
BATCH = 64


def _predictions(settings) -> int:
    with session_scope(settings) as s:
        return s.scalar(select(func.count()).select_from(Prediction))


def test_tag_5000_listings_through_the_queue_killed_and_restarted(tmp_path, pg_url):
    redis.Redis.from_url(BROKER).flushdb()
    stack = make_stack(tmp_path, pg_url, BROKER, "http://127.0.0.1:9", inference_batch_size=str(BATCH),
                       stale_after_s="3", sweeper_interval_s="3600", tag_chunk_size="1000")
    settings = stack.settings
    version_id = register_version(settings, "v1", ["red", "green", "blue"])
    keys = list(store_photos(settings, {f"p{i}": jpeg(c, seed=i) for i, c in
                                        enumerate(["red", "green", "blue"] * 2)}).values())
    add_listings(settings, [{"photos": [keys[i % 6]], "label": "red"} for i in range(N)], stage="done", state="done")
    app = client_app(settings)

    def send(stage, ids):  # workers.dispatch, on this test's broker
        with app.producer_or_acquire() as producer:
            for i in list(ids)[::BATCH]:
                app.send_task("inference.predict", args=(int(i),), producer=producer)

    def worker(name: str):
        return stack.spawn(name, ["celery", "-A", "workers", "worker", "-Q", "inference", "-P", "prefork", "-c", "1",
                                  "--prefetch-multiplier", "1", "-n", f"{name}@it", "-l", "INFO",
                                  "--without-gossip", "--without-mingle", "--without-heartbeat"])

    try:
        plan = start_tagging(settings, "missing", dispatch=send)
        assert plan.queued == N and plan.messages == 5 * -(-1000 // BATCH)  # per chunk of 1000 rows
        first = worker("inference1")
        wait_for(lambda: _predictions(settings) >= 1000, 120, stack, "a first part of the catalogue", poll=0.05)
        stack.kill("inference1", signal.SIGKILL)
        first.wait(timeout=20)
        del stack.procs["inference1"]
        done_before = _predictions(settings)
        assert 1000 <= done_before < N

        # Started again: queues what is left (the killed worker's claimed rows come back by the sweeper).
        plan = start_tagging(settings, "missing", dispatch=send)
        assert plan.queued <= N - done_before
        worker("inference2")
        finished = threading.Event()

        def sweeper():
            while not finished.wait(1.0):
                sweep(settings, send)
        threading.Thread(target=sweeper, daemon=True).start()
        out = io.StringIO()
        console = Console(file=out, force_terminal=True, width=100, color_system=None)
        try:
            assert follow_tagging(console, version_id, poll_s=0.2, idle_timeout_s=60) == (N, N)
        finally:
            finished.set()
        log = (stack.logs / "inference2.log").read_text()  # before the stop (a SIGTERM mid-task logs one)
    finally:
        stack.stop()

    shown = {int(m) for m in re.findall(rf"(\d+)/{N}", out.getvalue())}
    assert len(shown) >= 3 and max(shown) == N, "the bar moved, fed from the database"
    with session_scope(settings) as s:
        assert s.scalar(select(func.count()).select_from(Prediction)) == N
        assert s.scalar(select(func.count(func.distinct(Prediction.image_id)))) == N
        assert s.scalar(select(func.count()).select_from(ListingPrediction)) == N
        assert s.scalar(select(func.count()).select_from(Image).where(Image.state != "done")) == 0
    assert "Traceback" not in log, log[-3000:]
