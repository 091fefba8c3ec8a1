"""download queue: one batch of photos per message; transient failures sent again with backoff."""

from functools import cache

from autodetect.pipeline.download import download_images
from autodetect.images.fetch import Fetcher
from autodetect.images.store import ImageStore
from autodetect.settings import get_settings
from workers.app import app
from workers.dispatch import dispatch
from workers.queues import queue_specs


@cache
def _fetcher() -> Fetcher:  # one pooled, thread-safe fetcher per process
    return Fetcher(get_settings())


@app.task(name="download.fetch", time_limit=queue_specs(get_settings())["download"].time_limit)
def fetch(image_ids: list[int]) -> dict[str, int]:
    settings = get_settings()
    outcome = download_images(settings, image_ids, _fetcher(), ImageStore(settings.data_dir / "images"), dispatch)
    if outcome.retry:  # only the photos that failed transiently, in one message, after the backoff
        fetch.apply_async(args=(sorted(outcome.retry),), countdown=outcome.retry_in)
    return {"done": len(outcome.done), "failed": len(outcome.failed), "retry": len(outcome.retry),
            "skipped": len(outcome.skipped)}
