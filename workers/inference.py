"""inference queue: each message claims and predicts one micro-batch of pending photos.

The serving model is loaded on first use in the worker's child process (after fork), never in the
parent, and never through TensorFlow."""

from functools import cache

from autodetect.inference import ModelProvider, predict_batch
from autodetect.settings import get_settings
from workers.app import app
from workers.queues import queue_specs


@cache
def _provider() -> ModelProvider:
    return ModelProvider(get_settings())


@app.task(name="inference.predict", time_limit=queue_specs(get_settings())["inference"].time_limit)
def predict(image_id: int | None = None) -> dict:
    result = predict_batch(get_settings(), _provider())
    return {"predicted": result.predicted, "failed": result.failed, "model": result.model}
