"""The sweeper: rows stuck in a stage past a timeout are put back and re-dispatched, so a lost
message (a flushed broker, a killed worker) never loses work. Every stage is idempotent, so a
re-dispatched row that was merely slow is harmless."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update

from autodetect.db import session_scope
from autodetect.pipeline.dispatch import Dispatch
from autodetect.model.registry import active_version
from autodetect.settings import Settings
from autodetect.storage import Image, Stage, State, TrainingRun, utcnow


def sweep(settings: Settings, dispatch: Dispatch) -> dict[str, int]:
    cutoff = utcnow() - timedelta(seconds=settings.stale_after_s)
    found: dict[str, list[int]] = {}
    with session_scope(settings) as s:
        # Inference batches whose worker died: back to pending.
        s.execute(update(Image).where(Image.stage == Stage.inference.value, Image.state == State.running.value,
                                      Image.updated_at < cutoff).values(state=State.pending.value))
        stages = [Stage.download, Stage.dedup]
        if active_version(s) is not None:
            stages.append(Stage.inference)
        for stage in stages:
            ids = list(s.execute(
                update(Image).where(Image.stage == stage.value, Image.state == State.pending.value,
                                    Image.updated_at < cutoff)
                .values(updated_at=utcnow()).returning(Image.id)).scalars())
            if ids:
                found[stage.value] = sorted(ids)
        # A training run whose worker died mid-run: pending again.
        s.execute(update(TrainingRun).where(
            TrainingRun.state == "running",
            TrainingRun.started_at < utcnow() - timedelta(seconds=settings.training_time_limit_s + 60),
        ).values(state="pending", error="re-queued: the worker running it stopped answering"))
        runs = list(s.execute(select(TrainingRun.id).where(TrainingRun.state == "pending",
                                                           TrainingRun.created_at < cutoff)).scalars())
        if runs:
            found["train"] = runs
    for stage, ids in found.items():
        dispatch(stage, ids)
    return {stage: len(ids) for stage, ids in found.items()}
