"""Inference stage: micro-batches of unique photos through the active model version.

Claiming. A batch is claimed with one conditional UPDATE (``FOR UPDATE SKIP LOCKED`` on PostgreSQL,
so several workers never claim the same row) that moves ``pending`` rows to ``running`` and stamps
the claim time. The broker's message only says "there is work": every message claims whatever is
pending, so a message delivered twice, or one whose rows another worker already took, finds less or
nothing and returns at once. A partial batch waits at most ``inference_batch_wait_s`` for more rows.

Writing. Predictions are written with ``ON CONFLICT DO NOTHING`` on (image, version) and the rows
marked ``done`` in one transaction, with the listings' averaged predictions (``listing_predictions``).
A photo that already has a prediction from the serving version is not run through the model again (a
re-tag, a redelivery, a sweep of a slow batch). A worker killed mid-batch leaves its rows ``running`` and
nothing written; the sweeper returns them to ``pending`` after ``stale_after_s`` and another batch
predicts them, once. A batch that fails with an exception gives its rows back (``pending``) before
re-raising.

Versions. Each prediction carries the version that made it; listing predictions are per version. If
the active version changes while a batch runs, the batch's predictions are kept (they are that
version's) but its rows go back to ``pending`` so the new version predicts them too.

This module never imports TensorFlow: the serving model comes from ``autodetect.model.provider`` (run
by ``autodetect.model.runtime``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import datetime
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from autodetect.db import db_now, insert_stmt, session_scope
from autodetect.model.provider import LoadedModel, ModelProvider
from autodetect.model.registry import fail_active
from autodetect.pipeline.dedup import hold_off_decisions
from autodetect.pipeline.listing_predictions import refresh_listing_predictions
from autodetect.pipeline.fates import Failure, failure_of, record_failures
from autodetect.pipeline.inference_claims import claim_batch
from autodetect.pipeline.inference_photos import background_priority, load_photos
from autodetect.settings import Settings
from autodetect.storage import Image, ModelVersion, Prediction, Stage, State, VersionStatus

log = logging.getLogger(__name__)


# --- claiming and predicting ---------------------------------------------------------------------
@dataclass
class BatchResult:
    predicted: int = 0  # run through the model and written
    skipped: int = 0  # already had a prediction from this version: marked done, not run again
    failed: int = 0
    listings: int = 0
    batches: int = 0
    requeued: list[int] = field(default_factory=list)  # back to pending: the active version changed meanwhile
    model: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)  # claim, read, decode, model, write
    errors: list[str] = field(default_factory=list)

    @property
    def claimed(self) -> int:
        return self.predicted + self.skipped + self.failed

    def add(self, other: BatchResult) -> None:
        self.predicted += other.predicted
        self.skipped += other.skipped
        self.failed += other.failed
        self.listings += other.listings
        self.batches += other.batches
        self.requeued += other.requeued
        self.model = other.model or self.model
        self.errors += other.errors
        for k, v in other.seconds.items():
            self.seconds[k] = self.seconds.get(k, 0.0) + v

    def as_dict(self) -> dict[str, Any]:
        return {"predicted": self.predicted, "skipped": self.skipped, "failed": self.failed, "batches": self.batches,
                "listings": self.listings, "requeued": len(self.requeued), "model": self.model,
                "seconds": {k: round(v, 3) for k, v in self.seconds.items()}}


def topk(probs: np.ndarray, classes: Sequence[str], k: int) -> list[list[Any]]:
    order = np.argsort(-probs)[:k]
    return [[classes[i], round(float(probs[i]), 6)] for i in order]


@dataclass
class _Batch:
    """A claimed (or given) batch, read and decoded, waiting for the model."""

    model: LoadedModel
    ids: list[int]
    rows: list[Any]  # (id, listing_id, normalized_key)
    have: set[int]  # already predicted by this version: no model run
    ok_rows: list[Any] = field(default_factory=list)
    arrays: list[np.ndarray] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    def alone(self, k: int) -> _Batch:
        """The batch of its ``k``-th photo to run through the model, alone."""
        row = self.ok_rows[k]
        return _Batch(self.model, [row.id], [row], set(), [row], [self.arrays[k]], seconds={})


def _prepare(settings: Settings, provider: ModelProvider, *, wait: bool, errors: list[str] | None = None
             ) -> _Batch | None:
    """The active model, a claimed batch, its rows read and its photos decoded; None: no work (or no
    loadable model, and then nothing is claimed)."""
    clock = time.perf_counter()
    with session_scope(settings) as s:
        model = provider.get(s)
        if model is None or model.version_id != provider.active_id:
            # The active version cannot be loaded. The last good model may stand in for it in the API,
            # not here (its predictions would not be the active version's): the photos wait, and the
            # version has the bounded fate (``model_load_attempts``, then failed and rolled back).
            _give_up_on_broken(s, settings, provider)
            if errors is not None and provider.last_error:
                errors.append(provider.last_error)
            return None
        ids = claim_batch(settings, wait=wait, session=s)
    if not ids:
        return None
    seconds = {"claim": time.perf_counter() - clock}
    try:
        return _read_and_decode(settings, model, ids, seconds)
    except BaseException:
        _release(settings, ids)
        raise


def _read_and_decode(settings: Settings, model: LoadedModel, ids: list[int], seconds: dict[str, float]) -> _Batch:
    clock = time.perf_counter()
    with session_scope(settings) as s:
        rows = s.execute(select(Image.id, Image.listing_id, Image.normalized_key, Image.attempts)
                         .where(Image.id.in_(ids)).order_by(Image.id)).all()
        have = set(s.scalars(select(Prediction.image_id).where(
            Prediction.image_id.in_(ids), Prediction.model_version_id == model.version_id)))
    batch = _Batch(model, ids, rows, have, seconds=seconds)
    todo = [r for r in rows if r.id not in have]
    seconds["read"], clock = time.perf_counter() - clock, time.perf_counter()
    for row, item in zip(todo, load_photos(settings, [r.normalized_key for r in todo], model.image_size)):
        if isinstance(item, Failure):
            batch.failures.append(Failure(row.id, item.reason, item.permanent))
        else:
            batch.ok_rows.append(row)
            batch.arrays.append(item)
    seconds["decode"] = time.perf_counter() - clock
    return batch


def _infer(settings: Settings, batch: _Batch) -> np.ndarray:
    model = batch.model
    if settings.inference_test_delay_s > 0:
        time.sleep(settings.inference_test_delay_s)
    clock = time.perf_counter()
    probs = model.predict(np.stack(batch.arrays)) if batch.arrays else np.zeros((0, len(model.classes)), np.float32)
    batch.seconds["model"] = time.perf_counter() - clock
    if probs.shape != (len(batch.arrays), len(model.classes)):
        raise ValueError(f"model {model.name} returned shape {probs.shape} for {len(batch.arrays)} photos "
                         f"and {len(model.classes)} classes")
    return probs


def predict_batch(settings: Settings, provider: ModelProvider, *, wait: bool = True) -> BatchResult:
    """Claim up to ``inference_batch_size`` pending photos (waiting a short while to fill the batch),
    predict them with the active version and write the results. An empty result means no work (or no
    loadable model: then nothing is claimed, and ``errors`` says why)."""
    result = BatchResult()
    batch = _prepare(settings, provider, wait=wait, errors=result.errors)
    if batch is None:
        result.model = provider.current.name if provider.current else None
        return result
    try:
        return _write_isolating(settings, provider, batch, _infer_isolating(settings, batch))
    except BaseException:
        _release(settings, batch.ids)
        raise


def predict_pending(settings: Settings, provider: ModelProvider, *, budget_s: float | None = None) -> BatchResult:
    """What one inference message does: predict batch after batch while photos are pending, for up to
    ``budget_s`` (``inference_task_budget_s``), as a pipeline: while the model runs batch k (in this
    thread), a helper thread writes batch k-1 and claims, reads and decodes batch k+1. So the model is
    never idle for the database or the decoder; at most two batches are claimed at a time, and every
    batch is written before this returns (the message is acknowledged after it). On an error the
    batches not written are given back and the error raised."""
    budget = settings.inference_task_budget_s if budget_s is None else budget_s
    total = BatchResult()
    started = time.monotonic()
    current = _prepare(settings, provider, wait=True, errors=total.errors)
    if current is None:
        return total
    helper = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference-io", initializer=background_priority)
    writes: list = []  # futures of BatchResult, in order
    claimed: list[_Batch] = [current]  # prepared, not yet written
    upcoming = None
    try:
        while current is not None:
            upcoming = (helper.submit(_prepare, settings, provider, wait=True)
                        if time.monotonic() - started < budget else None)
            probs = _infer_isolating(settings, current)
            writes.append(helper.submit(_write_isolating, settings, provider, current, probs))
            if len(writes) > 1:
                total.add(writes[-2].result())  # raises if the previous write failed
                claimed.pop(0)
            current = upcoming.result() if upcoming is not None else None
            if current is not None:
                claimed.append(current)
        total.add(writes[-1].result())
        claimed.clear()
    except BaseException:
        helper.shutdown(wait=True)  # let a write or claim in flight finish
        if upcoming is not None and upcoming.done() and upcoming.exception() is None:
            nxt = upcoming.result()
            if nxt is not None and all(nxt is not b for b in claimed):
                claimed.append(nxt)
        for batch in claimed:
            _release(settings, batch.ids)  # rows written meanwhile are done, and stay so
        raise
    finally:
        helper.shutdown(wait=True)
    return total


def predict_images(settings: Settings, model: LoadedModel, image_ids: Sequence[int]) -> BatchResult:
    """Predict the given photos with ``model`` (any version, e.g. tagging with a non-active one)
    without claiming them: their pipeline state is left alone, except that a photo whose file is gone
    is recorded failed. Idempotent like ``predict_batch``."""
    ids = sorted({int(i) for i in image_ids})
    if not ids:
        return BatchResult(model=model.name)
    batch = _read_and_decode(settings, model, ids, {})
    return _write(settings, None, batch, _infer(settings, batch), mark_state=False)


def _infer_isolating(settings: Settings, batch: _Batch) -> np.ndarray:
    """The model's answers for the batch. If the batch raises, each photo is run alone: the ones that
    raise again become failures of their own (``batch.failures``), the others are answered."""
    try:
        return _infer(settings, batch)
    except Exception as exc:  # noqa: BLE001 - find the photo(s) it came from
        if len(batch.ok_rows) == 1:
            batch.failures.append(failure_of(batch.ok_rows[0].id, exc))
            batch.ok_rows, batch.arrays = [], []
            return np.zeros((0, len(batch.model.classes)), np.float32)
    answers, kept = [], []
    for k, row in enumerate(batch.ok_rows):
        try:
            answers.append(_infer(settings, batch.alone(k)))
            kept.append(k)
        except Exception as exc:  # noqa: BLE001 - this photo's own failure
            batch.failures.append(failure_of(row.id, exc))
    batch.ok_rows, batch.arrays = [batch.ok_rows[k] for k in kept], [batch.arrays[k] for k in kept]
    return np.concatenate(answers) if answers else np.zeros((0, len(batch.model.classes)), np.float32)


def _write_isolating(settings: Settings, provider: ModelProvider | None, batch: _Batch,
                     probs: np.ndarray) -> BatchResult:
    """``_write`` the batch; if that raises, write each photo alone and record the ones that fail."""
    try:
        return _write(settings, provider, batch, probs, mark_state=True)
    except Exception:  # noqa: BLE001 - find the photo(s) it came from
        log.warning("writing a batch of %d failed; writing its photos one by one", len(batch.ids), exc_info=True)
    total = BatchResult(model=batch.model.name, batches=1, seconds=batch.seconds)
    for k, row in enumerate(batch.ok_rows):
        try:
            total.add(_write(settings, provider, batch.alone(k), probs[k:k + 1], mark_state=True))
        except Exception as exc:  # noqa: BLE001 - this photo's own failure
            batch.failures.append(failure_of(row.id, exc))
    rest = {f.image_id for f in batch.failures} | batch.have
    total.add(_write(settings, provider, _Batch(batch.model, sorted(rest), [r for r in batch.rows if r.id in rest],
                                                batch.have, failures=batch.failures), probs[:0], mark_state=True))
    total.batches = 1
    return total


def _give_up_on_broken(session: Session, settings: Settings, provider: ModelProvider) -> None:
    """After ``model_load_attempts`` failed loads of the active version: failed, the previous back."""
    broken = provider.active_id
    if broken is None or provider.load_failures(broken) < settings.model_load_attempts:
        return
    restored = fail_active(session, broken, provider.last_error or "cannot load the model")
    log.error("%s; gave up after %d tries: marked failed, %s active again", provider.last_error,
              settings.model_load_attempts, restored.name if restored else "no version")


def _release(settings: Settings, ids: Sequence[int]) -> None:
    """Give claimed rows back when the work was interrupted (a shutdown, a time limit), uncounted
    (best effort: otherwise the sweeper takes them back when their lease ends, and counts them)."""
    try:
        with session_scope(settings) as s:
            now = db_now(s)
            s.execute(update(Image).where(Image.id.in_(list(ids)), Image.stage == Stage.inference.value,
                                          Image.state == State.running.value)
                      .values(state=State.pending.value, lease_until=None, updated_at=now, next_attempt_at=now))
    except Exception as exc:  # noqa: BLE001 - the original error matters more
        log.warning("could not give back %d claimed photos (the sweeper will): %s", len(ids), exc)


def _write(settings: Settings, provider: ModelProvider | None, batch: _Batch, probs: np.ndarray, *,
           mark_state: bool) -> BatchResult:
    """One transaction: predictions (ON CONFLICT DO NOTHING), the rows' new state, failures, and the
    listings' averaged predictions for the batch's version."""
    clock = time.perf_counter()
    model, ok_rows, have, failures = batch.model, batch.ok_rows, batch.have, batch.failures
    result = BatchResult(model=model.name, batches=1, seconds=batch.seconds)
    done_ids = [r.id for r in ok_rows] + sorted(have)
    with session_scope(settings) as s:
        _after_dedup_decisions(s)
        now = db_now(s)
        if ok_rows:
            top = probs.argmax(axis=1)
            # executemany of one cached statement (batched into one INSERT by the driver dialect)
            s.execute(insert_stmt(s, Prediction.__table__).on_conflict_do_nothing(
                index_elements=["image_id", "model_version_id"]), [
                {"image_id": row.id, "model_version_id": model.version_id, "top_class": model.classes[int(t)],
                 "top_probability": float(p[t]), "topk": topk(p, model.classes, settings.top_k), "created_at": now}
                for row, p, t in zip(ok_rows, probs, top)])
        if mark_state and done_ids:
            active_id = s.scalar(select(ModelVersion.id).where(ModelVersion.status == VersionStatus.active.value))
            switched = (active_id is not None and active_id != model.version_id
                        and not (provider is not None and provider.is_broken(active_id)))
            if switched:  # promoted meanwhile: these photos need the new version's prediction too
                s.execute(update(Image).where(Image.id.in_(done_ids))
                          .values(state=State.pending.value, error=None, lease_until=None, updated_at=now,
                                  next_attempt_at=now))
                result.requeued = done_ids
            else:
                s.execute(update(Image).where(Image.id.in_(done_ids))
                          .values(stage=Stage.done.value, state=State.done.value, error=None, lease_until=None,
                                  updated_at=now))
        _record(s, settings, batch, mark_state, now)
        # The listings of these photos, and of their duplicates elsewhere, which reuse the prediction.
        written = set(done_ids)
        listings = {r.listing_id for r in batch.rows if r.id in written}
        if done_ids:
            listings |= set(s.scalars(select(Image.listing_id).where(Image.duplicate_of_id.in_(done_ids))))
        refresh_listing_predictions(s, sorted(listings), settings, version_id=model.version_id)
    result.seconds["write"] = time.perf_counter() - clock
    result.predicted, result.skipped, result.failed = len(ok_rows), len(have), len(failures)
    result.listings = len(listings)
    result.errors = [f.reason for f in failures]
    if failures:
        log.warning("%d of %d photos failed: %s", len(failures), len(batch.ids), failures[0].reason)
    return result


def _after_dedup_decisions(session: Session) -> None:
    """On PostgreSQL, hold the dedup decision lock in shared mode until this write commits. A photo marked
    a duplicate of one of ours while we write would otherwise be missed twice: its decision reads no
    prediction of ours yet, and our search for the duplicates of our photos does not see it yet (both
    transactions uncommitted); its listing would never get a listing prediction. Writes do not wait
    for each other, only for a decision in progress (milliseconds), and a decision for them."""
    hold_off_decisions(session)


def _record(session: Session, settings: Settings, batch: _Batch, mark_state: bool, now: datetime) -> None:
    """The batch's failures on their rows: counted with their fate in the pipeline, or (tagging with
    another version, rows not claimed) simply marked failed with the reason."""
    if not batch.failures:
        return
    if mark_state:
        attempts = {r.id: r.attempts for r in batch.rows}
        record_failures(session, settings, Stage.inference.value, batch.failures, attempts, now)
        return
    for f in batch.failures:
        session.execute(update(Image).where(Image.id == f.image_id).values(
            stage=Stage.inference.value, state=State.failed.value, error=f.reason, updated_at=now))
