"""Tagging the catalogue: every unique photo predicted by a model version, through the inference queue.

The active version (the usual case, and the re-tag after a promotion) goes through the pipeline's own
state machine: unique photos are put back in the inference stage (``pending``), in chunks of
``tag_chunk_size`` rows per transaction, and one message per ``inference_batch_size`` rows is sent
after each chunk commits. Workers claim and predict them like any new photo; the sweeper re-sends
rows whose message was lost. A non-active version (``autodetect tag --model v3``) leaves the photos'
pipeline state alone: its messages carry the photo ids and the version.

Resumable and idempotent: a photo that already has a prediction from the version is never run through
the model again (``--missing`` does not even queue it; ``--all`` queues it and the worker marks it done
at once), and the unique key on (photo, version) makes a second write a no-op. So an interrupted tag
is finished by running it again. ``tagging_progress`` counts from the database, for a progress bar.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from sqlalchemy import and_, exists, func, or_, select, update
from sqlalchemy.orm import Session

from autodetect.db import db_now, session_scope
from autodetect.pipeline.dispatch import Dispatch, no_dispatch
from autodetect.settings import Settings
from autodetect.storage import (
    Image,
    ModelVersion,
    Prediction,
    Stage,
    State,
    VersionStatus,
)

Mode = Literal["missing", "all"]
#: Sends photo ids to be predicted by a given (non-active) version: ``send(version_id, ids)``.
SendIds = Callable[[int, Sequence[int]], None]


class TaggingError(Exception):
    pass


def _unique():
    """Unique photos that went through dedup (duplicates reuse their original's prediction)."""
    return Image.duplicate_of_id.is_(None) & Image.stage.in_((Stage.inference.value, Stage.done.value))


def _has_prediction(version_id: int):
    return exists().where(Prediction.image_id == Image.id, Prediction.model_version_id == version_id)


def _taggable(mode: Mode, version_id: int):
    """Rows ``queue_for_tagging`` moves to ``pending``: ``missing``: done photos without a prediction
    from the version; ``all``: every done photo, and the photos whose inference failed (a retry)."""
    done = (Image.stage == Stage.done.value) & (Image.state == State.done.value)
    if mode == "missing":
        return Image.duplicate_of_id.is_(None) & done & ~_has_prediction(version_id)
    failed = (Image.stage == Stage.inference.value) & (Image.state == State.failed.value)
    return Image.duplicate_of_id.is_(None) & or_(done, failed)


def queue_for_tagging(session: Session, mode: Mode, version_id: int, *, id_range: tuple[int, int] | None = None,
                      due_in_s: float = 300.0) -> list[int]:
    """Put the photos that ``mode`` selects back in the inference stage (``pending``, attempts from
    zero, sent again by the sweeper if still waiting in ``due_in_s``); returns the ids now pending in
    the inference stage (including those pending already), within ``id_range`` (inclusive) if given.
    Rows in flight (``running``) are left to their batch or the sweeper."""
    where = _taggable(mode, version_id)
    pending = (Image.stage == Stage.inference.value) & (Image.state == State.pending.value)
    if id_range is not None:
        in_range = Image.id.between(*id_range)
        where, pending = where & in_range, pending & in_range
    now = db_now(session)
    session.execute(update(Image).where(where).values(stage=Stage.inference.value, state=State.pending.value,
                                                      error=None, attempts=0, lease_until=None, updated_at=now,
                                                      next_attempt_at=now + timedelta(seconds=due_in_s)))
    return list(session.execute(select(Image.id).where(pending).order_by(Image.id)).scalars())


def resolve_version(session: Session, ref: str | int | None) -> ModelVersion:
    """The version named/numbered ``ref``, or the active one."""
    from autodetect.model.registry import RegistryError, active_version, find_version

    if ref is None:
        version = active_version(session)
        if version is None:
            raise TaggingError("no active model yet: train one first (`autodetect train --now`)")
        return version
    try:
        version = find_version(session, ref)
    except RegistryError as exc:
        raise TaggingError(str(exc)) from exc
    if version.status == VersionStatus.failed.value or not (version.artifacts or {}).get("dir"):
        raise TaggingError(f"{version.name} has no usable model ({version.status})")
    return version


@dataclass
class TaggingPlan:
    version_id: int
    version: str
    active: bool  # through the pipeline's states (else: ids sent with the version)
    mode: Mode
    queued: int = 0  # photos queued (pending, or sent with the version)
    messages: int = 0


def start_tagging(settings: Settings, mode: Mode, version: str | int | None = None, *,
                  dispatch: Dispatch = no_dispatch, send: SendIds | None = None) -> TaggingPlan:
    """Queue the catalogue for tagging with ``version`` (default: the active one), chunk by chunk,
    each chunk dispatched after it commits. With the default ``no_dispatch`` nothing is sent (the
    caller runs the work itself: ``tag_here``)."""
    with session_scope(settings) as s:
        v = resolve_version(s, version)
        plan = TaggingPlan(v.id, v.name, v.status == VersionStatus.active.value, mode)
        ids = list(s.scalars(select(Image.id).where(_unique()).order_by(Image.id)))
    batch = max(1, settings.inference_batch_size)
    for start in range(0, len(ids), max(1, settings.tag_chunk_size)):
        lo, hi = ids[start], ids[min(start + settings.tag_chunk_size, len(ids)) - 1]
        with session_scope(settings) as s:
            if plan.active:
                chunk = queue_for_tagging(s, mode, plan.version_id, id_range=(lo, hi), due_in_s=settings.stale_after_s)
            else:
                chunk = _missing_ids(s, mode, plan.version_id, (lo, hi))
        if not chunk:
            continue
        plan.queued += len(chunk)
        plan.messages += -(-len(chunk) // batch)
        if plan.active:
            dispatch(Stage.inference, chunk)
        elif send is not None:
            send(plan.version_id, chunk)
    return plan


def _missing_ids(session: Session, mode: Mode, version_id: int, id_range: tuple[int, int]) -> list[int]:
    """For a non-active version: unique photos without its prediction (``all``: failed ones too)."""
    states = [State.done.value, State.pending.value, State.running.value]
    if mode == "all":
        states.append(State.failed.value)
    return list(session.scalars(select(Image.id).where(
        _unique(), Image.state.in_(states), Image.id.between(*id_range), ~_has_prediction(version_id))
        .order_by(Image.id)))


def tag_here(settings: Settings, plan: TaggingPlan, provider=None) -> Iterator:
    """Do the queued work in this process, one batch per step (the embedded default has no separate
    workers; tests). Yields each ``inference.BatchResult``; stops when nothing is left."""
    from autodetect.model.provider import ModelProvider
    from autodetect.pipeline.inference import predict_batch, predict_images

    provider = provider or ModelProvider(settings)
    if plan.active:
        while True:
            result = predict_batch(settings, provider, wait=False)
            if result.claimed == 0 and not result.requeued:
                if result.errors:
                    raise TaggingError(result.errors[0])
                return
            yield result
    with session_scope(settings) as s:
        model = provider.for_version(s, plan.version_id)
        ids = _missing_ids(s, plan.mode, plan.version_id, (0, 2**62))
    batch = max(1, settings.inference_batch_size)
    for start in range(0, len(ids), batch):
        yield predict_images(settings, model, ids[start:start + batch])


def tagging_progress(session: Session, version_id: int) -> tuple[int, int]:
    """(unique photos predicted by ``version_id``, unique photos that should be) for a progress bar.
    Photos whose inference failed count in neither."""
    eligible = _unique() & (Image.state != State.failed.value)
    total = session.execute(select(func.count()).select_from(Image).where(eligible)).scalar_one()
    done = session.execute(select(func.count()).select_from(Image).where(
        and_(eligible, _has_prediction(version_id)))).scalar_one()
    return done, total


def tagging_failures(session: Session) -> int:
    """Unique photos whose inference failed (the error is on the row; ``tag --all`` retries them)."""
    return session.execute(select(func.count()).select_from(Image).where(
        Image.duplicate_of_id.is_(None), Image.stage == Stage.inference.value,
        Image.state == State.failed.value)).scalar_one()
