"""The eBay Browse API source (Cars & Trucks); the sandbox marketplace speaks the same API.

How a crawl stays within what eBay allows:

- **Queries under the 10,000-result cap.** The Browse API serves at most 10,000 results per query
  (offset + limit). The first call asks for the category's refinements
  (``fieldgroups=ASPECT_REFINEMENTS``): the Make aspect's distribution lists the makes the marketplace
  actually has, with their counts. Each make becomes a query (``aspect_filter=categoryId:6001,Make:{X}``),
  so each result carries its make; a make over the cap is split into price bands
  (``filter=price:[a..b],priceCurrency:USD``), and a band whose first page still reports a ``total``
  over the cap is halved again. The marketplace's refinement, not the catalogue, is the list of makes:
  it costs one call, carries the counts that decide the splits, and needs no catalogue to crawl.
  Listings without a Make aspect are not reached; without a Make refinement at all, the category is
  crawled whole (split by price only).
- **One token, reused.** The OAuth client-credentials token is minted once, kept until shortly before it
  expires, and minted once more when a call answers 401.
- **Retries that listen.** 429 and 5xx are retried with exponential backoff, honouring ``Retry-After``
  (capped, so a crawl never sleeps for hours); a 429 that persists pauses the crawl.
- **Politeness.** Calls to the host are spaced by ``host_delay_s``; at most ``host_concurrency`` detail
  calls run at once; every call is charged to the daily budget (token calls are not: eBay counts them
  apart).

A search page that cannot be read (an error status, malformed JSON, a ``next`` link that loops or
leaves the host) ends its query: the reason is recorded and the crawl goes on, marked incomplete.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from autodetect.settings import Settings
from autodetect.sources.base import BudgetExhausted, CallBudget, Page, SourceError, SourceListing
from autodetect.sources.items import listing_from_item, parse_int

SEARCH_PATH = "/buy/browse/v1/item_summary/search"
ITEM_PATH = "/buy/browse/v1/item/"
SCOPE = "https://api.ebay.com/oauth/api_scope"
MAX_RESULTS = 10_000  # the Browse API serves no result past this offset
FIRST_SPLIT_CENTS = 2_000_000  # an open price band [a..] is first cut at max(2a, 20,000.00)
MAX_RETRY_AFTER_S = 60
TIMEOUT = (5, 30)  # connect, read


def split_band(query: dict[str, Any]) -> list[dict[str, Any]] | None:
    """Two queries whose price bands (in cents, bounds inclusive) cover ``query``'s; None if too narrow."""
    lo, hi = query.get("lo", 0), query.get("hi")
    if hi is None:
        mid = max(2 * lo, FIRST_SPLIT_CENTS)
    elif hi - lo >= 1:
        mid = (lo + hi) // 2
    else:
        return None
    return [{**query, "lo": lo, "hi": mid}, {**query, "lo": mid + 1, "hi": hi}]


def price_band(query: dict[str, Any]) -> str:
    """The query's band in the API's syntax: "0.00..20000.00", "20000.01.." (no upper bound)."""
    hi = "" if query["hi"] is None else f"{query['hi'] / 100:.2f}"
    return f"{query['lo'] / 100:.2f}..{hi}"


def same_page(url: str) -> str:
    """The URL with its query parameters sorted: two links to one page compare equal."""
    parts = urlsplit(url)
    return parts._replace(query=urlencode(sorted(parse_qsl(parts.query, keep_blank_values=True)))).geturl()


def in_band(price: Decimal | None, query: dict[str, Any]) -> bool:
    cents = None if price is None else price * 100
    return cents is None or (query["lo"] <= cents and (query["hi"] is None or cents <= query["hi"]))


def describe(query: dict[str, Any]) -> str:
    make = query.get("make") or "all makes"
    return f"{make} {price_band(query)}" if "lo" in query else make


class BrowseSource:
    def __init__(self, settings: Settings, session: requests.Session | None = None):
        self.settings = settings
        self.name = settings.source
        self.base = settings.marketplace_url.rstrip("/")
        self.host = urlsplit(self.base).netloc
        self.http = session or requests.Session()
        retry = Retry(total=settings.crawl_retries, backoff_factor=settings.crawl_backoff_s,
                      status_forcelist=(429, 500, 502, 503, 504), allowed_methods=None,
                      raise_on_status=False, retry_after_max=MAX_RETRY_AFTER_S)
        adapter = HTTPAdapter(max_retries=retry, pool_maxsize=settings.host_concurrency)
        self.http.mount("http://", adapter)
        self.http.mount("https://", adapter)
        self._credentials = (settings.ebay_client_id, settings.ebay_client_secret.get_secret_value())
        if not all(self._credentials) and self.name == "sandbox":
            self._credentials = ("sandbox", "sandbox")  # the sandbox takes any credentials
        self._token: str | None = None
        self._token_expires = 0.0
        self._token_lock = threading.Lock()
        self._pace_lock = threading.Lock()
        self._next_call = 0.0

    # --- calls --------------------------------------------------------------------------------
    def _valid_token(self) -> str:
        with self._token_lock:
            if self._token is None or time.monotonic() >= self._token_expires:
                url = self.settings.token_url
                if not all(self._credentials):
                    raise SourceError("AUTODETECT_EBAY_CLIENT_ID and AUTODETECT_EBAY_CLIENT_SECRET are not set")
                try:
                    resp = self.http.post(url, auth=self._credentials, timeout=TIMEOUT,
                                          data={"grant_type": "client_credentials", "scope": SCOPE})
                    resp.raise_for_status()
                    body = resp.json()
                    self._token = str(body["access_token"])
                    lifetime = float(body.get("expires_in", 7200))
                except (requests.RequestException, ValueError, KeyError, TypeError) as exc:
                    raise SourceError(f"token from {url}: {exc}") from exc
                self._token_expires = time.monotonic() + lifetime * 0.9
            return self._token

    def _drop_token(self, token: str) -> None:
        with self._token_lock:
            if self._token == token:  # not re-minted already by another thread
                self._token = None

    def _pace(self) -> None:
        if self.settings.host_delay_s <= 0:
            return
        with self._pace_lock:
            time.sleep(max(0.0, self._next_call - time.monotonic()))
            self._next_call = time.monotonic() + self.settings.host_delay_s

    def _get(self, url: str, budget: CallBudget) -> requests.Response:
        """GET with the token (minted once more on a 401), paced, charged to the budget."""
        for _ in range(2):
            token = self._valid_token()
            budget.spend()
            self._pace()
            try:
                resp = self.http.get(url, timeout=TIMEOUT, headers={
                    "Authorization": f"Bearer {token}", "X-EBAY-C-MARKETPLACE-ID": self.settings.ebay_marketplace_id})
            except requests.RequestException as exc:
                raise SourceError(f"GET {url}: {exc}") from exc
            if resp.status_code == 429:
                raise BudgetExhausted(f"the marketplace still answers 429 after retries: {url}")
            if resp.status_code != 401:
                return resp
            self._drop_token(token)
        raise SourceError(f"GET {url}: 401 with a fresh token")

    def _search(self, url: str, budget: CallBudget) -> tuple[dict[str, Any] | None, str | None]:
        """A search page's body, or why it cannot be read."""
        resp = self._get(url, budget)
        if resp.status_code != 200:
            return None, f"search page error: http {resp.status_code} at {url}"
        try:
            body = resp.json()
        except ValueError:
            return None, f"malformed JSON: search page {url}"
        return (body, None) if isinstance(body, dict) else (None, f"malformed JSON: not an object at {url}")

    def search_url(self, query: dict[str, Any], **extra: Any) -> str:
        category = self.settings.ebay_category_id
        params: dict[str, Any] = {"category_ids": category, "limit": self.settings.crawl_page_size, "offset": 0}
        if query.get("make"):
            params["aspect_filter"] = f"categoryId:{category},Make:{{{query['make']}}}"
        if "lo" in query:
            params["filter"] = f"price:[{price_band(query)}],priceCurrency:{self.settings.ebay_currency}"
        return f"{self.base}{SEARCH_PATH}?{urlencode({**params, **extra})}"

    # --- the crawl ----------------------------------------------------------------------------
    def _queries(self, budget: CallBudget) -> tuple[list[dict[str, Any]], list[str]]:
        """One query per make (price bands for a make over the cap), from the Make refinement."""
        body, problem = self._search(self.search_url({}, limit=1, fieldgroups="ASPECT_REFINEMENTS"), budget)
        refinement = (body or {}).get("refinement")
        aspects = refinement.get("aspectDistributions") if isinstance(refinement, dict) else None
        makes = next((a.get("aspectValueDistributions") for a in aspects if isinstance(a, dict)
                      and a.get("localizedAspectName") == "Make"), None) if isinstance(aspects, list) else None
        queries: list[dict[str, Any]] = []
        for value in makes if isinstance(makes, list) else []:
            name = str(value.get("localizedAspectValue") or "") if isinstance(value, dict) else ""
            count = parse_int(value.get("matchCount")) if name else None
            if count:
                queries += split_band({"make": name}) if count > MAX_RESULTS else [{"make": name}]
        if queries:
            return queries, []
        return [{}], [problem or "no make refinement: the category is crawled whole"]

    def _next_link(self, body: dict[str, Any], url: str, seen: set[str], total: int) -> tuple[str | None, str | None]:
        """The next page's URL, or None and why the ``next`` link is not followed."""
        nxt = body.get("next")
        if not isinstance(nxt, str) or not nxt:
            return None, None
        link = urljoin(url, nxt)
        if urlsplit(link).netloc != self.host:
            return None, f"bad next link: leaves {self.host} for {link}"
        if same_page(link) in seen:
            return None, f"bad next link: loops back to {link}"
        if len(seen) * self.settings.crawl_page_size >= max(total, MAX_RESULTS):
            return None, f"bad next link: past the {max(total, MAX_RESULTS)} results at {link}"
        return link, None

    def _listings(self, body: dict[str, Any], query: dict[str, Any]) -> tuple[list[SourceListing], list[str]]:
        listings, problems = [], []
        items = body.get("itemSummaries")
        for item in items if isinstance(items, list) else []:
            try:
                listings.append(listing_from_item(item, make=query.get("make"), currency=self.settings.ebay_currency))
            except ValueError as exc:
                problems.append(f"rejected item: {exc}")
        return listings, problems

    def pages(self, cursor: dict[str, Any], budget: CallBudget) -> Iterator[Page]:
        """Cursor: ``{"queries": [query, ...], "next": url}``: the queries left, the first one under way
        and ``next`` its next page."""
        todo: list[dict[str, Any]] = list(cursor.get("queries") or [])
        url: str | None = cursor.get("next")
        problems: list[str] = []
        if not todo:
            todo, problems = self._queries(budget)
        seen: set[str] = set()
        while todo:
            query, rest = todo[0], todo[1:]
            first, url = url is None, url or self.search_url(query)
            seen.add(same_page(url))
            body, problem = self._search(url, budget)
            listings: list[SourceListing] = []
            next_url, complete = None, body is not None
            if body is None:
                problems.append(f"{problem} ({describe(query)} cut short)")
            else:
                total = body.get("total") if isinstance(body.get("total"), int) else 0
                listings, rejected = self._listings(body, query)
                problems += rejected
                if first and "lo" in query and not all(in_band(i.price, query) for i in listings):
                    # A marketplace that ignores price filters: crawl the make once, unsplit.
                    problems.append(f"price filter ignored: {describe(query)} served other prices")
                    rest = [q for q in rest if q.get("make") != query.get("make")]
                    todo = [query, *rest]
                elif first and total > MAX_RESULTS and (halves := split_band(query)):
                    todo = [*halves, *rest]
                    yield Page([], {"queries": todo}, [*problems, f"split: {describe(query)} has {total} results"])
                    url, problems = None, []
                    seen.clear()
                    continue
                if first and total > MAX_RESULTS:
                    problems.append(f"over the cap: {describe(query)} has {total} results, {MAX_RESULTS} reachable")
                    complete = False
                next_url, problem = self._next_link(body, url, seen, total)
                if not listings and not rejected and (total or next_url):
                    problems.append(f"empty page: {url}")
                if problem:
                    problems.append(problem)
                    complete = False
            if next_url:
                yield Page(listings, {"queries": todo, "next": next_url}, problems, complete)
            else:
                yield Page(listings, {"queries": rest} if rest else {}, problems, complete)
                todo = rest
                seen.clear()
            url, problems = next_url, []

    def details(self, listings: list[SourceListing], budget: CallBudget) -> list[SourceListing]:
        if len(listings) <= 1:
            return [self._detail(item, budget) for item in listings]
        with ThreadPoolExecutor(max_workers=self.settings.host_concurrency) as pool:
            return list(pool.map(lambda item: self._detail(item, budget), listings))

    def _detail(self, listing: SourceListing, budget: CallBudget) -> SourceListing:
        """The item call, for the Make/Model/Year aspects a summary does not carry."""
        resp = self._get(f"{self.base}{ITEM_PATH}{quote(listing.external_id, safe='')}", budget)
        try:
            if resp.status_code != 200:
                raise ValueError(f"http {resp.status_code}")
            detail = resp.json()
            if not isinstance(detail, dict):
                raise ValueError("not an object")
            merged = listing_from_item({**listing.raw, **detail, "itemId": listing.external_id},
                                       make=listing.make, currency=self.settings.ebay_currency)
        except ValueError as exc:
            listing.problems.append(f"item details: {exc}")
            return listing
        merged.problems = list(dict.fromkeys(listing.problems + merged.problems))
        return merged
