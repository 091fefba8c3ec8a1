"""The compose file is valid and runs every queue as ``workers/queues.py`` declares it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from autodetect.settings import Settings
from workers.queues import QUEUE_NAMES, ROUTES, queue_specs

ROOT = Path(__file__).resolve().parents[2]


def test_compose_file_is_valid_against_the_compose_spec():
    exe = shutil.which("check-jsonschema") or str(Path(sys.executable).parent / "check-jsonschema")
    result = subprocess.run([exe, "--builtin-schema", "vendor.compose-spec", str(ROOT / "docker-compose.yml")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_runs_one_worker_per_queue_as_declared():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    for name, spec in queue_specs(Settings()).items():
        command = services[name]["command"]
        assert command[:2] == ["celery", "-A"] and command[1:] == spec.worker_args(), name
    assert {"postgres", "redis", "migrate", "beat", "flower", "sandbox", "api"} <= set(services)
    assert "noeviction" in services["redis"]["command"] and "--appendonly" in services["redis"]["command"]
    assert "${FLOWER_BASIC_AUTH:?" in " ".join(services["flower"]["command"])
    for svc in ("postgres", "redis"):
        assert "healthcheck" in services[svc]


def test_every_queue_has_a_route_and_limits_below_the_visibility_timeout():
    settings = Settings()
    routed = {r["queue"] for r in ROUTES.values()}
    assert routed == set(QUEUE_NAMES)
    for spec in queue_specs(settings).values():
        assert spec.time_limit < settings.visibility_timeout


def test_the_app_is_json_only_with_late_acks():
    from workers.app import make_app

    conf = make_app().conf
    assert conf.accept_content == ["json"] and conf.task_serializer == "json"
    assert conf.task_acks_late and conf.task_reject_on_worker_lost


def test_light_workers_never_import_tensorflow():
    code = ("import sys, workers.download, workers.dedup, workers.discovery, workers.inference, "
            "workers.training, workers.maintenance; "
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'TensorFlow imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
