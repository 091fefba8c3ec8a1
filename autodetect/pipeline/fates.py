"""Bounded fates: what happens to a photo whose work in a stage failed, whatever the failure.

Every failure is counted on the photo's row (``attempts``) with a short reason: the exception's type
and message, free of secrets. Then one of three fates:

- **permanent** (the photo itself is the problem: 404/410, not an image, refused by the guard):
  ``failed`` at once;
- **transient** (timeouts, refused connections, 5xx, 429, a full disk, a database hiccup, and any
  error we do not recognise, which may be a poison photo or a passing fault): ``pending`` again, due
  after the next wait of ``retry_backoff_s`` (with jitter, ``Retry-After`` honoured up to a cap);
- past ``max_attempts`` tries in the stage: ``failed``, with the last reason.

A pending row is due at ``next_attempt_at``: the sweeper sends it then. A running row is claimed
until ``lease_until`` (the stage's time limit): a claim is a conditional update from ``pending``, so a
second delivery of a message whose rows are being worked on finds nothing to do. A claim whose lease
ran out was lost (its worker died): the sweeper counts that as an attempt like any other failure.
"""

from __future__ import annotations

import errno
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, update
from sqlalchemy.orm import Session

from autodetect.db import db_now
from autodetect.settings import Settings
from autodetect.storage import Image, State

_images = Image.__table__

#: Errors of the filesystem that pass when an operator frees space or a mount returns.
_TRANSIENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.EAGAIN, errno.ENOMEM}
_USERINFO = re.compile(r"(\w+://)[^/@\s:]+:[^/@\s]+@")


@dataclass(frozen=True)
class Failure:
    """One photo's failed try: why, and whether trying again may help."""

    image_id: int
    reason: str
    permanent: bool = False
    retry_after: float | None = None


def describe(exc: BaseException) -> str:
    """``Type: message``, at most 300 characters, with passwords in URLs masked. Our own errors
    (fetch, decode) carry a ``reason`` that is already short and readable: it is used as it is."""
    own = getattr(exc, "reason", None)
    if isinstance(own, str) and own:
        text = own
    else:
        message = " ".join(str(exc).split()) or "(no message)"
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            message = f"no space left on the device ({message})"
        text = f"{type(exc).__name__}: {message}"
    text = _USERINFO.sub(r"\1***@", text)
    return text if len(text) <= 300 else text[:297] + "..."


def failure_of(image_id: int, exc: BaseException) -> Failure:
    """The failure of one photo from the exception its try raised."""
    permanent = bool(getattr(exc, "permanent", False))
    if isinstance(exc, OSError) and exc.errno in _TRANSIENT_ERRNOS:
        permanent = False
    return Failure(int(image_id), describe(exc), permanent, getattr(exc, "retry_after", None))


def retry_delay(settings: Settings, attempts: int, retry_after: float | None = None,
                rng: random.Random | None = None) -> float:
    """Seconds before the next try of a photo that has failed ``attempts`` times (1 for the first)."""
    waits = settings.retry_backoff_s
    wait = waits[min(max(attempts, 1), len(waits)) - 1]
    jitter = settings.retry_jitter
    delay = wait * (1 + (rng or random).uniform(-jitter, jitter))
    if retry_after is not None and retry_after > 0:
        delay = max(delay, min(retry_after, settings.retry_after_cap_s))
    return delay


def record_failures(session: Session, settings: Settings, stage: str, failures: Sequence[Failure],
                    attempts_before: dict[int, int], now: datetime | None = None) -> dict[int, str]:
    """Count each failure on its row (still in ``stage``) and decide its fate. Returns the ids that
    are now ``failed`` for good, with their reasons; the others are pending with a due time.
    ``now``: the database's clock, when the caller has read it already."""
    if not failures:
        return {}
    now = now or db_now(session)
    final: dict[int, str] = {}
    params = []
    for f in failures:
        tries = attempts_before.get(f.image_id, 0) + 1
        gives_up = f.permanent or tries >= settings.max_attempts
        if gives_up:
            final[f.image_id] = f.reason
        delay = 0.0 if gives_up else retry_delay(settings, tries, f.retry_after)
        params.append({"b_id": f.image_id, "b_state": State.failed.value if gives_up else State.pending.value,
                       "b_error": f.reason, "b_next": now + timedelta(seconds=delay)})
    session.execute(
        update(_images)
        .where(_images.c.id == bindparam("b_id"), _images.c.stage == stage)
        .values(state=bindparam("b_state"), error=bindparam("b_error"), attempts=_images.c.attempts + 1,
                lease_until=None, updated_at=now, next_attempt_at=bindparam("b_next")),
        params)
    return final


def claim_rows(session: Session, settings: Settings, stage: str, ids: Sequence[int], *columns):
    """Move the ``pending`` rows of ``ids`` in ``stage`` to ``running`` until the stage's lease ends,
    returning ``columns`` of the rows claimed. Rows already running, done or failed are not claimed:
    a second delivery of a message finds nothing to do while the first is at work."""
    lease = timedelta(seconds=settings.stage_lease_s(stage))
    now = db_now(session)
    claimed = session.execute(
        update(_images)
        .where(_images.c.id.in_(sorted({int(i) for i in ids})), _images.c.stage == stage,
               _images.c.state == State.pending.value)
        .values(state=State.running.value, lease_until=now + lease, updated_at=now)
        .returning(_images.c.id, *columns)
    ).all()
    return sorted(claimed, key=lambda row: row.id)


def moved_on(settings: Settings, next_stage: str, now: datetime) -> dict:
    """``SET`` values of a photo that finished its stage at ``now`` (the database's clock) and waits in
    ``next_stage``: a fresh count of attempts, no reason, no claim, due for the sweeper in
    ``stale_after_s`` in case the message that announces it is lost."""
    return {"stage": next_stage, "state": State.pending.value, "attempts": 0, "error": None, "lease_until": None,
            "updated_at": now, "next_attempt_at": now + timedelta(seconds=settings.stale_after_s)}


def retry_failed(session: Session, settings: Settings, *, stage: str | None = None,
                 reason: str | None = None) -> dict[str, list[int]]:
    """Put ``failed`` photos back (``autodetect retry``): pending in their stage, attempts from zero,
    sent now (and by the sweeper after ``stale_after_s`` if that message is lost). ``stage`` and
    ``reason`` (a part of the stored reason) narrow the choice. Returns the ids per stage."""
    now = db_now(session)
    where = [_images.c.state == State.failed.value]
    if stage:
        where.append(_images.c.stage == stage)
    if reason:
        where.append(_images.c.error.contains(reason, autoescape=True))
    rows = session.execute(
        update(_images).where(*where)
        .values(state=State.pending.value, attempts=0, error=None, lease_until=None, updated_at=now,
                next_attempt_at=now + timedelta(seconds=settings.stale_after_s))
        .returning(_images.c.id, _images.c.stage)
    ).all()
    out: dict[str, list[int]] = {}
    for row in rows:
        out.setdefault(row.stage, []).append(row.id)
    return {k: sorted(v) for k, v in out.items()}
