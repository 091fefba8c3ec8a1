"""``autodetect doctor`` on the real stack: PostgreSQL, Redis (db 14), a separate worker process per
queue and beat. All up: every check passes. The inference worker stopped: that check fails by name.
The broker on a closed port, or PostgreSQL unreachable: said so in under 15 s."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.conftest import free_port, make_stack, wait_for

REDIS_14 = "redis://127.0.0.1:6379/14"
AUTODETECT = str(Path(sys.executable).parent / "autodetect")


def doctor(stack, **env) -> tuple[int, dict, float]:
    started = time.monotonic()
    out = subprocess.run([AUTODETECT, "doctor", "--json"], env=stack.env | env, capture_output=True, text=True,
                         timeout=60)
    seconds = time.monotonic() - started
    print(f"doctor {sorted(env)} -> exit {out.returncode} in {seconds:.1f} s")
    assert "Traceback" not in out.stderr, out.stderr
    return out.returncode, json.loads(out.stdout), seconds


def by_name(report: dict) -> dict[str, dict]:
    return {c["name"]: c for c in report["checks"]}


@pytest.fixture
def stack(tmp_path, pg_url, sandbox60):
    server, _market = sandbox60
    s = make_stack(tmp_path, pg_url, REDIS_14, server.url, doctor_check_timeout_s="4")
    yield s
    s.stop()


def test_doctor_on_the_real_stack(stack):
    stack.start_workers()
    stack.start_beat()

    def all_up():
        code, report, _ = doctor(stack)
        return (code, report) if code == 0 else None

    code, report = wait_for(all_up, 120, stack, "every doctor check to pass")
    checks = by_name(report)
    queues = ("discovery", "download", "dedup", "inference", "training")
    assert {f"workers: {q}" for q in queues} <= set(checks)
    not_ok = {n: c for n, c in checks.items() if c["status"] != "ok"}
    assert set(not_ok) <= {"model"} and all(c["status"] == "warn" for c in not_ok.values()), not_ok
    assert "no active model" in checks["model"]["found"]
    assert "inference@it (prefork ×1)" in checks["workers: inference"]["found"]
    assert "download@it (threads ×8)" in checks["workers: download"]["found"]
    assert "last sweep" in checks["beat"]["found"] and "answers (postgresql)" in checks["database"]["found"]

    stack.kill("inference")
    stack.procs["inference"].wait(timeout=30)
    code, report, seconds = doctor(stack)
    assert code == 1 and seconds < 15
    failed = [n for n, c in by_name(report).items() if c["status"] == "fail"]
    assert failed == ["workers: inference"], report
    assert "autodetect worker inference" in by_name(report)["workers: inference"]["fix"]


def test_doctor_says_what_is_down_within_15_seconds(stack):
    closed = free_port()
    code, report, seconds = doctor(stack, AUTODETECT_BROKER_URL=f"redis://127.0.0.1:{closed}/14")
    checks = by_name(report)
    assert code == 1 and seconds < 15, seconds
    assert checks["broker"]["status"] == "fail" and str(closed) in checks["broker"]["found"]
    assert checks["workers"]["status"] == "fail" and checks["database"]["status"] == "ok"

    down = f"postgresql+psycopg2://postgres:S3CRET@127.0.0.1:{free_port()}/autodetect"
    started = time.monotonic()
    out = subprocess.run([AUTODETECT, "doctor"], env=stack.env | {"AUTODETECT_DATABASE_URL": down},
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and time.monotonic() - started < 15
    text = " ".join(out.stdout.split())
    assert "does not answer" in text and "S3CRET" not in out.stdout + out.stderr
    code, report, seconds = doctor(stack, AUTODETECT_DATABASE_URL=down)
    checks = by_name(report)
    assert code == 1 and seconds < 15
    assert [checks[n]["status"] for n in ("database", "schema", "beat", "model")] == ["fail"] * 4
    assert checks["broker"]["status"] == "ok"


def test_postgres_without_a_schema_asks_for_db_upgrade(pg_url, tmp_path):
    from tests.integration.conftest import PG_ADMIN_URL  # noqa: F401 - the same server as pg_url

    url = pg_url.replace("postgres:postgres@", "postgres:S3CRET@")  # trust auth: any password is accepted
    env = {"AUTODETECT_DATABASE_URL": url, "AUTODETECT_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([AUTODETECT, "status"], env=env, capture_output=True, text=True, timeout=60)
    message = " ".join(out.stderr.split())
    assert out.returncode == 1, out.stdout + out.stderr
    assert "has no schema yet" in message and "autodetect db upgrade" in message
    assert "S3CRET" not in out.stdout + out.stderr and "postgres:***@" in message
