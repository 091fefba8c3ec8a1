"""Opening the configured source: kept apart from ``base`` because it imports every source, and every source
imports ``base``."""

from __future__ import annotations

from autodetect.settings import Settings
from autodetect.sources.base import Source


def open_source(settings: Settings) -> Source:
    """The configured source (``AUTODETECT_SOURCE``): ``ebay`` and ``sandbox`` speak the Browse API."""
    if settings.source == "feed":
        from autodetect.sources.feed import FeedSource

        return FeedSource(settings)
    from autodetect.sources.browse import BrowseSource

    return BrowseSource(settings)
