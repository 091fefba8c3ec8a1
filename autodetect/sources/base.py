"""The source interface, the listing record every source produces, and the daily call budget."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol


@dataclass
class SourceListing:
    external_id: str
    title: str = ""
    url: str | None = None
    price: Decimal | None = None
    currency: str | None = None
    photos: list[str] = field(default_factory=list)
    city: str | None = None
    postal_code: str | None = None
    country: str | None = None
    latitude: float | None = None
    longitude: float | None = None
    condition: str | None = None
    make: str | None = None
    model: str | None = None
    year: int | None = None
    mileage: int | None = None  # as the seller states it, negative included (it then does not count for prices)
    #: How it is sold: the Browse API's ``buyingOptions`` (FIXED_PRICE, AUCTION, BEST_OFFER, CLASSIFIED_AD).
    buying_options: list[str] = field(default_factory=list)
    bid_count: int | None = None  # bids on an auction so far
    raw: dict[str, Any] = field(default_factory=dict)
    #: What was wrong with the record as received, "kind: detail" ("missing price", "bad price: 'x'"...).
    problems: list[str] = field(default_factory=list)


@dataclass
class Page:
    listings: list[SourceListing]
    #: Where the next crawl resumes if this one stops after this page; {} once the source is exhausted.
    cursor: dict[str, Any]
    #: What was wrong with the page or its records ("kind: detail"): rejected records, an unreadable page...
    problems: list[str] = field(default_factory=list)
    #: False when listings may have been missed here (an unreadable page, a looping ``next``): a crawl
    #: with such a page is incomplete and ends no listing for not having been seen.
    complete: bool = True


class BudgetExhausted(Exception):
    """The day's call budget is spent (or the marketplace keeps saying 429): the crawl pauses and the
    next one resumes from its cursor."""


class SourceError(Exception):
    """The source cannot be read at all (unreachable, credentials refused): the crawl fails and the
    next one resumes from its cursor."""


class CallBudget:
    """Calls a source may make per UTC day (``limit`` 0: unlimited), shared by its threads."""

    def __init__(self, limit: int, day: str | None = None, used: int = 0):
        self.limit, self.day, self.used, self.spent = limit, day, used, 0
        self._lock = threading.Lock()

    def spend(self) -> None:
        with self._lock:
            today = datetime.now(UTC).date().isoformat()
            if self.day != today:
                self.day, self.used = today, 0
            if self.limit and self.used >= self.limit:
                raise BudgetExhausted(f"the daily budget of {self.limit} calls is spent ({self.day} UTC)")
            self.used += 1
            self.spent += 1


class Source(Protocol):
    name: str

    def pages(self, cursor: dict[str, Any], budget: CallBudget) -> Iterator[Page]:
        """Pages of listings from ``cursor`` ({} to start over) to the end."""
        ...

    def details(self, listings: list[SourceListing], budget: CallBudget) -> list[SourceListing]:
        """The listings with what a detail call adds (Make, Model, Year), same order."""
        ...
