"""The last time each periodic job ran, on the database's clock (``storage.Beat``): the sweeper stamps
``sweep`` on every pass, and ``autodetect doctor`` reads it to tell whether beat is alive."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from autodetect.db import insert_stmt
from autodetect.storage import Beat

SWEEP = "sweep"


def stamp_beat(session: Session, name: str, at: datetime) -> None:
    """Record that ``name`` ran at ``at`` (one upsert; the last one written stands)."""
    stmt = insert_stmt(session, Beat).values(name=name, at=at)
    session.execute(stmt.on_conflict_do_update(index_elements=[Beat.name], set_={"at": stmt.excluded.at}))


def last_beat(session: Session, name: str) -> datetime | None:
    return session.execute(select(Beat.at).where(Beat.name == name)).scalar_one_or_none()
