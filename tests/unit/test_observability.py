"""The exporter on SQLite and during a database outage, the deploy/ files against promtool, and the
Grafana dashboard against the metrics that the exporter, the API and Flower really expose."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests
from fastapi.testclient import TestClient
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from autodetect.db import session_scope, upgrade
from autodetect.observability.exporter import exporter_registry, serve_exporter
from autodetect.observability.snapshot import reason_class
from autodetect.settings import configure
from autodetect.storage import CrawlState, Image, Listing, ModelVersion

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy/grafana/dashboards/autodetect.json"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def filled(tmp_path):
    settings = configure(data_dir=str(tmp_path / "data"))
    upgrade(settings)
    with session_scope(settings) as s:
        listing = Listing(source="sandbox", external_id="1")
        s.add(listing)
        s.flush()
        s.add_all([Image(listing_id=listing.id, position=0, url="u", state="failed", error="http 404 not found"),
                   Image(listing_id=listing.id, position=1, url="u", state="failed", error="timed out after 30 s"),
                   Image(listing_id=listing.id, position=2, url="u", stage="dedup", state="pending", attempts=2),
                   Image(listing_id=listing.id, position=3, url="u", stage="done", state="done")])
        s.add(ModelVersion(name="v1", backbone="compact_cnn", image_size=48, status="active",
                           metrics={"top1": 0.8, "top3": 0.93, "mean_per_class": 0.7, "confusion": [[1]]}))
        s.add(CrawlState(source="sandbox", crawls=3))
    return settings


def _samples(text: str) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_the_exporter_reads_the_rows(filled):
    samples = _samples(generate_latest(exporter_registry(filled, lambda: {"download": 5})).decode())
    assert samples[("autodetect_exporter_up", ())] == 1
    assert samples[("autodetect_photos", (("stage", "download"), ("state", "failed")))] == 2
    assert samples[("autodetect_photos", (("stage", "dedup"), ("state", "pending")))] == 1
    assert samples[("autodetect_photos", (("stage", "done"), ("state", "done")))] == 1
    assert samples[("autodetect_photos_retrying", (("stage", "dedup"),))] == 1
    assert samples[("autodetect_photo_failures", (("reason", "http_4xx"), ("stage", "download")))] == 1
    assert samples[("autodetect_photo_failures", (("reason", "timeout"), ("stage", "download")))] == 1
    assert samples[("autodetect_model_active_info", (("backbone", "compact_cnn"), ("version", "v1")))] == 1
    assert samples[("autodetect_model_metric", (("metric", "top3"), ("status", "active"), ("version", "v1")))] == 0.93
    assert not any(dict(k).get("metric") == "confusion" for _, k in samples)
    assert samples[("autodetect_crawls_total", (("source", "sandbox"),))] == 3
    assert samples[("autodetect_queue_messages", (("queue", "download"),))] == 5
    assert samples[("autodetect_exporter_broker_up", ())] == 1


def test_reason_classes_are_few_and_free_of_text():
    assert reason_class("http 503 Service Unavailable") == "http_5xx"
    assert reason_class("dns: unknown host x.example") == "dns"
    assert reason_class("not an image: text/html") == "not_an_image"
    assert reason_class(None) == "other"


def _silent_server() -> tuple[socket.socket, int]:
    """A TCP port that accepts connections and never says a word (a hung database)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    held = []
    threading.Thread(target=lambda: [held.append(sock.accept()) for _ in range(16)], daemon=True).start()
    return sock, sock.getsockname()[1]


def test_a_scrape_during_a_database_outage_answers_within_its_deadline(tmp_path):
    sock, pg_port = _silent_server()
    settings = configure(data_dir=str(tmp_path / "data"), metrics_scrape_timeout_s=0.5,
                         database_url=f"postgresql+psycopg2://u:hunter2@127.0.0.1:{pg_port}/x")
    port = _free_port()
    server, _ = serve_exporter(settings, lambda: time.sleep(30) or {}, host="127.0.0.1", port=port)
    try:
        for _ in range(2):  # the second finds the first read still hanging: answered at once too
            started = time.monotonic()
            resp = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
            assert time.monotonic() - started < 3
            assert resp.status_code == 200
            samples = _samples(resp.text)
            assert samples[("autodetect_exporter_up", ())] == 0
            assert samples[("autodetect_exporter_broker_up", ())] == 0
            assert not any(name == "autodetect_photos" for name, _ in samples)
            assert "hunter2" not in resp.text
        assert samples[("autodetect_exporter_errors_total", (("kind", "database"),))] == 2
    finally:
        server.shutdown()
        sock.close()


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool: Debian's prometheus (.ci/setup --services)")
def test_prometheus_config_and_rules_pass_promtool():
    folder = ROOT / "deploy/prometheus"
    rules = subprocess.run(["promtool", "check", "rules", str(folder / "rules.yml")], capture_output=True, text=True)
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert "SUCCESS: 6 rules found" in rules.stdout
    config = subprocess.run(["promtool", "check", "config", "prometheus.yml"], cwd=folder, capture_output=True,
                            text=True)
    assert config.returncode == 0, config.stdout + config.stderr
    text = (folder / "rules.yml").read_text()
    for alert in ("AutodetectStageStuck", "AutodetectFailuresRising", "AutodetectNoCrawl"):
        assert f"alert: {alert}" in text


def _exposed_names(settings) -> set[str]:
    """Every sample name the exporter, the API and Flower expose (a histogram's _bucket/_sum/_count...)."""
    import prometheus_client
    from flower.events import get_prometheus_metrics

    from autodetect.serving.app import create_app

    texts = [generate_latest(exporter_registry(settings, lambda: {"download": 0})).decode()]
    client = TestClient(create_app(settings))
    client.get("/health")
    client.post("/identify", files={"photo": ("a.jpg", b"x", "image/jpeg")})
    texts.append(client.get("/metrics").text)
    names = set()
    for text in texts:
        for family in text_string_to_metric_families(text):
            names.add(family.name)
            names |= {s.name for s in family.samples}
    get_prometheus_metrics()  # Flower's own metrics, as its /metrics serves them (default registry)
    for family in prometheus_client.REGISTRY.collect():
        if family.name.startswith("flower_"):
            names |= {family.name, f"{family.name}_total", f"{family.name}_bucket", f"{family.name}_count"}
    return names


def test_the_dashboard_names_only_metrics_that_are_exposed(filled):
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    used = {m for e in exprs for m in re.findall(r"\b((?:autodetect|flower)_[a-z0-9_]+)", e)}
    assert {"autodetect_photos", "autodetect_photos_oldest_pending_age_seconds", "autodetect_queue_messages",
            "autodetect_http_request_duration_seconds_bucket", "autodetect_model_metric"} <= used
    exposed = _exposed_names(filled)
    assert used - exposed == set(), f"the dashboard names metrics nobody exposes: {sorted(used - exposed)}"
    rules = (ROOT / "deploy/prometheus/rules.yml").read_text()
    in_rules = set(re.findall(r"\b((?:autodetect|flower)_[a-z0-9_]+)", rules))
    assert in_rules - exposed == set(), f"the alert rules name metrics nobody exposes: {sorted(in_rules - exposed)}"
    titles = " ".join(p["title"] for p in dashboard["panels"]).lower()
    for word in ("backlog", "throughput", "failures", "queue", "latency", "accuracy"):
        assert word in titles
