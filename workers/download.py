"""download queue: one batch of photos per message; each photo's failure is counted on its row, and
the sweeper sends the transient ones again when their backoff is over."""

from functools import cache

from autodetect.pipeline.download import download_images
from autodetect.images.fetch import Fetcher
from autodetect.images.store import ImageStore
from autodetect.settings import get_settings
from workers.app import stage_task
from workers.dispatch import dispatch


@cache
def _fetcher() -> Fetcher:  # one pooled, thread-safe fetcher per process
    return Fetcher(get_settings())


@stage_task("download.fetch", "download")
def fetch(image_ids: list[int]) -> dict[str, int]:
    settings = get_settings()
    outcome = download_images(settings, image_ids, _fetcher(), ImageStore(settings.data_dir / "images"), dispatch)
    return {"done": len(outcome.done), "failed": len(outcome.failed), "retry": len(outcome.retry),
            "skipped": len(outcome.skipped)}
