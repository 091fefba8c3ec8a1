"""Watching the real stack: a small pipeline on PostgreSQL and Redis with worker processes logging JSON,
then the exporter scraped over HTTP (its counts against the database's), a real Prometheus scraping it
(a PromQL query for the pending photos), and the API's request histogram against the requests sent."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
import time

import pytest
import redis
import requests
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from autodetect.db import session_scope
from autodetect.storage import Image, Listing
from tests.integration.conftest import free_port, make_stack, wait_for

pytestmark = pytest.mark.integration

REDIS_DB = "redis://127.0.0.1:6379/15"


@pytest.fixture
def sandbox20():
    from autodetect.sandbox.marketplace import Marketplace
    from autodetect.sandbox.server import SandboxServer

    with SandboxServer(Marketplace(listings=20, models=3, seed=7)) as server:
        yield server


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    """``{(sample name, sorted labels): value}`` of one scrape."""
    text = requests.get(url, timeout=15).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _downloads_and_dedup_settled(settings) -> bool:
    with session_scope(settings) as s:
        total = s.scalar(select(func.count()).select_from(Image))
        busy = s.scalar(select(func.count()).select_from(Image).where(
            Image.stage.in_(("download", "dedup")), Image.state.in_(("pending", "running"))))
    return total > 0 and busy == 0


def test_exporter_counts_equal_the_database_and_prometheus_reads_them(tmp_path, pg_url, sandbox20):
    redis.Redis.from_url(REDIS_DB).flushdb()
    stack = make_stack(tmp_path, pg_url, REDIS_DB, sandbox20.url, log_format="json")
    try:
        # No inference worker: the photos end up waiting in the inference stage, a stuck stage.
        stack.start_workers(("discovery", "download", "dedup"))
        from workers.app import make_app

        app = make_app()
        wait_for(lambda: len(app.control.ping(timeout=1.0)) >= 3, 90, stack, "three workers to answer")
        app.send_task("discovery.crawl")
        wait_for(lambda: _downloads_and_dedup_settled(stack.settings), 240, stack, "downloads and dedup to finish")
    finally:
        stack.stop()

    _check_exporter_against_database(stack.settings)
    _check_worker_logs_are_json(stack)


def _database_counts(settings) -> tuple[dict, dict, int]:
    with session_scope(settings) as s:
        photos = {(st, state): n for st, state, n in s.execute(
            select(Image.stage, Image.state, func.count()).group_by(Image.stage, Image.state))}
        listings = dict(s.execute(select(Listing.status, func.count()).group_by(Listing.status)).all())
        pending = s.scalar(select(func.count()).select_from(Image).where(Image.state == "pending"))
    return photos, listings, pending


def _check_exporter_against_database(settings) -> None:
    from autodetect.observability.exporter import serve_exporter

    port = free_port()
    server, _ = serve_exporter(settings, host="127.0.0.1", port=port)
    try:
        time.sleep(1.1)  # the oldest pending photo is at least a second old
        samples = scrape(f"http://127.0.0.1:{port}/metrics")
        photos, listings, pending = _database_counts(settings)
        assert samples[("autodetect_exporter_up", ())] == 1
        exported = {(dict(k)["stage"], dict(k)["state"]): v for (name, k), v in samples.items()
                    if name == "autodetect_photos"}
        assert {k: v for k, v in exported.items() if v} == photos
        assert photos.get(("inference", "pending"), 0) > 0, "no inference worker: photos wait there"
        assert samples[("autodetect_photos_oldest_pending_age_seconds", (("stage", "inference"),))] >= 1.0
        assert samples[("autodetect_photos_oldest_pending_age_seconds", (("stage", "download"),))] == 0
        assert samples[("autodetect_listings", (("status", "active"),))] == listings["active"] > 0
        assert samples[("autodetect_crawls_total", (("source", "sandbox"),))] >= 1
        _check_prometheus_query(port, pending)
    finally:
        server.shutdown()


def _check_prometheus_query(exporter_port: int, pending: int) -> None:
    """A real Prometheus on loopback scrapes the exporter and answers the PromQL query."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is not installed (Debian's `prometheus` package; .ci/setup --services)")
    with tempfile.TemporaryDirectory() as tmp:
        config = f"{tmp}/prometheus.yml"
        with open(config, "w") as f:
            f.write(f"global: {{scrape_interval: 1s, scrape_timeout: 1s}}\n"
                    f"scrape_configs:\n  - job_name: exporter\n    static_configs:\n"
                    f"      - targets: ['127.0.0.1:{exporter_port}']\n")
        port = free_port()
        proc = subprocess.Popen([binary, f"--config.file={config}", f"--storage.tsdb.path={tmp}/data",
                                 f"--web.listen-address=127.0.0.1:{port}"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            query = 'sum(autodetect_photos{state="pending"})'
            deadline = time.monotonic() + 60
            value = None
            while time.monotonic() < deadline and value is None:
                time.sleep(1)
                try:
                    result = requests.get(f"http://127.0.0.1:{port}/api/v1/query", params={"query": query},
                                          timeout=5).json()["data"]["result"]
                except (requests.ConnectionError, KeyError, ValueError):
                    continue
                value = float(result[0]["value"][1]) if result else None
            assert value == pending > 0
        finally:
            proc.terminate()
            proc.wait(timeout=20)


def _check_worker_logs_are_json(stack) -> None:
    """With log_format=json every logged line of a worker is a JSON object; a download task's lines
    carry its task id and the photo ids it was given."""
    lines = (stack.logs / "download.log").read_text().splitlines()
    records = [json.loads(line) for line in lines if line.startswith("{")]
    # Celery's banner and shutdown notice are printed, not logged; its log format would be "[date: LEVEL/...]".
    plain = [line for line in lines if re.match(r"\[\d{4}-\d\d-\d\d[ T]", line)]
    assert not plain, f"plain log lines among the JSON ones: {plain[:3]}"
    assert any(r["logger"].startswith("celery.") for r in records), "Celery's own lines are JSON too"
    started = [r for r in records if r.get("message") == "task started" and r.get("task_name") == "download.fetch"]
    assert started, f"no download task logged: {lines[-20:]}"
    for r in started:
        assert r["task_id"] and r["stage"] == "download" and r["level"] == "INFO"
        assert r["image_ids"] and all(isinstance(i, int) for i in r["image_ids"])
    with session_scope(stack.settings) as s:
        known = set(s.scalars(select(Image.id)))
    assert {i for r in started for i in r["image_ids"]} == known, "every photo was downloaded by a logged task"


def test_api_latency_histogram_counts_the_requests_sent(tmp_path, pg_url):
    from fastapi.testclient import TestClient

    from autodetect.db import upgrade
    from autodetect.serving.app import create_app
    from autodetect.settings import configure

    settings = configure(data_dir=str(tmp_path / "data"), database_url=pg_url)
    upgrade(settings)
    client = TestClient(create_app(settings))
    for _ in range(7):
        assert client.get("/health").status_code in (200, 503)
    for _ in range(3):
        assert client.get("/listings/424242").status_code == 404
    for _ in range(4):  # no active model yet: 409
        assert client.post("/identify", files={"photo": ("a.jpg", b"\xff\xd8\xff", "image/jpeg")}).status_code == 409
    text = client.get("/metrics").text
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    counts = {dict(k)["route"]: v for (name, k), v in samples.items()
              if name == "autodetect_http_request_duration_seconds_count"}
    assert counts["/listings/{listing_id}"] == 3
    assert counts["/identify"] == 4
    assert sum(v for (name, k), v in samples.items() if name == "autodetect_http_request_duration_seconds_count"
               and dict(k)["route"] == "/health") == 7
    inf = [v for (name, k), v in samples.items() if name == "autodetect_http_request_duration_seconds_bucket"
           and dict(k)["route"] == "/identify" and dict(k)["le"] == "+Inf"]
    assert inf == [4]
    assert samples[("autodetect_identify_outcomes_total", (("outcome", "no_model"),))] == 4
