"""Inference stage: micro-batches of unique photos through the active model version.

A batch is claimed with one conditional UPDATE (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so
several workers never claim the same row); predictions are written with ``ON CONFLICT DO NOTHING``
on (image, version) and the rows marked done in the same transaction. A worker killed mid-batch
leaves its rows ``running``; the sweeper returns them to ``pending`` and nothing is predicted twice.

This module never imports TensorFlow: the serving model comes from ``autodetect.model.runtime``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from autodetect.db import insert_stmt, is_postgres, session_scope
from autodetect.settings import Settings
from autodetect.storage import CarClass, Image, Listing, ListingPrediction, ModelVersion, Prediction, Stage, State, \
    VersionStatus, utcnow

log = logging.getLogger(__name__)


# --- the model a worker serves -------------------------------------------------------------------
@dataclass
class LoadedModel:
    version_id: int
    name: str
    classes: list[str]
    image_size: int
    predict: Callable[[np.ndarray], np.ndarray]


class ModelProvider:
    """Holds the active version's serving model, loaded lazily once per process (after fork).

    Between batches it looks up the active version; when a new one was promoted it loads it, and if
    that fails it keeps serving the last good model and logs why."""

    def __init__(self, settings: Settings, loader: Callable[[Settings, ModelVersion], LoadedModel] | None = None):
        self.settings = settings
        self.loader = loader or load_serving_model
        self.current: LoadedModel | None = None
        self.last_error: str | None = None
        self._failed_version: int | None = None
        self._lock = threading.Lock()

    def get(self, session: Session) -> LoadedModel | None:
        active = session.execute(
            select(ModelVersion).where(ModelVersion.status == VersionStatus.active.value)
        ).scalar_one_or_none()
        with self._lock:
            if active is None or (self.current and self.current.version_id == active.id):
                return self.current if active is not None else None
            if self._failed_version == active.id:
                return self.current
            try:
                self.current = self.loader(self.settings, active)
                self.last_error = None
                log.info("serving model %s (%s, %d classes)", active.name, active.backbone, len(active.classes))
            except Exception as exc:  # noqa: BLE001 - any broken artifact: keep the last good model
                self._failed_version = active.id
                self.last_error = f"cannot load model {active.name}: {exc}"
                log.error("%s; still serving %s", self.last_error, self.current.name if self.current else "nothing")
            return self.current


def load_serving_model(settings: Settings, version: ModelVersion) -> LoadedModel:
    from autodetect.model.bundle import load_serving, read_bundle

    directory = settings.data_dir / version.artifacts["dir"]
    info = read_bundle(directory)
    if list(info.classes) != list(version.classes):
        raise ValueError(f"artifact classes differ from the registry's for {version.name}")
    serving = load_serving(directory, prefer=(settings.serving_format, "tflite", "onnx"))
    return LoadedModel(version.id, version.name, list(version.classes), version.image_size, serving.predict)


# --- claiming and predicting ---------------------------------------------------------------------
def claim(session: Session, limit: int) -> list[int]:
    pending = select(Image.id).where(Image.stage == Stage.inference.value, Image.state == State.pending.value) \
        .order_by(Image.id).limit(limit)
    if is_postgres(session):
        pending = pending.with_for_update(skip_locked=True)
    return list(session.execute(
        update(Image).where(Image.id.in_(pending.scalar_subquery()))
        .values(state=State.running.value, updated_at=utcnow()).returning(Image.id)
    ).scalars())


@dataclass
class BatchResult:
    predicted: int = 0
    failed: int = 0
    listings: int = 0
    model: str | None = None
    errors: list[str] = field(default_factory=list)


def topk(probs: np.ndarray, classes: Sequence[str], k: int) -> list[list[Any]]:
    order = np.argsort(-probs)[:k]
    return [[classes[i], round(float(probs[i]), 6)] for i in order]


def predict_batch(settings: Settings, provider: ModelProvider) -> BatchResult:
    """Claim up to ``inference_batch_size`` pending photos (waiting a short while to fill the batch),
    predict them and write the results. Returns what was done; an empty result means no work."""
    from autodetect.images.store import ImageStore
    from autodetect.model.runtime import load_image

    result = BatchResult()
    with session_scope(settings) as s:
        model = provider.get(s)
    if model is None:
        return result
    result.model = model.name
    ids: list[int] = []
    deadline = time.monotonic() + settings.inference_batch_wait_s
    while True:
        with session_scope(settings) as s:
            ids += claim(s, settings.inference_batch_size - len(ids))
        if len(ids) >= settings.inference_batch_size or time.monotonic() >= deadline:
            break
        time.sleep(min(0.05, settings.inference_batch_wait_s))
    if not ids:
        return result
    store = ImageStore(settings.data_dir / "images")
    with session_scope(settings) as s:
        rows = s.execute(select(Image.id, Image.listing_id, Image.normalized_key).where(Image.id.in_(ids))).all()
    arrays, ok_rows, failures = [], [], []
    for image_id, listing_id, key in rows:
        try:
            arrays.append(load_image(store.path(key), model.image_size))
            ok_rows.append((image_id, listing_id))
        except (OSError, ValueError, TypeError) as exc:
            failures.append((image_id, f"photo unreadable from the store: {exc}"[:300]))
    probs = model.predict(np.stack(arrays)) if arrays else np.zeros((0, len(model.classes)))
    now = utcnow()
    with session_scope(settings) as s:
        if ok_rows:
            s.execute(insert_stmt(s, Prediction.__table__).values([
                {"image_id": image_id, "model_version_id": model.version_id, "top_class": model.classes[int(p.argmax())],
                 "top_probability": float(p.max()), "topk": topk(p, model.classes, settings.top_k), "created_at": now}
                for (image_id, _), p in zip(ok_rows, probs)
            ]).on_conflict_do_nothing(index_elements=["image_id", "model_version_id"]))
            s.execute(update(Image).where(Image.id.in_([i for i, _ in ok_rows]))
                      .values(stage=Stage.done.value, state=State.done.value, error=None, updated_at=now))
        for image_id, error in failures:
            s.execute(update(Image).where(Image.id == image_id)
                      .values(state=State.failed.value, error=error, updated_at=now))
        predicted_ids = [i for i, _ in ok_rows]
        # The listings of these photos, and of their duplicates elsewhere, which reuse the prediction.
        listings = sorted({listing_id for _, listing_id in ok_rows} | set(s.scalars(
            select(Image.listing_id).where(Image.duplicate_of_id.in_(predicted_ids))) if predicted_ids else []))
        refresh_listing_predictions(s, listings, settings, version_id=model.version_id)
    result.predicted, result.failed, result.listings = len(ok_rows), len(failures), len(listings)
    result.errors = [e for _, e in failures]
    return result


# --- listing-level answers -----------------------------------------------------------------------
def refresh_listing_predictions(session: Session, listing_ids: Sequence[int], settings: Settings,
                                version_id: int | None = None) -> int:
    """Average the predictions of each listing's photos (a duplicate counts with its original's
    prediction, once per listing) into the listing's prediction for that model version."""
    if not listing_ids:
        return 0
    if version_id is None:
        version_id = session.execute(select(ModelVersion.id).where(
            ModelVersion.status == VersionStatus.active.value)).scalar_one_or_none()
        if version_id is None:
            return 0
    src = func.coalesce(Image.duplicate_of_id, Image.id)
    rows = session.execute(
        select(Image.listing_id, src, Prediction.topk)
        .join(Prediction, (Prediction.image_id == src) & (Prediction.model_version_id == version_id))
        .where(Image.listing_id.in_(list(listing_ids)), Image.stage == Stage.done.value,
               Image.state == State.done.value)
    ).all()
    per_listing: dict[int, dict[int, list]] = defaultdict(dict)
    for listing_id, src, top in rows:
        per_listing[listing_id][src] = top
    labels = dict(session.execute(
        select(Listing.id, Listing.class_id).where(Listing.id.in_(list(per_listing)))).all())
    class_names = dict(session.execute(
        select(CarClass.id, CarClass.name).where(CarClass.id.in_([c for c in labels.values() if c]))).all())
    now = utcnow()
    values = []
    for listing_id, tops in per_listing.items():
        scores: dict[str, float] = defaultdict(float)
        for top in tops.values():
            for name, p in top:
                scores[name] += p / len(tops)
        ranked = sorted(scores.items(), key=lambda kv: -kv[1])[: settings.top_k]
        best, best_p = ranked[0]
        label = class_names.get(labels.get(listing_id))
        values.append({
            "listing_id": listing_id, "model_version_id": version_id, "top_class": best,
            "top_probability": round(best_p, 6), "topk": [[n, round(p, 6)] for n, p in ranked],
            "photos": len(tops), "updated_at": now,
            "mismatch": bool(label and label != best and best_p >= settings.mismatch_confidence),
        })
    if values:
        stmt = insert_stmt(session, ListingPrediction.__table__).values(values)
        session.execute(stmt.on_conflict_do_update(
            index_elements=["listing_id", "model_version_id"],
            set_={c: getattr(stmt.excluded, c) for c in ("top_class", "top_probability", "topk", "photos",
                                                         "mismatch", "updated_at")}))
    return len(values)
