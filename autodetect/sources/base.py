"""The source interface and the listing record every source produces."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

from autodetect.settings import Settings

MAX_TITLE = 500
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


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
    mileage: int | None = None
    raw: dict[str, Any] = field(default_factory=dict)
    #: What was wrong with the record as received ("missing price", "no photos", ...).
    problems: list[str] = field(default_factory=list)


@dataclass
class Page:
    listings: list[SourceListing]
    #: Where the next crawl resumes if this one stops after this page.
    cursor: dict[str, Any]
    #: Records on the page that could not be used at all, with the reason.
    rejected: list[str] = field(default_factory=list)


class Source(Protocol):
    name: str

    def pages(self, cursor: dict[str, Any]) -> Iterator[Page]: ...


class BudgetExhausted(Exception):
    """The source's daily call budget is spent: the crawl pauses and resumes from its cursor."""


def clean_title(value: Any) -> str:
    text = _CONTROL.sub(" ", str(value or "")).strip()
    return re.sub(r"\s{2,}", " ", text)[:MAX_TITLE]


def parse_price(value: Any) -> Decimal | None:
    """'18450.00', '12,500.00', 12500, '$9 999' -> Decimal; anything else -> None."""
    if value is None or value == "":
        return None
    text = re.sub(r"[^\d.,-]", "", str(value))
    if "," in text and "." in text:
        text = text.replace(",", "") if text.rfind(",") < text.rfind(".") else text.replace(".", "").replace(",", ".")
    elif "," in text:
        head, _, tail = text.rpartition(",")
        text = text.replace(",", "") if len(tail) == 3 else f"{head.replace(',', '')}.{tail}"
    try:
        price = Decimal(text)
    except InvalidOperation:
        return None
    return price if price >= 0 else None


def parse_int(value: Any) -> int | None:
    digits = re.sub(r"[^\d]", "", str(value or ""))
    return int(digits) if digits and len(digits) < 10 else None


def open_source(settings: Settings) -> Source:
    """The configured source (``AUTODETECT_SOURCE``)."""
    if settings.source == "feed":
        from autodetect.sources.feed import FeedSource

        return FeedSource(settings)
    from autodetect.sources.browse import BrowseSource

    return BrowseSource(settings)
