"""The retraining trigger: the dataset snapshot, the decision whether to train (and why), and the
request for a run. Bounded: a run that failed is followed by a growing wait (``retry_backoff_s``), and
after ``training_max_failures`` failed runs on the same data the trigger holds until the data changes
(or someone asks with ``autodetect train --now``). The schema allows one pending or running run."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from autodetect.db import db_now, session_scope
from autodetect.model import registry
from autodetect.model.split import Sample
from autodetect.pipeline.dispatch import Dispatch
from autodetect.settings import Settings
from autodetect.storage import (
    CarClass,
    Image,
    Listing,
    ModelVersion,
    Stage,
    State,
    TrainingCheck,
    TrainingRun,
    VersionStatus,
)


# --- the dataset --------------------------------------------------------------------------------
def trainable_photos() -> tuple:
    """What a photo must be to train on, whatever its label: unique, stored, past dedup, not failed."""
    return (Image.duplicate_of_id.is_(None), Image.normalized_key.is_not(None),
            Image.stage.in_((Stage.inference.value, Stage.done.value)), Image.state != State.failed.value)


def labelled_samples(session: Session, settings: Settings) -> list[Sample]:
    """Every unique, labelled, stored photo not excluded from training (``training_exclusions``);
    listings joined by duplicate photos share one group, so no duplicate group can straddle the split."""
    rows = session.execute(
        select(Image.id, Image.normalized_key, CarClass.name, Image.listing_id)
        .join(Listing, Listing.id == Image.listing_id).join(CarClass, CarClass.id == Listing.class_id)
        .where(*trainable_photos(), Image.excluded_reason.is_(None))
        .order_by(Image.id)
    ).all()
    original = aliased(Image)
    edges = session.execute(
        select(Image.listing_id, original.listing_id).join(original, original.id == Image.duplicate_of_id)
    ).all()
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        while parent.get(x, x) != x:
            parent[x] = parent.get(parent[x], parent[x])
            x = parent[x]
        return x

    for a, b in edges:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    root = settings.data_dir / "images"
    return [Sample(path=str(root / key), label=name, group=f"g{find(listing)}", listing=f"l{listing}")
            for _, key, name, listing in rows]


# --- the trigger --------------------------------------------------------------------------------
@dataclass
class Decision:
    fire: bool
    trigger: str | None
    reason: str
    #: What the data looked like (labelled unique photos and classes), recorded on the run.
    data_key: str | None = None


def decide(session: Session, settings: Settings) -> Decision:
    """Whether to train now, and why; a firing decision is held back while failed runs back off."""
    samples = labelled_samples(session, settings)
    counts = Counter(s.label for s in samples)
    eligible = sorted(c for c, n in counts.items() if n >= settings.min_photos_per_class)
    data_key = f"{sum(counts[c] for c in eligible)} photos, {len(eligible)} classes"
    decision = _decide_on_data(session, settings, counts, eligible)
    if not decision.fire:
        return decision
    held = failure_hold(session, settings, data_key)
    if held:
        return Decision(False, None, held, data_key)
    decision.data_key = data_key
    return decision


def failure_hold(session: Session, settings: Settings, data_key: str) -> str | None:
    """Why the trigger must not fire yet after failed runs (None: it may): the runs that failed since
    the last one that finished, the newest first."""
    last_done = session.execute(select(func.max(TrainingRun.id)).where(TrainingRun.state == "done")).scalar()
    failed = session.execute(select(TrainingRun).where(TrainingRun.state == "failed",
                                                       TrainingRun.id > (last_done or 0))
                             .order_by(TrainingRun.id.desc())).scalars().all()
    if not failed:
        return None
    same = [r for r in failed if r.data_key == data_key]
    if len(same) >= settings.training_max_failures:
        return (f"{len(same)} runs failed on this data ({data_key}), the last with: {(same[0].error or '')[:120]}; "
                "waiting for new data or `autodetect train --now`")
    waits = settings.retry_backoff_s
    wait = timedelta(seconds=waits[min(len(failed), len(waits)) - 1])
    until = (failed[0].finished_at or failed[0].created_at) + wait
    if db_now(session) < until:
        return f"{len(failed)} failed run(s) since the last good one; next try after {until:%Y-%m-%d %H:%M:%S} UTC"
    return None


def _decide_on_data(session: Session, settings: Settings, counts: Counter, eligible: list[str]) -> Decision:
    active = registry.active_version(session)
    busy = session.execute(select(func.count()).select_from(TrainingRun)
                           .where(TrainingRun.state.in_(("pending", "running")))).scalar_one()
    if busy:
        return Decision(False, None, "a training run is already pending or running")
    if active is None:
        if len(eligible) >= 2:
            return Decision(True, "first", f"no model yet; {len(eligible)} classes have >= "
                                           f"{settings.min_photos_per_class} labelled unique photos ({sum(counts.values())} photos)")
        return Decision(False, None, f"no model yet; {len(eligible)} of the 2 classes needed have >= "
                                     f"{settings.min_photos_per_class} labelled unique photos")
    # Compare with the newest trained version, promoted or not: a rejected candidate already saw
    # these photos and classes, and retraining on the same data would loop.
    latest = session.execute(select(ModelVersion).where(ModelVersion.status != VersionStatus.failed.value)
                             .order_by(ModelVersion.id.desc()).limit(1)).scalar_one()
    new_classes = sorted(set(eligible) - set(latest.classes))
    if new_classes:
        return Decision(True, "new_class", f"{len(new_classes)} class(es) reached the minimum since {latest.name}: "
                                           f"{', '.join(new_classes[:5])}")
    known = int(latest.dataset.get("photos", 0))
    new = sum(counts[c] for c in eligible) - known
    needed = min(settings.retrain_min_new_photos, max(1, int(settings.retrain_min_new_share * known)))
    if new >= needed:
        return Decision(True, "new_photos", f"{new} new labelled unique photos since {latest.name} (threshold {needed})")
    return Decision(False, None, f"{new} new labelled unique photos since {latest.name}; threshold {needed}")


def request_run(session: Session, trigger: str, reason: str, params: dict[str, Any] | None = None,
                data_key: str | None = None) -> TrainingRun:
    """A pending run, or the one already pending or running (the schema allows only one)."""
    def open_run() -> TrainingRun | None:
        return session.execute(select(TrainingRun).where(TrainingRun.state.in_(("pending", "running")))
                               .order_by(TrainingRun.id)).scalars().first()

    existing = open_run()
    if existing is not None:
        return existing
    run = TrainingRun(trigger=trigger, reason=reason[:300], state="pending", params=params or {}, data_key=data_key)
    try:
        with session.begin_nested():
            session.add(run)
    except IntegrityError:  # another process asked at the same moment: theirs it is
        return open_run()
    return run


def check_retraining(settings: Settings, dispatch: Dispatch) -> tuple[Decision, int | None]:
    """The beat job: decide, record the decision with its reason, and queue a run if it fires."""
    with session_scope(settings) as s:
        decision = decide(s, settings)
        run_id = request_run(s, decision.trigger, decision.reason, data_key=decision.data_key).id \
            if decision.fire else None
        s.add(TrainingCheck(fire=decision.fire, trigger=decision.trigger, reason=decision.reason[:300],
                            training_run_id=run_id))
    if run_id is not None:
        dispatch("train", [run_id])
    return decision, run_id
