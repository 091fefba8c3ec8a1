"""A generic feed: a URL or file of listings in the Browse API's JSON shape (a search page, a list of
items, or JSON lines), or a CSV with one listing per row, so a catalogue export can be imported.

A record that cannot be parsed is rejected with its reason and makes the crawl incomplete (it may be a
stored listing, which must not end for it); the other records are read."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests

from autodetect.settings import Settings
from autodetect.sources.base import CallBudget, Page, SourceError, SourceListing
from autodetect.sources.items import listing_from_item

CSV_PHOTO_COLUMNS = ("photo1", "photo2", "photo3", "photo4", "photo5")


def _row_to_item(row: dict[str, str]) -> dict[str, Any]:
    """A CSV row (itemId,title,price,currency,make,model,year,mileage,condition,city,postalCode,country,
    url,photo1..photo5 or photos separated by "|", buyingOptions separated by "|", bidCount) in the Browse
    API's item shape."""
    photos = [row[c] for c in CSV_PHOTO_COLUMNS if row.get(c)]
    photos += [p for p in (row.get("photos") or "").split("|") if p]
    aspects = [{"name": n.capitalize(), "value": row[n]} for n in ("make", "model", "year", "mileage") if row.get(n)]
    return {
        "itemId": row.get("itemId") or row.get("id"), "title": row.get("title"),
        "price": {"value": row.get("price"), "currency": row.get("currency") or None},
        "image": {"imageUrl": photos[0]} if photos else None,
        "additionalImages": [{"imageUrl": p} for p in photos[1:]],
        "itemLocation": {"city": row.get("city"), "postalCode": row.get("postalCode"), "country": row.get("country")},
        "condition": row.get("condition"), "itemWebUrl": row.get("url"), "localizedAspects": aspects,
        "buyingOptions": [o for o in (row.get("buyingOptions") or "").split("|") if o], "bidCount": row.get("bidCount"),
    }


def parse_feed(text: str, *, name: str = "") -> tuple[list[Any], list[str]]:
    """The feed's records and the reasons those that could not be parsed were rejected."""
    stripped = text.lstrip()
    if name.endswith(".csv") or (stripped and stripped[0] not in "[{"):
        items: list[Any] = []
        try:
            items.extend(_row_to_item(row) for row in csv.DictReader(io.StringIO(text, newline="")))
        except csv.Error as exc:
            return items, [f"malformed CSV: after {len(items)} rows ({exc})"]
        return items, []
    try:
        body = json.loads(text)
    except json.JSONDecodeError:
        items, rejected = [], []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    items.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    rejected.append(f"malformed JSON: line {n} ({exc.msg})")
        return items, rejected
    if isinstance(body, dict):  # a search page, {"items": [...]}, or a single item
        body = body["itemSummaries"] if "itemSummaries" in body else body.get("items", [body])
    return (body, []) if isinstance(body, list) else ([], [f"malformed JSON: no list of items in {name}"])


class FeedSource:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.name = "feed"
        self.location = settings.feed_url

    def _read(self) -> str:
        try:
            if self.location.startswith(("http://", "https://")):
                resp = requests.get(self.location, timeout=(5, 60))
                resp.raise_for_status()
                return resp.text
            return Path(self.location).read_text(encoding="utf-8", errors="replace")
        except (requests.RequestException, OSError) as exc:
            raise SourceError(f"feed {self.location!r}: {exc}") from exc

    def pages(self, cursor: dict[str, Any], budget: CallBudget) -> Iterator[Page]:
        """Cursor: ``{"offset": n}``, the records already read. One read, not charged to the budget."""
        items, problems = parse_feed(self._read(), name=self.location)
        size = self.settings.crawl_page_size
        start = int(cursor.get("offset", 0))
        for offset in range(start, max(len(items), start + 1), size):
            listings: list[SourceListing] = []
            for item in items[offset: offset + size]:
                try:
                    listings.append(listing_from_item(item, currency=self.settings.ebay_currency))
                except ValueError as exc:
                    problems.append(f"rejected item: {exc}")
            nxt = offset + size
            complete = not any(p.startswith("malformed") for p in problems)
            yield Page(listings, {"offset": nxt} if nxt < len(items) else {}, problems, complete)
            problems = []

    def details(self, listings: list[SourceListing], budget: CallBudget) -> list[SourceListing]:
        """A feed has nothing more to tell about a listing."""
        return listings
