"""The eBay Browse API source (Cars & Trucks), also used against the sandbox marketplace."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urljoin

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from autodetect.settings import Settings
from autodetect.sources.base import Page, SourceListing, clean_title, parse_int, parse_price

SEARCH_PATH = "/buy/browse/v1/item_summary/search"
ITEM_PATH = "/buy/browse/v1/item/"
SCOPE = "https://api.ebay.com/oauth/api_scope"


def listing_from_summary(item: dict[str, Any]) -> SourceListing:
    """An ``itemSummaries[]`` entry (or an item detail) in the Browse API's shape -> SourceListing."""
    external_id = str(item.get("itemId") or item.get("legacyItemId") or "").strip()
    if not external_id:
        raise ValueError("item without itemId")
    problems: list[str] = []
    price_field = item.get("price") or {}
    price = parse_price(price_field.get("value"))
    if price is None:
        problems.append("missing price" if not price_field.get("value") else f"bad price {price_field.get('value')!r}")
    photos = [u for u in [(item.get("image") or {}).get("imageUrl")] if u]
    photos += [p.get("imageUrl") for p in item.get("additionalImages") or [] if p.get("imageUrl")]
    if not photos:
        problems.append("no photos")
    location = item.get("itemLocation") or {}
    aspects = {a.get("name", "").lower(): a.get("value") for a in item.get("localizedAspects") or []}
    title = clean_title(item.get("title"))
    if not title:
        problems.append("missing title")
    return SourceListing(
        external_id=external_id,
        title=title,
        url=item.get("itemWebUrl"),
        price=price,
        currency=(price_field.get("currency") or None) if price is not None else None,
        photos=list(dict.fromkeys(photos)),
        city=location.get("city"),
        postal_code=location.get("postalCode"),
        country=location.get("country"),
        condition=item.get("condition"),
        make=aspects.get("make"),
        model=aspects.get("model"),
        year=parse_int(aspects.get("year")),
        mileage=parse_int(aspects.get("mileage")),
        raw=item,
        problems=problems,
    )


class BrowseSource:
    """Pages through category 6001 by ``next`` links; fetches details when a summary lacks Make/Model."""

    def __init__(self, settings: Settings, session: requests.Session | None = None):
        self.settings = settings
        self.name = settings.source
        self.base = settings.marketplace_url.rstrip("/")
        self.http = session or requests.Session()
        retry = Retry(total=5, backoff_factor=0.5, status_forcelist=(429, 500, 502, 503, 504),
                      allowed_methods=None, respect_retry_after_header=True)
        self.http.mount("http://", HTTPAdapter(max_retries=retry, pool_maxsize=settings.host_concurrency))
        self.http.mount("https://", HTTPAdapter(max_retries=retry, pool_maxsize=settings.host_concurrency))
        self._token: str | None = None
        self._token_expires = 0.0
        self.calls = 0

    # --- auth -------------------------------------------------------------------------------
    def _mint_token(self) -> str:
        s = self.settings
        resp = self.http.post(s.token_url, data={"grant_type": "client_credentials", "scope": SCOPE},
                              auth=(s.ebay_client_id or "autodetect", s.ebay_client_secret.get_secret_value() or "x"),
                              timeout=(5, 30))
        resp.raise_for_status()
        body = resp.json()
        self._token = body["access_token"]
        self._token_expires = time.monotonic() + float(body.get("expires_in", 7200)) - 60
        return self._token

    def _get(self, url: str, params: dict[str, Any] | None = None) -> requests.Response:
        for attempt in (1, 2):
            if not self._token or time.monotonic() >= self._token_expires:
                self._mint_token()
            if self.settings.host_delay_s:
                time.sleep(self.settings.host_delay_s)
            self.calls += 1
            resp = self.http.get(url, params=params, timeout=(5, 30), headers={
                "Authorization": f"Bearer {self._token}",
                "X-EBAY-C-MARKETPLACE-ID": self.settings.ebay_marketplace_id,
            })
            if resp.status_code == 401 and attempt == 1:
                self._token = None  # expired or revoked: mint once more
                continue
            return resp
        return resp

    # --- listings ---------------------------------------------------------------------------
    def pages(self, cursor: dict[str, Any]) -> Iterator[Page]:
        url: str | None = cursor.get("next") or (
            f"{self.base}{SEARCH_PATH}?category_ids={self.settings.ebay_category_id}"
            f"&limit={self.settings.crawl_page_size}&offset=0"
        )
        seen_urls: set[str] = set()
        while url:
            if url in seen_urls:
                yield Page([], {}, rejected=[f"next link loops back to {url}"])
                return
            seen_urls.add(url)
            resp = self._get(url)
            try:
                resp.raise_for_status()
                body = resp.json()
            except (requests.HTTPError, ValueError) as exc:
                raise SourceError(f"search page {url}: {exc}") from exc
            listings, rejected = [], []
            for item in body.get("itemSummaries") or []:
                try:
                    listing = listing_from_summary(item)
                except (ValueError, AttributeError, TypeError) as exc:
                    rejected.append(f"unusable item: {exc}")
                    continue
                listings.append(listing)
            nxt = body.get("next")
            url = urljoin(self.base + "/", nxt) if nxt else None
            yield Page(listings, {"next": url} if url else {}, rejected)

    def details(self, listing: SourceListing) -> SourceListing:
        """The item call, for the Make/Model/Year aspects a summary does not carry."""
        resp = self._get(f"{self.base}{ITEM_PATH}{listing.external_id}")
        if resp.status_code != 200:
            listing.problems.append(f"item details: http {resp.status_code}")
            return listing
        detail = listing_from_summary({**listing.raw, **resp.json()})
        detail.problems = listing.problems + [p for p in detail.problems if p not in listing.problems]
        return detail


class SourceError(Exception):
    """A page could not be read (malformed JSON, an error status after retries)."""
