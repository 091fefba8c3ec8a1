"""The first hour, as a new user meets it: in an empty folder with no configuration, the commands work
without `autodetect db upgrade`, two of them started together both succeed, bad settings are one
line, and the exit statuses are the same everywhere and listed in --help."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import requests

from tests.unit.test_api_support import free_port
from tests.unit.test_inference_support import jpeg

AUTODETECT = str(Path(sys.executable).parent / "autodetect")


def _env() -> dict[str, str]:
    """The environment of a new user: no AUTODETECT_* variables at all."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTODETECT_")}
    env["COLUMNS"] = "200"
    return env


def _run(folder: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([AUTODETECT, *args], cwd=folder, env=_env(), capture_output=True, text=True, timeout=timeout)


def test_an_empty_folder_needs_no_db_upgrade(tmp_path):
    status = _run(tmp_path, "status", "--json")
    assert status.returncode == 0, status.stdout + status.stderr
    assert json.loads(status.stdout)["listings"]["total"] == 0
    assert (tmp_path / "autodetect-data" / "autodetect.db").is_file()

    photo = tmp_path / "photo.jpg"
    photo.write_bytes(jpeg("red", side=200))
    identify = _run(tmp_path, "identify", str(photo))
    assert identify.returncode == 1, identify.stdout + identify.stderr
    assert "no active model yet" in identify.stderr and "Traceback" not in identify.stdout + identify.stderr
    missing = _run(tmp_path, "identify", str(tmp_path / "nope.jpg"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr, "a photo that is not there: usage"


def test_serve_in_an_empty_folder_answers_health(tmp_path):
    port = free_port()
    proc = subprocess.Popen([AUTODETECT, "serve", "--port", str(port)], cwd=tmp_path, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline, answer = time.monotonic() + 90, None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                answer = requests.get(f"http://127.0.0.1:{port}/health", timeout=5)
                break
            except requests.ConnectionError:
                time.sleep(0.3)
        assert answer is not None, f"serve exited with {proc.poll()}"
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["status"] == "no_model" and body["database"] == "ok"
        checks = {c["name"]: c["status"] for c in body["checks"]}
        assert checks == {"database": "ok", "schema": "ok", "model": "warn", "data dir": "ok",
                          "disk space": checks["disk space"]} and checks["disk space"] in ("ok", "warn")
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert "Traceback" not in out, out


def test_commands_started_together_on_a_fresh_folder_all_succeed(tmp_path):
    procs = [subprocess.Popen([AUTODETECT, "status", "--json"], cwd=tmp_path, env=_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    results = [(p.wait(timeout=120), *p.communicate()) for p in procs]
    for code, out, err in results:
        assert code == 0, out + err
        assert json.loads(out)["listings"]["total"] == 0
    # and the schema was made once: a later command finds it at head and changes nothing
    assert _run(tmp_path, "doctor", "--json").returncode == 0


def test_malformed_urls_are_one_line_naming_the_setting(tmp_path):
    env = _env() | {"AUTODETECT_DATABASE_URL": "postgres//user:S3CRET@nowhere"}
    bad_db = subprocess.run([AUTODETECT, "status"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert bad_db.returncode == 2, bad_db.stderr
    assert "AUTODETECT_DATABASE_URL" in bad_db.stderr and "S3CRET" not in bad_db.stderr + bad_db.stdout
    assert "Traceback" not in bad_db.stderr and len(bad_db.stderr.strip().splitlines()) == 1

    env = _env() | {"AUTODETECT_BROKER_URL": "rabbit:/guest@localhost"}
    bad_broker = subprocess.run([AUTODETECT, "doctor"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert bad_broker.returncode == 2 and "AUTODETECT_BROKER_URL" in bad_broker.stderr, bad_broker.stderr
    assert "Traceback" not in bad_broker.stderr

    env = _env() | {"AUTODETECT_MAX_ATTEMPTS": "many"}
    bad_setting = subprocess.run([AUTODETECT, "status"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert bad_setting.returncode == 2 and "AUTODETECT_MAX_ATTEMPTS" in bad_setting.stderr, bad_setting.stderr


def test_help_lists_the_exit_statuses(tmp_path):
    out = " ".join(_run(tmp_path, "--help").stdout.split())
    assert "0 success" in out and "1 failure" in out and "2 usage" in out
