"""Claiming inference batches: pending photos move to ``running`` until their lease ends, with one
conditional UPDATE (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so several workers never claim the same
row). Photos never tried come first; a photo tried before only when due, and alone."""

from __future__ import annotations

import time
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from autodetect.db import db_now, session_scope
from autodetect.settings import Settings, get_settings
from autodetect.storage import Image, Stage, State


def claim(session: Session, limit: int, settings: Settings | None = None) -> list[int]:
    """Move up to ``limit`` pending inference rows to ``running`` until their lease ends. Photos never
    tried come first, lowest id first; a photo tried before (a failure, a lost worker) only when due,
    and alone, so a photo that fails or kills its worker holds back nobody but itself."""
    if limit <= 0:
        return []
    settings = settings or get_settings()
    now = db_now(session)
    waiting = (Image.stage == Stage.inference.value, Image.state == State.pending.value)
    ids = _claim_where(session, settings, now, limit, *waiting, Image.attempts == 0)
    return ids or _claim_where(session, settings, now, 1, *waiting, Image.attempts > 0, Image.next_attempt_at <= now)


def _claim_where(session: Session, settings: Settings, now, limit: int, *where) -> list[int]:
    pending = select(Image.id).where(*where).order_by(Image.id).limit(limit).with_for_update(skip_locked=True)
    lease = timedelta(seconds=settings.stage_lease_s(Stage.inference.value))
    return sorted(session.execute(
        update(Image).where(Image.id.in_(pending.scalar_subquery()))
        .values(state=State.running.value, lease_until=now + lease, updated_at=now).returning(Image.id)
    ).scalars())


def claim_batch(settings: Settings, *, wait: bool = True, session: Session | None = None) -> list[int]:
    """Claim up to ``inference_batch_size`` rows. Nothing pending: returns at once. A partial batch
    waits at most ``inference_batch_wait_s`` (from the first claim) for more rows to arrive. The first
    claim runs in ``session`` when given (committed by its owner)."""
    size = settings.inference_batch_size
    if session is not None:
        ids = claim(session, size, settings)
        session.commit()
    else:
        with session_scope(settings) as s:
            ids = claim(s, size, settings)
    if not ids or not wait:
        return ids
    deadline = time.monotonic() + settings.inference_batch_wait_s
    poll = max(0.05, settings.inference_batch_wait_s / 10)  # ~10 claims per wait, each a round trip
    while len(ids) < size:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        time.sleep(min(poll, left))
        with session_scope(settings) as s:
            ids += claim(s, size - len(ids), settings)
    return sorted(ids)
