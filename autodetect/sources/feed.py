"""A generic feed: a URL or file holding listings in the Browse API's JSON shape (a search page,
a list of items, or JSON lines), or a CSV with one listing per row, so a catalogue export can be
imported."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests

from autodetect.settings import Settings
from autodetect.sources.base import Page, SourceListing
from autodetect.sources.browse import listing_from_summary

CSV_PHOTO_COLUMNS = ("photo1", "photo2", "photo3", "photo4", "photo5")


def _row_to_item(row: dict[str, str]) -> dict[str, Any]:
    """A CSV row (itemId,title,price,currency,make,model,year,mileage,city,postalCode,country,url,photo1..)."""
    photos = [row[c] for c in CSV_PHOTO_COLUMNS if row.get(c)]
    photos += [p for p in (row.get("photos") or "").split("|") if p]
    aspects = [{"name": n.capitalize(), "value": row[n]} for n in ("make", "model", "year", "mileage") if row.get(n)]
    return {
        "itemId": row.get("itemId") or row.get("id"), "title": row.get("title"),
        "price": {"value": row.get("price"), "currency": row.get("currency") or "USD"},
        "image": {"imageUrl": photos[0]} if photos else None,
        "additionalImages": [{"imageUrl": p} for p in photos[1:]],
        "itemLocation": {"city": row.get("city"), "postalCode": row.get("postalCode"), "country": row.get("country")},
        "condition": row.get("condition"), "itemWebUrl": row.get("url"), "localizedAspects": aspects,
    }


def parse_feed(text: str, *, name: str = "") -> tuple[list[dict[str, Any]], list[str]]:
    """Items and the reasons records were rejected."""
    stripped = text.lstrip()
    if name.endswith(".csv") or (stripped and stripped[0] not in "[{"):
        return [_row_to_item(r) for r in csv.DictReader(io.StringIO(text))], []
    try:
        body = json.loads(text)
    except json.JSONDecodeError:
        items, rejected = [], []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    items.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    rejected.append(f"line {n}: malformed JSON ({exc.msg})")
        return items, rejected
    if isinstance(body, dict):
        body = body.get("itemSummaries") or body.get("items") or []
    return [i for i in body if isinstance(i, dict)], [f"not an object: {i!r}"[:80] for i in body if not isinstance(i, dict)]


class FeedSource:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.name = "feed"
        self.location = settings.feed_url

    def _read(self) -> str:
        if self.location.startswith(("http://", "https://")):
            resp = requests.get(self.location, timeout=(5, 60))
            resp.raise_for_status()
            return resp.text
        return Path(self.location).read_text(encoding="utf-8")

    def pages(self, cursor: dict[str, Any]) -> Iterator[Page]:
        items, rejected = parse_feed(self._read(), name=self.location)
        size = self.settings.crawl_page_size
        start = int(cursor.get("offset", 0))
        for offset in range(start, max(len(items), 1), size):
            listings: list[SourceListing] = []
            for item in items[offset: offset + size]:
                try:
                    listings.append(listing_from_summary(item))
                except (ValueError, AttributeError, TypeError) as exc:
                    rejected.append(f"unusable item: {exc}")
            nxt = offset + size
            yield Page(listings, {"offset": nxt} if nxt < len(items) else {}, rejected)
            rejected = []


