"""Retraining: the trigger's decision, the dataset snapshot, and a run that trains, evaluates,
registers and promotes a candidate only if it matches or beats the active version on the same test set.

TensorFlow is imported only inside ``run_training`` (the training worker, after fork)."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, aliased

from autodetect.model import registry
from autodetect.db import session_scope
from autodetect.model.split import Sample, Split, select_classes, split_samples
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
    utcnow,
)
from autodetect.pipeline.tagging import queue_for_tagging

log = logging.getLogger(__name__)


# --- the dataset --------------------------------------------------------------------------------
def labelled_samples(session: Session, settings: Settings) -> list[Sample]:
    """Every unique, labelled, stored photo; listings joined by duplicate photos share one group,
    so no duplicate group can straddle the split."""
    rows = session.execute(
        select(Image.id, Image.normalized_key, CarClass.name, Image.listing_id)
        .join(Listing, Listing.id == Image.listing_id).join(CarClass, CarClass.id == Listing.class_id)
        .where(Image.duplicate_of_id.is_(None), Image.normalized_key.is_not(None),
               Image.stage.in_((Stage.inference.value, Stage.done.value)), Image.state != State.failed.value)
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


def decide(session: Session, settings: Settings) -> Decision:
    samples = labelled_samples(session, settings)
    counts = Counter(s.label for s in samples)
    eligible = sorted(c for c, n in counts.items() if n >= settings.min_photos_per_class)
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


def request_run(session: Session, trigger: str, reason: str, params: dict[str, Any] | None = None) -> TrainingRun:
    existing = session.execute(select(TrainingRun).where(TrainingRun.state.in_(("pending", "running")))
                               .order_by(TrainingRun.id)).scalars().first()
    if existing is not None:
        return existing
    run = TrainingRun(trigger=trigger, reason=reason[:300], state="pending", params=params or {})
    session.add(run)
    session.flush()
    return run


def check_retraining(settings: Settings, dispatch: Dispatch) -> tuple[Decision, int | None]:
    """The beat job: decide, record the decision with its reason, and queue a run if it fires."""
    with session_scope(settings) as s:
        decision = decide(s, settings)
        run_id = request_run(s, decision.trigger, decision.reason).id if decision.fire else None
        s.add(TrainingCheck(fire=decision.fire, trigger=decision.trigger, reason=decision.reason[:300],
                            training_run_id=run_id))
    if run_id is not None:
        dispatch("train", [run_id])
    return decision, run_id


# --- the run ------------------------------------------------------------------------------------
def train_config(settings: Settings, params: dict[str, Any]):
    from autodetect.model.train import TrainConfig

    return TrainConfig(
        backbone=params.get("backbone", settings.backbone), image_size=params.get("image_size", settings.image_size),
        weights=params.get("weights", settings.weights), epochs_head=settings.train_epochs_head,
        epochs_finetune=settings.train_epochs_finetune, fine_tune_layers=settings.train_fine_tune_layers,
        batch_size=settings.train_batch_size, seed=settings.train_seed, patience=settings.train_patience,
        time_budget_s=params.get("time_budget_s", settings.train_time_budget_s),
    )


def run_training(settings: Settings, run_id: int, dispatch: Dispatch,
                 progress: Callable[[dict], None] | None = None) -> dict[str, Any]:
    """Train a candidate for run ``run_id`` and promote it if it is at least as good. Idempotent:
    a run that is not pending (already running elsewhere, or finished) is left alone."""
    with session_scope(settings) as s:
        claimed = s.execute(update(TrainingRun).where(TrainingRun.id == run_id, TrainingRun.state == "pending")
                            .values(state="running", started_at=utcnow()).returning(TrainingRun.params)).first()
        if claimed is None:
            return {"skipped": True}
        params = dict(claimed[0] or {})
        samples = None if params.get("images") else labelled_samples(s, settings)
    try:
        if samples is None:  # a folder of DIR/<class>/<photo> (``autodetect train --images DIR``)
            from autodetect.model.folder_dataset import scan_folder

            samples = scan_folder(settings, Path(params["images"])).samples
        outcome = _train_and_register(settings, run_id, samples, params, progress)
    except Exception as exc:
        with session_scope(settings) as s:
            s.execute(update(TrainingRun).where(TrainingRun.id == run_id)
                      .values(state="failed", error=f"{type(exc).__name__}: {exc}"[:2000], finished_at=utcnow()))
        raise
    if outcome.get("promoted") and settings.retag_on_promote:
        with session_scope(settings) as s:
            ids = queue_for_tagging(s, "missing", outcome["version_id"])
        dispatch(Stage.inference, ids)
        outcome["retagging"] = len(ids)
    return outcome


class NotEnoughData(Exception):
    pass


def _train_and_register(settings: Settings, run_id: int, samples: list[Sample], params: dict[str, Any],
                        progress: Callable[[dict], None] | None) -> dict[str, Any]:
    from autodetect.model.train import train  # TensorFlow: loaded first, before the run's clock starts

    min_photos = int(params.get("min_photos", settings.min_photos_per_class))
    kept, dropped = select_classes(samples, min_photos)
    split = split_samples(kept, seed=settings.train_seed)
    if len(split.classes) < 2:
        raise NotEnoughData(f"{len(split.classes)} class(es) with >= {min_photos} photos; at least 2 are needed")
    config = train_config(settings, params)
    with session_scope(settings) as s:
        name = registry.next_name(s)
    out = settings.data_dir / "models" / name
    if out.exists():
        shutil.rmtree(out)  # a half-written directory from an interrupted run
    out.mkdir(parents=True)
    started = time.perf_counter()
    metrics = _train_candidate(train, split, config, name, out, progress)
    with session_scope(settings) as s:
        version = ModelVersion(
            name=name, backbone=config.backbone, image_size=config.image_size, classes=split.classes,
            metrics=metrics, status=VersionStatus.candidate.value,
            dataset={"photos": len(kept), "train": len(split.train), "val": len(split.val), "test": len(split.test),
                     "classes": len(split.classes), "dropped_classes": dropped,
                     "test_listings": sorted({x.listing for x in split.test})},
            artifacts={"dir": str(out.relative_to(settings.data_dir)), "keras": "model.keras", "tflite": "model.tflite",
                       "confusion": "confusion.png"},
        )
        decision = _register(s, settings, run_id, version, split)
    log.info("trained %s in %.0fs: top-1 %.3f top-3 %.3f -> %s", name, time.perf_counter() - started,
             metrics.get("top1", 0), metrics.get("top3", 0), "promoted" if decision["promoted"] else "kept the incumbent")
    return {"version_id": version.id, "version": name, "metrics": metrics, **decision}


def _train_candidate(train: Callable, split: Split, config, name: str, out: Path,
                     progress: Callable[[dict], None] | None) -> dict[str, Any]:
    """Train a candidate into ``out`` and export it (LiteRT, labels, confusion plot); its metrics on the
    held-out test listings, with the training's speed and length."""
    from autodetect.model.bundle import load_serving, save_labels
    from autodetect.model.evaluate import evaluate, plot_confusion
    from autodetect.model.export import export_tflite

    result = train(split.train, split.val, split.classes, config, out, progress=progress)
    export_tflite(result.keras_path, out / "model.tflite")
    save_labels(out, split.classes, backbone=config.backbone, image_size=config.image_size)
    serving = load_serving(out, prefer=("tflite",))
    evaluation = evaluate(serving.predict, split.test, split.classes, image_size=config.image_size)
    plot_confusion(evaluation, split.classes, out / "confusion.png", title=f"{name}: held-out test listings")
    metrics = evaluation.to_dict()
    metrics.update(train_images_per_s=round(result.train_images_per_s, 1), train_seconds=round(result.seconds, 1),
                   epochs=result.epochs_run)
    return metrics


def _register(session: Session, settings: Settings, run_id: int, version: ModelVersion, split: Split) -> dict[str, Any]:
    """Register the candidate ``version``, promote it if it matches or beats the active version on the same
    test set (else it is rejected), and record the run's outcome; returns the decision."""
    metrics = version.metrics
    active = registry.active_version(session)
    incumbent = _incumbent_metrics(settings, active, split) if active is not None else None
    session.add(version)
    session.flush()
    promoted = registry.is_better(metrics, incumbent)
    if promoted:
        registry.promote(session, version)
    else:
        version.status = VersionStatus.rejected.value
    decision = {"promoted": promoted, "candidate": {k: metrics.get(k) for k in ("top1", "top3", "mean_per_class")},
                "incumbent": incumbent and {k: incumbent.get(k) for k in ("top1", "top3", "mean_per_class")},
                "incumbent_name": active.name if active else None}
    session.execute(update(TrainingRun).where(TrainingRun.id == run_id).values(
        state="done", finished_at=utcnow(), model_version_id=version.id, outcome=decision))
    return decision


def _incumbent_metrics(settings: Settings, active: ModelVersion, split: Split) -> dict[str, Any] | None:
    """The active version's metrics on the candidate's test set; None when it cannot be evaluated."""
    from autodetect.model.bundle import load_serving
    from autodetect.model.evaluate import evaluate

    try:
        model = load_serving(settings.data_dir / active.artifacts["dir"])
        return evaluate(model.predict, split.test, list(active.classes), image_size=active.image_size).to_dict()
    except Exception as exc:  # noqa: BLE001 - a broken incumbent loses to any working candidate
        log.warning("cannot evaluate the active version %s: %s", active.name, exc)
        return None
