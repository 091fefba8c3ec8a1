"""The sweeper: lost work goes back on its queue, and only lost work.

Every photo row says where it stands (see ``autodetect.pipeline.fates``), on the database's clock:

- a **running** photo whose ``lease_until`` has passed was lost with its worker (killed, out of
  memory, a native crash): that counts as a failed attempt, and it is sent again alone, so that a
  photo that kills its worker can only take itself down, ``max_attempts`` times at most;
- a **pending** photo whose ``next_attempt_at`` has passed is sent: its backoff after a failure is
  over, or its message was lost (a flushed broker; sent again every ``stale_after_s`` until taken);
- a running photo inside its lease, or a pending one not yet due, is left alone: it is queued or
  being worked on.

Training runs hold a heartbeat instead of a lease (a run may be long): one whose heartbeat stopped is
put back ``training_max_requeues`` times, then ``failed``. Every stage is idempotent, so a row sent
twice is harmless.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from autodetect.beats import SWEEP, stamp_beat
from autodetect.db import db_now, session_scope
from autodetect.model.registry import active_version
from autodetect.pipeline.dispatch import Dispatch
from autodetect.pipeline.fates import Failure, record_failures
from autodetect.settings import Settings
from autodetect.storage import Image, Stage, State, TrainingRun

#: Rows sent again per stage and sweep, at most (a backlog is worked down over several sweeps).
SWEEP_LIMIT = 5000
LOST = "lost: its worker stopped while working on it (killed, out of memory or crashed)"
_STAGES = (Stage.download.value, Stage.dedup.value, Stage.inference.value)


def sweep(settings: Settings, dispatch: Dispatch) -> dict[str, int]:
    """One pass: reclaim lost claims, re-send due rows and dead training runs. Returns counts."""
    with session_scope(settings) as s:
        now = db_now(s)
        lost = reclaim_lost_claims(s, settings, now)
        stages = list(_STAGES) if active_version(s) is not None else list(_STAGES[:2])
        due = {stage: _take_due(s, settings, stage, now) for stage in stages}
        runs = _sweep_training_runs(s, settings, now)
        stamp_beat(s, SWEEP, now)
    counts: dict[str, int] = {"lost": lost} if lost else {}
    for stage, rows in due.items():
        fresh = [i for i, attempts in rows if attempts == 0]
        if fresh:
            dispatch(stage, fresh)
        for i, attempts in rows:  # tried before: alone, so one poison photo cannot take a batch down
            if attempts:
                dispatch(stage, [i])
        if rows:
            counts[stage] = len(rows)
    if runs:
        dispatch("train", runs)
        counts["train"] = len(runs)
    return counts


def reclaim_lost_claims(session: Session, settings: Settings, now: datetime) -> int:
    """Running photos whose lease ran out: a failed attempt each (``failed`` past ``max_attempts``)."""
    rows = session.execute(
        select(Image.id, Image.stage, Image.attempts)
        .where(Image.state == State.running.value, Image.lease_until <= now)
        .limit(SWEEP_LIMIT).with_for_update(skip_locked=True)
    ).all()
    for stage in {r.stage for r in rows}:
        mine = [r for r in rows if r.stage == stage]
        record_failures(session, settings, stage, [Failure(r.id, LOST) for r in mine],
                        {r.id: r.attempts for r in mine}, now)
    return len(rows)


def _take_due(session: Session, settings: Settings, stage: str, now: datetime) -> list[tuple[int, int]]:
    """Pending rows of ``stage`` to send, with their attempts: due (``next_attempt_at`` passed) and
    either not sent since they became due, or sent more than ``stale_after_s`` ago (that message
    was lost). Sending stamps ``updated_at``; ``next_attempt_at`` stays, so a claim can still tell a
    due row from one in backoff."""
    lost_before = now - timedelta(seconds=settings.stale_after_s)
    due = (select(Image.id).where(Image.stage == stage, Image.state == State.pending.value,
                                  Image.next_attempt_at <= now,
                                  or_(Image.updated_at < Image.next_attempt_at, Image.updated_at <= lost_before))
           .order_by(Image.next_attempt_at).limit(SWEEP_LIMIT).with_for_update(skip_locked=True))
    rows = session.execute(
        update(Image).where(Image.id.in_(due.scalar_subquery())).values(updated_at=now)
        .returning(Image.id, Image.attempts)
    ).all()
    return sorted((r.id, r.attempts) for r in rows)


def _sweep_training_runs(session: Session, settings: Settings, now: datetime) -> list[int]:
    """Runs whose heartbeat stopped go back to pending (a bounded number of times); pending runs
    whose message may be lost are returned to be sent again."""
    silent = now - timedelta(seconds=4 * settings.training_heartbeat_s)
    dead = and_(TrainingRun.state == "running",
                or_(TrainingRun.heartbeat_at < silent,
                    and_(TrainingRun.heartbeat_at.is_(None), TrainingRun.started_at < silent)))
    session.execute(update(TrainingRun).where(dead, TrainingRun.requeues >= settings.training_max_requeues).values(
        state="failed", finished_at=now,
        error=f"lost: its worker stopped answering {settings.training_max_requeues + 1} times"))
    requeued = session.execute(update(TrainingRun).where(dead).values(
        state="pending", requeues=TrainingRun.requeues + 1,
        error="re-queued: the worker running it stopped answering").returning(TrainingRun.id)).scalars().all()
    cutoff = now - timedelta(seconds=settings.stale_after_s)
    waiting = session.execute(select(TrainingRun.id).where(TrainingRun.state == "pending",
                                                           TrainingRun.created_at < cutoff)).scalars().all()
    return sorted({*requeued, *waiting})
