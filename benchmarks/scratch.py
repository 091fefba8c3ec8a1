"""Shared by the scripts here: a scratch PostgreSQL database for one benchmark run, dropped afterwards, and
the environment of the Celery workers a benchmark starts."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def scratch_postgres(url: str, prefix: str = "autodetect_bench") -> Iterator[str]:
    """A fresh database on the server of ``url``; yields its URL and drops it afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(url).set(database=name).render_as_string(hide_password=False)
    finally:
        from autodetect.db import forget_engines

        forget_engines()  # the run's pooled connections must not hold the database open
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def worker_env(values: dict) -> dict[str, str]:
    """The environment of a worker process: ours without any ``AUTODETECT_*``, then ``values`` as settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTODETECT_")}
    env.update({f"AUTODETECT_{k.upper()}": json.dumps(v) if isinstance(v, list) else str(v) for k, v in values.items()})
    env["PYTHONPATH"] = str(ROOT)
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    return env
