"""Tagging the catalogue: put unique photos back in the inference stage for a model version."""

from __future__ import annotations

from typing import Literal

from sqlalchemy import exists, func, select, update
from sqlalchemy.orm import Session

from autodetect.storage import Image, Prediction, Stage, State, utcnow

Mode = Literal["missing", "all"]


def queue_for_tagging(session: Session, mode: Mode, version_id: int) -> list[int]:
    """``missing``: unique photos without a prediction from ``version_id``; ``all``: every unique
    photo that is not in flight. Returns the ids now pending in the inference stage (including those
    that were pending already). A photo predicted by that version is never predicted again: the
    prediction's unique key makes a second write a no-op."""
    unique = (Image.duplicate_of_id.is_(None)) & (Image.stage == Stage.done.value) & (Image.state == State.done.value)
    if mode == "missing":
        has = exists().where(Prediction.image_id == Image.id, Prediction.model_version_id == version_id)
        unique = unique & ~has
    session.execute(update(Image).where(unique).values(stage=Stage.inference.value, state=State.pending.value,
                                                       updated_at=utcnow()))
    return list(session.execute(
        select(Image.id).where(Image.stage == Stage.inference.value, Image.state == State.pending.value)
        .order_by(Image.id)).scalars())


def tagging_progress(session: Session, version_id: int) -> tuple[int, int]:
    """(photos predicted by ``version_id``, unique photos that should be) for a progress bar."""
    total = session.execute(select(func.count()).select_from(Image).where(
        Image.duplicate_of_id.is_(None), Image.stage.in_((Stage.inference.value, Stage.done.value)),
        Image.state != State.failed.value)).scalar_one()
    done = session.execute(select(func.count()).select_from(Prediction)
                           .where(Prediction.model_version_id == version_id)).scalar_one()
    return done, total
