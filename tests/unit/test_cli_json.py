"""Every ``--json`` output is one JSON document on stdout (progress and messages go to stderr), with
the shape the README documents; without ``--json`` the same commands print tables."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from autodetect.cli import app
from autodetect.db import upgrade
from autodetect.settings import Settings
from tests.unit.test_inference_support import jpeg, register_version


@pytest.fixture
def home(tmp_path, sandbox):
    settings = Settings(data_dir=tmp_path / "data", database_url="")
    upgrade(settings)
    register_version(settings, "v1", ["green", "red", "blue"])
    env = {"AUTODETECT_BROKER_URL": "memory://", "AUTODETECT_SOURCE": "sandbox",
           "AUTODETECT_MARKETPLACE_URL": sandbox.url,
           "AUTODETECT_DOWNLOAD_ALLOW_HOSTS": json.dumps([sandbox.url.split("//")[1]])}
    return settings, env


def _json(home, *args: str):
    settings, env = home
    result = CliRunner().invoke(app, ["--data-dir", str(settings.data_dir), *args], env=env)
    assert result.exit_code == 0, (args, result.output)
    return json.loads(result.stdout)


def test_every_json_output_parses(home, tmp_path):
    photo = tmp_path / "street.jpg"
    photo.write_bytes(jpeg("red", side=300))
    answer = _json(home, "identify", str(photo), "--json")
    assert answer[0]["photo"] == str(photo) and len(answer[0]["candidates"]) == 3
    assert answer[0]["candidates"][0]["model"] == "red" and 0 < answer[0]["candidates"][0]["probability"] <= 1

    versions = _json(home, "models", "list", "--json")
    assert [(v["version"], v["status"], v["top1"]) for v in versions] == [("v1", "active", 0.5)]

    crawled = _json(home, "crawl", "--wait", "--max-listings", "10", "--json")
    assert crawled["listings"] == 10
    queued = _json(home, "crawl", "--json")
    assert queued["queued"] == "discovery.crawl"

    classes = _json(home, "catalogue", "--json")
    assert classes["min_photos_per_class"] == 30 and classes["classes"]
    assert sum(c["listings"] for c in classes["classes"]) <= 10
    assert {"class", "listings", "photos", "trainable"} == set(classes["classes"][0])

    tagged = _json(home, "tag", "--all", "--json")
    assert tagged["version"] == "v1" and tagged["mode"] == "all" and tagged["ran"] == "here"

    trained = _json(home, "train", "--json")
    assert set(trained) >= {"check", "run"} and isinstance(trained["check"]["fire"], bool)

    status = _json(home, "status", "--json")
    assert status["model"]["name"] == "v1"

    report = _json(home, "doctor", "--json")
    assert report["ok"] is True and {c["name"] for c in report["checks"]} >= {"database", "model", "source"}
    assert next(c for c in report["checks"] if c["name"] == "source")["status"] == "ok"


def test_tables_by_default(home, tmp_path):
    settings, env = home
    runner = CliRunner()
    for args, text in ((["models", "list"], "model versions"), (["catalogue"], "classes"),
                       (["crawl", "--wait", "--max-listings", "3"], "crawl")):
        result = runner.invoke(app, ["--data-dir", str(settings.data_dir), *args], env=env)
        assert result.exit_code == 0 and text in result.output, (args, result.output)
        with pytest.raises(json.JSONDecodeError):
            json.loads(result.stdout)
