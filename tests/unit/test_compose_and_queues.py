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
    assert "--maxmemory" in services["redis"]["command"]


def test_secrets_stay_out_of_argv_and_ports_bind_to_loopback():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    flower = services["flower"]
    assert not any("basic" in part.lower() or "FLOWER_BASIC_AUTH" in part for part in flower["command"])
    assert flower["environment"]["FLOWER_BASIC_AUTH"].startswith("${FLOWER_BASIC_AUTH:?")
    for name in ("flower", "api", "prometheus", "grafana"):
        for port in services[name]["ports"]:
            host = port.rsplit(":", 2)[0]
            assert host.startswith("${") and host.endswith(":-127.0.0.1}"), (name, port)
    published = [s for s, spec in services.items() if spec.get("ports")]
    assert sorted(published) == ["api", "flower", "grafana", "prometheus"]
    assert not any("FLOWER_BASIC_AUTH=" in part for part in services["prometheus"]["command"])
    assert services["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"].startswith("${GRAFANA_ADMIN_PASSWORD:?")
    rabbit = compose["configs"]["rabbitmq-conf"]["content"]
    timeout_ms = int(rabbit.split("consumer_timeout =")[1].split()[0])
    assert timeout_ms / 1000 > Settings().training_time_limit_s
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".env", ".git", "autodetect-data/"} <= set(ignored)
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
