"""A scratch PostgreSQL database for one benchmark run, dropped afterwards (shared by the scripts here)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url


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
