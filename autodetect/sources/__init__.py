"""Where listings come from: a source yields pages of listings since a cursor."""

from autodetect.sources.base import (
    BudgetExhausted,
    CallBudget,
    Page,
    Source,
    SourceError,
    SourceListing,
)
from autodetect.sources.factory import open_source

__all__ = ["BudgetExhausted", "CallBudget", "Page", "Source", "SourceError", "SourceListing", "open_source"]
