"""discovery queue: crawl the configured source."""

from autodetect.pipeline.discovery import CrawlLocked, crawl as crawl_source
from autodetect.settings import get_settings
from autodetect.sources import open_source
from workers.app import stage_task
from workers.dispatch import dispatch


@stage_task("discovery.crawl", "discovery")
def crawl(max_listings: int | None = None) -> dict:
    settings = get_settings()
    try:
        return crawl_source(settings, open_source(settings), dispatch, max_listings=max_listings).as_dict()
    except CrawlLocked as exc:
        return {"skipped": str(exc)}
