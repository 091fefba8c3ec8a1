"""The sandbox marketplace over HTTP, in the eBay Browse API's shapes.

Endpoints: ``POST /identity/v1/oauth2/token`` (client credentials, any id and secret),
``GET /buy/browse/v1/item_summary/search`` and ``GET /buy/browse/v1/item/{item_id}`` (both need a
bearer token the server issued), ``GET /photos/{item number}/{position}.jpg`` and a small HTML page
per listing at ``GET /itm/{item number}``. Absolute URLs in responses use the request's Host header
(the server's own URL when absent), so they work behind a container network name as well.
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
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, parse_qsl, quote, unquote, urlencode, urlsplit

from autodetect.sandbox.marketplace import CATEGORY_ID, Listing, Marketplace

TOKEN_PATH = "/identity/v1/oauth2/token"
SEARCH_PATH = "/buy/browse/v1/item_summary/search"
ITEM_PATH = "/buy/browse/v1/item/"
TOKEN_LIFETIME_S = 7200
MAX_LIMIT = 200
DEFAULT_LIMIT = 50
_MAKE_FILTER = re.compile(r"(?:^|,)\s*Make:\{([^}]*)\}")


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
    if listing.photos:
        item["image"] = {"imageUrl": f"{base}{listing.photos[0].path}"}
        item["additionalImages"] = [{"imageUrl": f"{base}{p.path}"} for p in listing.photos[1:]]
    return item


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
        makes = frozenset(v.strip() for m in _MAKE_FILTER.finditer(args.get("aspect_filter", ""))
                          for v in m.group(1).split("|") if v.strip())
        categories = {c.strip() for c in args.get("category_ids", CATEGORY_ID).split(",")}
        if CATEGORY_ID in categories:
            total, page = self.server.app.marketplace.search(args.get("q"), makes, offset, limit)
        else:
            total, page = 0, []
        base = self._base()

        def link(new_offset: int) -> str:
            rest = [(k, v) for k, v in params if k not in ("limit", "offset")]
            return f"{base}{SEARCH_PATH}?{urlencode(rest + [('limit', limit), ('offset', new_offset)])}"

        body: dict[str, Any] = {"href": f"{base}{self.path}", "total": total, "limit": limit, "offset": offset}
        if offset + limit < total:
            body["next"] = link(offset + limit)
        if offset > 0:
            body["prev"] = link(max(0, offset - limit))
        if page:
            body["itemSummaries"] = [_summary(listing, base) for listing in page]
        self._json(HTTPStatus.OK, body)

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
        #: Requests per endpoint: token, search, item, photo, page, unknown.
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


def serve(host: str = "127.0.0.1", port: int = 8765, listings: int = 500, models: int = 10, seed: int = 0) -> None:
    """Run a sandbox marketplace until interrupted (``autodetect sandbox serve``)."""
    with SandboxServer(Marketplace(listings, models, seed), host, port) as server:
        print(f"sandbox marketplace: {listings} listings of {models} models (seed {seed}) at {server.url}",
              flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
