"""Where listings come from: a source yields pages of listings since a cursor."""

from autodetect.sources.base import Page, Source, SourceListing, open_source

__all__ = ["Page", "Source", "SourceListing", "open_source"]
