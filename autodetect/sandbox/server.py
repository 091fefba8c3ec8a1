"""The sandbox marketplace over HTTP, in the eBay Browse API's shapes.

Endpoints: ``POST /identity/v1/oauth2/token`` (client credentials, any id and secret),
``GET /buy/browse/v1/item_summary/search`` and ``GET /buy/browse/v1/item/{item_id}`` (both need a
bearer token the server issued), ``GET /photos/{item number}/{position}.jpg``, a small HTML page
per listing at ``GET /itm/{item number}``, ``GET /health`` (``{"status": "ok", "listings": N}``) and, for
scoring price estimates, ``GET /expected-price/{item id or number}``: the listing's generating price and
that function's own deal rating of its asking price (no token needed; not part of eBay's API).
Absolute URLs in responses use the request's Host header (the server's own URL when absent), so they
work behind a container network name as well.

Search takes ``q``, ``category_ids``, ``limit`` (1..200), ``offset``,
``aspect_filter=categoryId:6001,Make:{Audi|VW}``, ``filter=price:[a..b],priceCurrency:USD`` (dollars,
bounds inclusive, either one open; other comma-separated filters are ignored; a listing without a
price never matches) and ``fieldgroups`` (with ``ASPECT_REFINEMENTS`` or ``FULL`` the answer carries
``refinement.aspectDistributions``: the Make distribution, in canonical make names, of what the
search matches). As on eBay, no result past the 10,000th can be asked for: ``offset + limit`` over
10,000 answers 400, and no ``next`` link points past it; ``total`` still counts every distinct match.
"""

from __future__ import annotations

import base64
import html
import json
import re
import secrets
import threading
import time
from collections import Counter
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal, InvalidOperation
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, parse_qsl, quote, unquote, urlencode, urlsplit

from autodetect.sandbox.marketplace import CATEGORY_ID, Listing, Marketplace, PriceBand

TOKEN_PATH = "/identity/v1/oauth2/token"
HEALTH_PATH = "/health"
SEARCH_PATH = "/buy/browse/v1/item_summary/search"
ITEM_PATH = "/buy/browse/v1/item/"
EXPECTED_PRICE_PATH = "/expected-price/"
TOKEN_LIFETIME_S = 7200
MAX_LIMIT = 200
DEFAULT_LIMIT = 50
MAX_RESULTS = 10_000  # as on eBay: offset + limit may not pass this
CATEGORY_NAME = "Cars & Trucks"
REFINEMENT_GROUPS = frozenset({"ASPECT_REFINEMENTS", "FULL"})
_MAKE_FILTER = re.compile(r"(?:^|,)\s*Make:\{([^}]*)\}")
_PRICE_FILTER = re.compile(r"(?:^|,)\s*price\s*:\s*\[([^\]]*)\]")
_CURRENCY_FILTER = re.compile(r"(?:^|,)\s*priceCurrency\s*:\s*([^,]*)")
_CENTS = Decimal(100)


class BadRequest(ValueError):
    """A search parameter the API refuses: answered 400 with this error id and message."""

    def __init__(self, error_id: int, message: str):
        super().__init__(message)
        self.error_id = error_id


def _dollars_to_cents(text: str, *, upper: bool) -> int | None:
    text = text.strip()
    if not text:
        return None
    try:
        value = Decimal(text) * _CENTS
    except InvalidOperation:
        raise BadRequest(12014, f"The price '{text}' in the 'filter' parameter is not a number.") from None
    if not value.is_finite() or value < 0:
        raise BadRequest(12014, f"The price '{text}' in the 'filter' parameter is not a valid amount.")
    return int(value.to_integral_value(ROUND_FLOOR if upper else ROUND_CEILING))


def price_band(filters: list[str]) -> PriceBand:
    """The ``price:[a..b]`` band of ``filter`` values, in cents, bounds inclusive: ``(lo, hi)``, either
    None when open, ``(None, None)`` without a price filter. Values may come URL-encoded once more;
    BadRequest for a malformed band, an inverted one, or a currency other than USD."""
    text = ",".join(unquote(f) if "%" in f else f for f in filters)
    bands = _PRICE_FILTER.findall(text)
    if not bands:
        if re.search(r"(?:^|,)\s*price\s*:", text):
            raise BadRequest(12014, "The 'price' filter must read price:[low..high], either bound optional.")
        return None, None
    if len(bands) > 1:
        raise BadRequest(12014, "The 'price' filter is given more than once.")
    low, sep, high = bands[0].partition("..")
    if not sep or not (low.strip() or high.strip()):
        raise BadRequest(12014, "The 'price' filter must read price:[low..high], either bound optional.")
    lo, hi = _dollars_to_cents(low, upper=False), _dollars_to_cents(high, upper=True)
    if lo is not None and hi is not None and lo > hi:
        raise BadRequest(12014, "The 'price' filter's low bound is above its high bound.")
    currency = _CURRENCY_FILTER.search(text)
    if currency and currency.group(1).strip().upper() != "USD":
        raise BadRequest(12015, f"The sandbox lists in USD only, not '{currency.group(1).strip()}'.")
    return lo, hi


def _error(error_id: int, message: str, category: str = "REQUEST", domain: str = "API_BROWSE") -> dict[str, Any]:
    return {"errors": [{"errorId": error_id, "domain": domain, "category": category, "message": message}]}


def _summary(listing: Listing, base: str) -> dict[str, Any]:
    """An ``itemSummaries[]`` entry; ``price`` and ``image`` are left out when the listing lacks them."""
    item: dict[str, Any] = {
        "itemId": listing.item_id,
        "title": listing.title,
        "itemHref": f"{base}{ITEM_PATH}{quote(listing.item_id, safe='')}",
        "itemLocation": {"city": listing.city.name, "postalCode": listing.city.postal_code,
                         "stateOrProvince": listing.city.state, "country": "US"},
        "condition": listing.condition,
        "conditionId": "3000",
        "itemWebUrl": f"{base}{listing.web_path}",
    }
    if listing.price is not None:
        item["price"] = {"value": listing.price, "currency": listing.currency}
    offer = listing.offer
    item["buyingOptions"] = list(offer.buying_options)
    if offer.bid_count is not None:
        item["bidCount"] = offer.bid_count
        item["currentBidPrice"] = {"value": offer.current_bid, "currency": listing.currency}
    if listing.photos:
        item["image"] = {"imageUrl": f"{base}{listing.photos[0].path}"}
        item["additionalImages"] = [{"imageUrl": f"{base}{p.path}"} for p in listing.photos[1:]]
    return item


def expected_price(listing: Listing) -> dict[str, Any]:
    """The body of ``GET /expected-price/{item}``."""
    offer = listing.offer
    return {"itemId": listing.item_id, "className": listing.class_name, "currency": offer.currency,
            "expectedPrice": round(offer.expected, 2), "askingPrice": offer.price, "dealRating": offer.rating,
            "buyingOptions": list(offer.buying_options), "trim": offer.trim, "state": listing.city.state,
            "year": listing.year, "mileage": listing.mileage, "quirk": offer.quirk}


def _detail(listing: Listing, base: str) -> dict[str, Any]:
    aspects = [{"type": "STRING", "name": name, "value": value} for name, value in listing.aspects.items()]
    return {**_summary(listing, base), "categoryId": CATEGORY_ID, "localizedAspects": aspects}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: every response carries Content-Length
    timeout = 30  # idle keep-alive connections are closed after this many seconds
    disable_nagle_algorithm = True  # headers and body go out as separate writes
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence per-request logs
        pass

    # --- plumbing -------------------------------------------------------------------------------
    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, payload: dict[str, Any]) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json")

    def _base(self) -> str:
        host = self.headers.get("Host")
        return f"http://{host}" if host else self.server.app.url

    def _authorized(self) -> bool:
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Bearer ") and self.server.app.token_valid(auth[7:].strip()):
            return True
        self._json(HTTPStatus.UNAUTHORIZED, _error(1001, "Invalid access token", "REQUEST", "OAuth"))
        return False

    # --- routes ---------------------------------------------------------------------------------
    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        path = urlsplit(self.path).path
        if path != TOKEN_PATH:
            self.server.app.count("unknown")
            self._json(HTTPStatus.NOT_FOUND, _error(2002, "Resource not found"))
            return
        self.server.app.count("token")
        form = parse_qs(body.decode("utf-8", "replace"))
        if not self._basic_auth():
            self._json(HTTPStatus.UNAUTHORIZED,
                       {"error": "invalid_client", "error_description": "client authentication failed"})
        elif form.get("grant_type") != ["client_credentials"]:
            self._json(HTTPStatus.BAD_REQUEST, {"error": "unsupported_grant_type",
                                                "error_description": "grant type in request is not supported"})
        else:
            self._json(HTTPStatus.OK, {"access_token": self.server.app.issue_token(),
                                       "expires_in": TOKEN_LIFETIME_S, "token_type": "Application Access Token"})

    def _basic_auth(self) -> bool:
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Basic "):
            return False
        try:
            client_id, _, secret = base64.b64decode(auth[6:].strip(), validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        return bool(client_id and secret)

    def do_GET(self) -> None:  # noqa: N802
        app = self.server.app
        url = urlsplit(self.path)
        path = url.path
        if path == SEARCH_PATH:
            app.count("search")
            if self._authorized():
                self._search(url.query)
        elif path.startswith(ITEM_PATH):
            app.count("item")
            if self._authorized():
                listing = app.marketplace.listing_for_item(unquote(path[len(ITEM_PATH):]))
                if listing is None:
                    self._json(HTTPStatus.NOT_FOUND, _error(11001, "The specified item Id was not found."))
                else:
                    self._json(HTTPStatus.OK, _detail(listing, self._base()))
        elif path.startswith(EXPECTED_PRICE_PATH):
            app.count("expected_price")
            wanted = unquote(path[len(EXPECTED_PRICE_PATH):])
            listing = app.marketplace.listing_for_item(wanted if "|" in wanted else f"v1|{wanted}|0")
            if listing is None:
                self._json(HTTPStatus.NOT_FOUND, _error(11001, "The specified item Id was not found."))
            else:
                self._json(HTTPStatus.OK, expected_price(listing))
        elif path.startswith("/photos/"):
            app.count("photo")
            data = app.marketplace.photo_bytes(path)
            if data is None:
                self._send(HTTPStatus.NOT_FOUND, b"Not Found", "text/plain")
            else:
                self._send(HTTPStatus.OK, data, "image/jpeg")
        elif path.startswith("/itm/"):
            app.count("page")
            self._page(path[len("/itm/"):])
        elif path == HEALTH_PATH:
            app.count("health")
            self._json(HTTPStatus.OK, {"status": "ok", "listings": len(app.marketplace)})
        else:
            app.count("unknown")
            self._json(HTTPStatus.NOT_FOUND, _error(2002, "Resource not found"))

    def _search(self, query: str) -> None:
        params = parse_qsl(query, keep_blank_values=True)
        args = dict(params)
        try:
            limit = int(args.get("limit", DEFAULT_LIMIT))
            offset = int(args.get("offset", 0))
        except ValueError:
            limit = offset = -1
        if not 1 <= limit <= MAX_LIMIT or offset < 0:
            self._json(HTTPStatus.BAD_REQUEST, _error(
                12002, f"'limit' must be 1..{MAX_LIMIT} and 'offset' a non-negative integer."))
            return
        if offset + limit > MAX_RESULTS:
            self._json(HTTPStatus.BAD_REQUEST, _error(
                12003, f"The 'offset' ({offset}) plus 'limit' ({limit}) may not exceed {MAX_RESULTS}: "
                       f"no more than {MAX_RESULTS} results can be retrieved for a search. "
                       "Narrow the search with filters."))
            return
        try:
            price = price_band([v for k, v in params if k == "filter"])
        except BadRequest as exc:
            self._json(HTTPStatus.BAD_REQUEST, _error(exc.error_id, str(exc)))
            return
        makes = frozenset(v.strip() for m in _MAKE_FILTER.finditer(args.get("aspect_filter", ""))
                          for v in m.group(1).split("|") if v.strip())
        categories = {c.strip() for c in args.get("category_ids", CATEGORY_ID).split(",")}
        groups = {g.strip().upper() for v in (v for k, v in params if k == "fieldgroups") for g in v.split(",")}
        marketplace = self.server.app.marketplace
        found = marketplace.matches(args.get("q"), makes, price) if CATEGORY_ID in categories else None
        total = found.total if found is not None else 0
        served = len(found.served) if found is not None else 0
        page = marketplace.page(found, offset, limit) if found is not None else []
        base = self._base()

        def link(new_offset: int) -> str:
            rest = [(k, v) for k, v in params if k not in ("limit", "offset")]
            return f"{base}{SEARCH_PATH}?{urlencode(rest + [('limit', limit), ('offset', new_offset)])}"

        body: dict[str, Any] = {"href": f"{base}{self.path}", "total": total, "limit": limit, "offset": offset}
        if offset + limit < served and offset + 2 * limit <= MAX_RESULTS:
            body["next"] = link(offset + limit)
        if offset > 0:
            body["prev"] = link(max(0, offset - limit))
        if page:
            body["itemSummaries"] = [_summary(listing, base) for listing in page]
        if groups & REFINEMENT_GROUPS:
            counts = marketplace.make_counts(found) if found is not None else {}
            body["refinement"] = self._refinement(params, counts, total)
        self._json(HTTPStatus.OK, body)

    def _refinement(self, params: list[tuple[str, str]], makes: dict[str, int], total: int) -> dict[str, Any]:
        """eBay's ``refinement`` container: the Make distribution, each value with the search that selects it."""
        base = self._base()
        rest = [(k, v) for k, v in params if k not in ("offset", "aspect_filter")]

        def href(make: str) -> str:
            selected = rest + [("aspect_filter", f"categoryId:{CATEGORY_ID},Make:{{{make}}}")]
            return f"{base}{SEARCH_PATH}?{urlencode(selected)}"

        refinement: dict[str, Any] = {"dominantCategoryId": CATEGORY_ID}
        if total:
            in_category = [(k, v) for k, v in rest if k != "category_ids"] + [("category_ids", CATEGORY_ID)]
            refinement["categoryDistributions"] = [{
                "categoryId": CATEGORY_ID, "categoryName": CATEGORY_NAME, "matchCount": total,
                "refinementHref": f"{base}{SEARCH_PATH}?{urlencode(in_category)}"}]
        if makes:
            refinement["aspectDistributions"] = [{"localizedAspectName": "Make", "aspectValueDistributions": [
                {"localizedAspectValue": make, "matchCount": n, "refinementHref": href(make)}
                for make, n in makes.items()]}]
        return refinement

    def _page(self, number: str) -> None:
        listing = self.server.app.marketplace.listing_for_item(f"v1|{number}|0")
        if listing is None:
            self._send(HTTPStatus.NOT_FOUND, b"Not Found", "text/plain")
            return
        photos = "".join(f'<img src="{p.path}" width="384">' for p in listing.photos)
        price = f"{listing.price} {listing.currency}" if listing.price else "price on request"
        page = (f"<!doctype html><title>{html.escape(listing.title)}</title><h1>{html.escape(listing.title)}</h1>"
                f"<p>{html.escape(price)} &middot; {listing.mileage} miles &middot; "
                f"{html.escape(listing.city.name)}, {listing.city.state}</p>{photos}")
        self._send(HTTPStatus.OK, page.encode(), "text/html; charset=utf-8")


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    app: SandboxServer


class SandboxServer:
    """Serves a :class:`Marketplace` on a background thread: ``with SandboxServer(m) as s: s.url``."""

    def __init__(self, marketplace: Marketplace, host: str = "127.0.0.1", port: int = 0):
        self.marketplace = marketplace
        self._httpd = _HTTPServer((host, port), _Handler)
        self._httpd.app = self
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._tokens: dict[str, float] = {}
        #: Requests per endpoint: token, search, item, photo, page, health, expected_price, unknown.
        self.stats: Counter[str] = Counter()

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> SandboxServer:
        if self._thread is None:
            self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                            name="sandbox-marketplace", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def count(self, endpoint: str) -> None:
        with self._lock:
            self.stats[endpoint] += 1

    def issue_token(self) -> str:
        token = f"v^1.1#i^1#sandbox#{secrets.token_urlsafe(24)}"
        with self._lock:
            self._tokens[token] = time.monotonic() + TOKEN_LIFETIME_S
        return token

    def token_valid(self, token: str) -> bool:
        with self._lock:
            return self._tokens.get(token, 0.0) > time.monotonic()


def serve(host: str = "127.0.0.1", port: int = 8765, listings: int = 500, models: int = 10, seed: int = 0,
          price_quirks: bool = True) -> None:
    """Run a sandbox marketplace until interrupted (``autodetect sandbox serve``), by default with the price
    quirks a real marketplace has (placeholders, auctions, other currencies...)."""
    with SandboxServer(Marketplace(listings, models, seed, price_quirks=price_quirks), host, port) as server:
        print(f"sandbox marketplace: {listings} listings of {models} models (seed {seed}) at {server.url}",
              flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
