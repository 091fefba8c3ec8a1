"""The real stack: PostgreSQL, Redis or RabbitMQ, the sandbox marketplace on loopback, and a
separate ``celery -A workers worker -Q <queue>`` process per queue, plus beat."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parents[2]
PG_ADMIN_URL = os.environ.get("AUTODETECT_TEST_PG", "postgresql+psycopg2://postgres:postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("AUTODETECT_TEST_REDIS", "redis://127.0.0.1:6379/7")
AMQP_URL = os.environ.get("AUTODETECT_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672//")

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for one test, dropped afterwards."""
    name = f"autodetect_it_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@dataclass
class Stack:
    env: dict[str, str]
    settings: object
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    logs: Path | None = None

    def spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen([sys.executable, "-m", *args], cwd=ROOT, env=self.env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        self.procs[name] = proc
        return proc

    def start_workers(self, queues=("discovery", "download", "dedup", "inference", "training")) -> None:
        from workers.queues import queue_specs

        specs = queue_specs(self.settings)
        for q in queues:
            spec = specs[q]
            concurrency = {"download": 8}.get(q, 1)  # sized for a 2-core test machine
            self.spawn(q, ["celery", "-A", "workers", "worker", "-Q", q, "-P", spec.pool, "-c", str(concurrency),
                           "--prefetch-multiplier", str(spec.prefetch), "-n", f"{q}@it", "-l", "INFO",
                           "--without-gossip", "--without-mingle"])

    def start_beat(self) -> None:
        self.spawn("beat", ["celery", "-A", "workers", "beat", "-l", "INFO",
                            "--schedule", str(self.logs / "beat-schedule")])

    def kill(self, name: str, sig: int = signal.SIGTERM) -> None:
        proc = self.procs.get(name)
        if proc and proc.poll() is None:
            os.killpg(proc.pid, sig)

    def stop(self) -> None:
        for name in list(self.procs):
            self.kill(name)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)

    def log_tail(self, lines: int = 40) -> str:
        out = []
        for f in sorted(self.logs.glob("*.log")):
            out.append(f"--- {f.name}\n" + "\n".join(f.read_text(errors="replace").splitlines()[-lines:]))
        return "\n".join(out)


def make_stack(tmp_path: Path, pg_url: str, broker_url: str, sandbox_url: str, **overrides) -> Stack:
    from autodetect.db import upgrade
    from autodetect.settings import configure

    values = {
        "data_dir": str(tmp_path / "data"), "database_url": pg_url, "broker_url": broker_url,
        "source": "sandbox", "marketplace_url": sandbox_url,
        "download_allow_hosts": [sandbox_url.split("//")[1]],
        "backbone": "compact_cnn", "image_size": "48", "weights": "none", "min_photos_per_class": "10",
        "train_time_budget_s": "15", "train_epochs_head": "30", "retrain_min_new_photos": "100000",
        "retrain_min_new_share": "100", "crawl_interval_s": "3600", "retrain_check_interval_s": "3",
        "sweeper_interval_s": "2", "stale_after_s": "6", "inference_batch_size": "16",
        "inference_batch_wait_s": "0.1",
        # Short time limits and leases, and retries seconds apart, so lost work comes back in seconds.
        "task_margin_s": "5", "inference_batch_limit_s": "20", "inference_task_budget_s": "5",
        "dedup_photo_limit_s": "2", "download_total_timeout_s": "10", "retry_backoff_s": [1, 2, 4, 8],
        "retry_jitter": "0.1", "training_heartbeat_s": "2",
    }
    values.update(overrides)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTODETECT_")}
    env.update({f"AUTODETECT_{k.upper()}": json.dumps(v) if isinstance(v, list) else str(v) for k, v in values.items()})
    env["PYTHONPATH"] = str(ROOT)
    settings = configure(**{k: v for k, v in values.items()})
    upgrade(settings)
    logs = tmp_path / "logs"
    logs.mkdir()
    return Stack(env=env, settings=settings, logs=logs)


@pytest.fixture
def sandbox60():
    from autodetect.sandbox.marketplace import Marketplace
    from autodetect.sandbox.server import SandboxServer

    market = Marketplace(listings=60, models=3, seed=7)  # 11 relisted photos among them
    with SandboxServer(market) as server:
        yield server, market


def client_app(settings):
    """A Celery client in the test process, configured like the workers."""
    from workers.app import make_app

    return make_app()


def wait_for(predicate, timeout: float, stack: Stack, what: str, poll: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        for name, proc in stack.procs.items():
            if proc.poll() is not None and name != "flower":
                pytest.fail(f"{name} exited with {proc.returncode} while waiting for {what}\n{stack.log_tail()}")
        time.sleep(poll)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}\n{stack.log_tail()}")
