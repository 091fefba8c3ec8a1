"""inference queue: each message claims and predicts one micro-batch of pending photos.

The serving model is loaded on first use in the worker's child process (after fork), never in the
parent, and never through TensorFlow. Between batches the provider notices a promoted version.

``inference.predict`` carries a photo id only as a hint (the batch claims whatever is pending, and
keeps claiming batches while there are any, see ``inference.predict_pending``), so a redelivered or
surplus message is harmless: it finds nothing to do and returns at once. ``inference.tag`` carries
the ids and the version for tagging with a version that is not the active one; idempotent too.

The pool's processes share the cores: each model runs on cores / pool size threads (unless
``inference_threads`` says otherwise)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

from celery import signals

from autodetect.db import session_scope
from autodetect.model.provider import ModelProvider, ModelUnavailable, serving_threads
from autodetect.pipeline.inference import predict_images, predict_pending
from autodetect.settings import get_settings
from autodetect.storage import Stage
from workers.app import app, stage_task


#: Processes of this worker that run models side by side; they share the cores (see ``_size``).
_pool_size = 1


@signals.celeryd_after_setup.connect
def _size(sender=None, instance=None, **_):
    """Runs in the worker's parent before the pool forks: remember the pool's size (1 for solo)."""
    global _pool_size
    solo = "solo" in getattr(getattr(instance, "pool_cls", None), "__module__", "")
    _pool_size = 1 if solo else max(1, int(getattr(instance, "concurrency", 1) or 1))


@cache
def _provider() -> ModelProvider:  # one per process: created in the child that runs the task
    settings = get_settings()
    return ModelProvider(settings, threads=serving_threads(settings, share=_pool_size))


@stage_task("inference.predict", "inference")
def predict(image_id: int | None = None) -> dict:
    """Batch after batch while photos are pending (``inference_task_budget_s``); the id is a hint."""
    result = predict_pending(get_settings(), _provider())
    if result.requeued:  # the active version changed during the batch: the new one predicts them
        from workers.dispatch import dispatch

        dispatch(Stage.inference, result.requeued)
    return result.as_dict()


@stage_task("inference.tag", "inference", retry_on=(ModelUnavailable,))
def tag(version_id: int, image_ids: list[int]) -> dict:
    settings = get_settings()
    with session_scope(settings) as s:
        model = _provider().for_version(s, int(version_id))
    return predict_images(settings, model, image_ids).as_dict()


def send_tagging(version_id: int, ids: Sequence[int]) -> None:
    """One ``inference.tag`` message per ``inference_batch_size`` ids (for a non-active version)."""
    size = max(1, get_settings().inference_batch_size)
    ids = [int(i) for i in ids]
    with app.producer_or_acquire() as producer:
        for start in range(0, len(ids), size):
            app.send_task("inference.tag", args=(int(version_id), ids[start:start + size]), producer=producer)
