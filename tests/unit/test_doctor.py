"""``autodetect doctor`` on the embedded default, and its checks one by one against real parts: a
SQLite database the sweeper stamps, a model bundle on disk, the data directory, a feed file."""

from __future__ import annotations

import json
import time
from datetime import timedelta

from sqlalchemy import update
from typer.testing import CliRunner

from autodetect.beats import SWEEP, last_beat
from autodetect.checks import FAIL, OK, WARN, Check, Probe, run_probes
from autodetect.checks.domain import beat_check, data_dir_check, disk_check, fresh_loader, model_check, source_check
from autodetect.cli import app
from autodetect.db import session_scope, upgrade
from autodetect.settings import Settings
from autodetect.storage import Beat, ModelVersion
from tests.unit.test_inference_support import register_version


def test_doctor_passes_on_a_fresh_embedded_folder(tmp_path):
    result = CliRunner().invoke(app, ["--data-dir", str(tmp_path / "data"), "--database-url", "", "doctor", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    statuses = {c["name"]: c["status"] for c in report["checks"]}
    assert set(statuses) == {"database", "schema", "broker", "workers", "beat", "model", "data dir", "disk space",
                             "source", "flower"}
    assert statuses["schema"] == OK and statuses["model"] == WARN, "the schema made on first use; no model yet"
    assert report["ok"] is True and report["seconds"] < 15
    table = CliRunner().invoke(app, ["--data-dir", str(tmp_path / "data"), "doctor"])
    assert table.exit_code == 0 and "no active model yet" in table.output and "ok" in table.output


def test_a_failed_check_exits_1_and_names_itself(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTODETECT_MIN_FREE_DISK_MB", str(10**12))  # more than any disk has
    result = CliRunner().invoke(app, ["--data-dir", str(tmp_path / "data"), "doctor", "--json"])
    assert result.exit_code == 1, result.output
    failed = [c for c in json.loads(result.stdout)["checks"] if c["status"] == FAIL]
    assert [c["name"] for c in failed] == ["disk space"] and failed[0]["fix"]


def test_probes_run_side_by_side_within_one_deadline():
    def hangs() -> Check:
        time.sleep(30)
        return Check("hangs", OK, "never")

    def raises() -> Check:
        raise OSError("the disk is on fire")

    started = time.monotonic()
    checks = run_probes([Probe("hangs", hangs, "unplug it"), Probe("raises", raises),
                         Probe("quick", lambda: [Check("a", OK, "fine"), Check("b", WARN, "meh")])], timeout_s=0.5)
    assert time.monotonic() - started < 1.5
    assert [(c.name, c.status) for c in checks] == [("hangs", FAIL), ("raises", FAIL), ("a", OK), ("b", WARN)]
    assert checks[0].found == "no answer within 0.5 s" and checks[0].fix == "unplug it"
    assert "the disk is on fire" in checks[1].found


def _settings(tmp_path, **overrides) -> Settings:
    settings = Settings(data_dir=tmp_path / "data", database_url="", **overrides)
    upgrade(settings)
    return settings


def test_beat_is_alive_while_the_sweeper_stamps(tmp_path):
    from autodetect.pipeline.sweeper import sweep

    settings = _settings(tmp_path, broker_url="redis://127.0.0.1:6379/14", sweeper_interval_s=5)
    assert beat_check(settings).status == FAIL and "no sweep recorded" in beat_check(settings).found
    sweep(settings, lambda *_: None)
    with session_scope(settings) as s:
        assert last_beat(s, SWEEP) is not None
    assert beat_check(settings).status == OK
    with session_scope(settings) as s:  # the last sweep was long ago: beat (or its discovery worker) stopped
        s.execute(update(Beat).values(at=last_beat(s, SWEEP) - timedelta(seconds=60)))
    check = beat_check(settings)
    assert check.status == FAIL and "one every 5 s expected" in check.found and "beat" in check.fix


def test_the_model_check_loads_the_artifact(tmp_path):
    settings = _settings(tmp_path)
    assert model_check(settings, fresh_loader(settings)).status == WARN
    register_version(settings, "v1", ["green", "red", "blue"])
    check = model_check(settings, fresh_loader(settings))
    assert check.status == OK and "v1 loads" in check.found and "onnx" in check.found
    (settings.data_dir / "models" / "v1" / "model.onnx").write_bytes(b"not a model")
    check = model_check(settings, fresh_loader(settings))
    assert check.status == FAIL and "v1 does not load" in check.found and "rollback" in check.fix


def test_data_dir_disk_and_source_checks(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    unwritable = Settings(data_dir=blocker / "data", database_url=f"sqlite:///{tmp_path}/x.db")
    assert data_dir_check(unwritable).status == FAIL
    assert data_dir_check(Settings(data_dir=tmp_path / "d", database_url="")).status == OK
    assert disk_check(Settings(data_dir=tmp_path, min_free_disk_mb=0)).status == OK
    feed = Settings(data_dir=tmp_path, source="feed", feed_url=str(tmp_path / "feed.json"))
    assert source_check(feed).status == FAIL and "missing" in source_check(feed).found
    (tmp_path / "feed.json").write_text("[]")
    assert source_check(feed).status == OK
    ebay = Settings(data_dir=tmp_path, source="ebay", ebay_client_id="", broker_url="redis://x:1/0")
    assert source_check(ebay).status == FAIL and "AUTODETECT_EBAY_CLIENT_ID" in source_check(ebay).fix
    closed = Settings(data_dir=tmp_path, source="sandbox", marketplace_url="http://127.0.0.1:9/",
                      broker_url="redis://x:1/0")
    check = source_check(closed)
    assert check.status == FAIL and "refused" in check.found.lower()


def test_health_reports_a_broken_model_as_degraded(tmp_path):
    from autodetect.serving.app import create_app
    from tests.unit.test_api_support import client_for

    settings = _settings(tmp_path)
    register_version(settings, "v1", ["green", "red", "blue"])
    (settings.data_dir / "models" / "v1" / "model.onnx").write_bytes(b"not a model")
    with client_for(create_app(settings)) as c:
        body = c.get("/health").json()
    checks = {x["name"]: x for x in body["checks"]}
    assert body["status"] == "degraded" and checks["model"]["status"] == FAIL
    assert checks["database"]["status"] == OK and checks["schema"]["status"] == OK
    with session_scope(settings) as s:
        assert s.query(ModelVersion).one().name == "v1"
