"""download queue: one photo per message; transient failures retried with backoff."""

from functools import cache

from autodetect.download import download_image
from autodetect.images.fetch import Fetcher
from autodetect.images.store import ImageStore
from autodetect.settings import get_settings
from workers.app import app
from workers.dispatch import dispatch
from workers.queues import queue_specs


@cache
def _fetcher() -> Fetcher:  # one pooled, thread-safe fetcher per process
    return Fetcher(get_settings())


@app.task(name="download.fetch", bind=True, max_retries=None,
          time_limit=queue_specs(get_settings())["download"].time_limit)
def fetch(self, image_id: int) -> str:
    settings = get_settings()
    outcome = download_image(settings, image_id, _fetcher(), ImageStore(settings.data_dir / "images"), dispatch)
    if outcome.status == "retry":
        raise self.retry(countdown=outcome.retry_in)
    return outcome.status
