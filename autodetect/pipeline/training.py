"""A training run: train, evaluate, register, and promote the candidate only if it matches or beats
the active version on the same test set (the trigger that asks for runs: ``retraining``).

The run holds a heartbeat (``heartbeat_at``, every ``training_heartbeat_s``) while it works, whether a
worker or the command line runs it, so the sweeper never takes a live run and does take a dead one.
Its version is named after the run's id (allocated by the database). A run that raises is ``failed``
with its reason; the trigger backs off before trying again.

TensorFlow is imported only inside ``run_training`` (the training worker, after fork)."""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from autodetect.db import db_now, session_scope
from autodetect.model import registry
from autodetect.model.split import Sample, Split, select_classes, split_samples
from autodetect.pipeline.dispatch import Dispatch
from autodetect.pipeline.fates import describe
from autodetect.pipeline.retraining import labelled_samples
from autodetect.pipeline.tagging import queue_for_tagging
from autodetect.pipeline.training_exclusions import review_training_photos
from autodetect.settings import Settings
from autodetect.storage import ModelVersion, Stage, TrainingRun, VersionStatus, utcnow

log = logging.getLogger(__name__)


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
        now = db_now(s)
        claimed = s.execute(update(TrainingRun).where(TrainingRun.id == run_id, TrainingRun.state == "pending")
                            .values(state="running", started_at=now, heartbeat_at=now)
                            .returning(TrainingRun.params, TrainingRun.requeues)).first()
        if claimed is None:
            return {"skipped": True}
        params = dict(claimed.params or {})
        params["name"] = registry.version_name(run_id, claimed.requeues)
    try:
        with heartbeat(settings, run_id):
            if params.get("images"):  # a folder of DIR/<class>/<photo> (``autodetect train --images DIR``)
                from autodetect.model.folder_dataset import scan_folder

                samples = scan_folder(settings, Path(params["images"])).samples
            else:  # the stored photos, less those the active version contradicts (recorded with the reason)
                review_training_photos(settings)
                with session_scope(settings) as s:
                    samples = labelled_samples(s, settings)
            outcome = _train_and_register(settings, run_id, samples, params, progress)
    except Exception as exc:
        with session_scope(settings) as s:
            s.execute(update(TrainingRun).where(TrainingRun.id == run_id)
                      .values(state="failed", error=describe(exc), finished_at=db_now(s)))
        raise
    if outcome.get("promoted") and settings.retag_on_promote:
        with session_scope(settings) as s:
            ids = queue_for_tagging(s, "missing", outcome["version_id"], due_in_s=settings.stale_after_s)
        dispatch(Stage.inference, ids)
        outcome["retagging"] = len(ids)
    return outcome


class NotEnoughData(Exception):
    pass


@contextmanager
def heartbeat(settings: Settings, run_id: int) -> Iterator[None]:
    """While the body runs, a thread stamps the run's ``heartbeat_at`` every ``training_heartbeat_s``
    (a missed beat, e.g. during a database restart, is logged and the next one tried)."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(settings.training_heartbeat_s):
            try:
                with session_scope(settings) as s:
                    s.execute(update(TrainingRun).where(TrainingRun.id == run_id, TrainingRun.state == "running")
                              .values(heartbeat_at=db_now(s)))
            except Exception as exc:  # noqa: BLE001 - the run goes on; four missed beats and it is presumed dead
                log.warning("training run %s: heartbeat missed: %s", run_id, describe(exc))

    thread = threading.Thread(target=beat, name=f"heartbeat-run-{run_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=10)


def _train_and_register(settings: Settings, run_id: int, samples: list[Sample], params: dict[str, Any],
                        progress: Callable[[dict], None] | None) -> dict[str, Any]:
    from autodetect.model.train import train  # TensorFlow: loaded first, before the run's clock starts

    min_photos = int(params.get("min_photos", settings.min_photos_per_class))
    kept, dropped = select_classes(samples, min_photos)
    split = split_samples(kept, seed=settings.train_seed)
    if len(split.classes) < 2:
        raise NotEnoughData(f"{len(split.classes)} class(es) with >= {min_photos} photos; at least 2 are needed")
    config = train_config(settings, params)
    name = params["name"]
    out = settings.data_dir / "models" / name
    if out.exists():
        shutil.rmtree(out)  # a half-written directory from an interrupted run
    out.mkdir(parents=True)
    started = time.perf_counter()
    metrics = _train_candidate(settings, train, split, config, name, out, progress)
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


def _train_candidate(settings: Settings, train: Callable, split: Split, config, name: str, out: Path,
                     progress: Callable[[dict], None] | None) -> dict[str, Any]:
    """Train a candidate into ``out`` and export it (LiteRT, labels, confusion plot); its metrics on the
    held-out test listings, its open-set calibration and figures, the training's speed and length."""
    from autodetect.model.bundle import load_serving, save_labels
    from autodetect.model.evaluate import evaluate, plot_confusion
    from autodetect.model.export import export_tflite
    from autodetect.pipeline.open_set import calibrate_open_set, outlier_samples

    outliers = outlier_samples(settings, split.classes, round(settings.open_set_outlier_share * len(split.train)),
                               out / "outliers")
    result = train(split.train + outliers, split.val, split.classes, config, out, progress=progress)
    shutil.rmtree(out / "outliers")
    export_tflite(result.keras_path, out / "model.tflite")
    save_labels(out, split.classes, backbone=config.backbone, image_size=config.image_size)
    serving = load_serving(out, prefer=("tflite",))
    evaluation = evaluate(serving.predict, split.test, split.classes, image_size=config.image_size)
    plot_confusion(evaluation, split.classes, out / "confusion.png", title=f"{name}: held-out test listings")
    metrics = evaluation.to_dict()
    open_set, metrics["open_set"] = calibrate_open_set(settings, serving.predict, split.val, split.test,
                                                       split.classes, config.image_size)
    save_labels(out, split.classes, backbone=config.backbone, image_size=config.image_size,
                open_set=open_set.to_dict())  # the serving model answers with its calibration
    metrics.update(train_images_per_s=round(result.train_images_per_s, 1), train_seconds=round(result.seconds, 1),
                   epochs=result.epochs_run, outlier_photos=len(outliers))
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
