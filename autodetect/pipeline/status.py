"""What the pipeline holds right now: counts per stage and state, the model, the trigger's reasons."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from autodetect.model.registry import active_version
from autodetect.pipeline.training_exclusions import excluded_counts
from autodetect.storage import (
    CarClass,
    Image,
    Listing,
    ListingPrediction,
    TrainingCheck,
    TrainingRun,
)


def pipeline_status(session: Session, *, suspects: int = 10) -> dict[str, Any]:
    listings = dict(session.execute(select(Listing.status, func.count()).group_by(Listing.status)).all())
    labelled = session.execute(select(func.count()).select_from(Listing).where(Listing.class_id.is_not(None))).scalar_one()
    stages = [
        {"stage": stage, "state": state, "photos": n}
        for stage, state, n in session.execute(
            select(Image.stage, Image.state, func.count()).group_by(Image.stage, Image.state).order_by(Image.stage, Image.state))
    ]
    duplicates = session.execute(select(func.count()).select_from(Image).where(Image.duplicate_of_id.is_not(None))).scalar_one()
    conflicts = session.execute(select(func.count()).select_from(Image).where(Image.label_conflict.is_(True))).scalar_one()
    errors = _reasons(session, Image.state == "failed")
    retrying = _reasons(session, Image.state == "pending", Image.attempts > 0)
    active = active_version(session)
    model = None
    tagged = 0
    suspect_rows: list[dict[str, Any]] = []
    if active is not None:
        model = {"name": active.name, "backbone": active.backbone, "classes": len(active.classes),
                 "metrics": {k: active.metrics.get(k) for k in ("top1", "top3", "top5", "mean_per_class", "listing_top1")},
                 "promoted_at": active.promoted_at.isoformat(timespec="seconds") if active.promoted_at else None}
        tagged = session.execute(select(func.count()).select_from(ListingPrediction)
                                 .where(ListingPrediction.model_version_id == active.id)).scalar_one()
        suspect_rows = [
            {"listing": lid, "title": title, "seller_label": label, "model_says": top, "probability": round(p, 3)}
            for lid, title, label, top, p in session.execute(
                select(Listing.id, Listing.title, CarClass.name, ListingPrediction.top_class,
                       ListingPrediction.top_probability)
                .join(ListingPrediction, ListingPrediction.listing_id == Listing.id)
                .join(CarClass, CarClass.id == Listing.class_id)
                .where(ListingPrediction.model_version_id == active.id, ListingPrediction.mismatch.is_(True))
                .order_by(ListingPrediction.top_probability.desc()).limit(suspects))
        ]
    check = session.execute(select(TrainingCheck).order_by(TrainingCheck.id.desc()).limit(1)).scalar_one_or_none()
    fired = session.execute(select(TrainingCheck).where(TrainingCheck.fire.is_(True))
                            .order_by(TrainingCheck.id.desc()).limit(1)).scalar_one_or_none()
    runs = [
        {"id": r.id, "trigger": r.trigger, "state": r.state, "reason": r.reason, "outcome": r.outcome, "error": r.error}
        for r in session.execute(select(TrainingRun).order_by(TrainingRun.id.desc()).limit(5)).scalars()
    ]
    return {
        "listings": {"total": sum(listings.values()), **listings, "labelled": labelled, "tagged": tagged},
        "photos": stages,
        "duplicates": duplicates,
        "label_conflicts": conflicts,
        "excluded_from_training": excluded_counts(session),
        "errors": errors,
        "retrying": retrying,
        "model": model,
        "last_check": check and {"at": check.at.isoformat(timespec="seconds"), "fire": check.fire, "reason": check.reason},
        "last_trigger": fired and {"at": fired.at.isoformat(timespec="seconds"), "trigger": fired.trigger,
                                   "reason": fired.reason},
        "training_runs": runs,
        "suspects": suspect_rows,
    }


def _reasons(session: Session, *where, limit: int = 8) -> list[dict[str, Any]]:
    """The most common reasons among the photos matching ``where``, per stage, with their counts."""
    return [
        {"stage": stage, "error": e, "photos": n}
        for stage, e, n in session.execute(
            select(Image.stage, Image.error, func.count()).where(*where).group_by(Image.stage, Image.error)
            .order_by(func.count().desc()).limit(limit))
    ]
