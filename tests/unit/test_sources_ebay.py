"""The Browse source against a recorded fake of eBay's endpoints (not the sandbox): canned eBay-shaped
JSON from a local ThreadingHTTPServer that counts every call. Crawls write to a fresh SQLite database."""

from __future__ import annotations

import json
import re
import shutil
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import joinedload

from autodetect.db import session_scope
from autodetect.pipeline.discovery import crawl
from autodetect.settings import Settings, configure
from autodetect.sources.browse import ITEM_PATH, SEARCH_PATH, BrowseSource
from autodetect.storage import CrawlState, Listing

TOKEN_PATH = "/identity/v1/oauth2/token"


class FakeEbay(ThreadingHTTPServer):
    """eBay's token, search and item endpoints. ``makes`` holds each make's item summaries, served by
    offset and limit with absolute ``next`` links; ``refine`` answers ``fieldgroups=ASPECT_REFINEMENTS``
    with the Make distribution; ``inflate`` multiplies a make's reported ``total`` (and match count);
    ``canned[(make, offset)]`` replaces a search page (a dict body or raw bytes); ``queue`` holds
    (status, headers, body) answers for the next calls to any endpoint."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.makes: dict[str, list[dict]] = {}
        self.details: dict[str, dict] = {}
        self.inflate: dict[str, int] = {}
        self.canned: dict[tuple[str | None, int], dict | bytes] = {}
        self.queue: list[tuple[int, dict[str, str], bytes]] = []
        self.refine = True
        self.calls: Counter[str] = Counter()
        self.searches: list[dict[str, str]] = []  # query parameters of each search call
        self.arrivals: list[float] = []
        self.tokens: set[str] = set()
        self.revoke_at_search: int | None = None  # revoke every token before this search call
        self.item_delay_s = 0.0
        self.in_flight = self.max_in_flight = 0
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FakeEbay

    def log_message(self, *args) -> None:
        pass

    def _send(self, status: int, body: dict | bytes, headers: dict[str, str] | None = None) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        for k, v in {"Content-Type": "application/json", **(headers or {})}.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        fake = self.server
        with fake.lock:
            fake.calls["token"] += 1
            token = f"token-{fake.calls['token']}"
            fake.tokens.add(token)
        ok = self.path == TOKEN_PATH and self.headers.get("Authorization", "").startswith("Basic ")
        if ok:
            self._send(200, {"access_token": token, "expires_in": 7200, "token_type": "Application Access Token"})
        else:
            self._send(401, {"error": "invalid_client"})

    def do_GET(self) -> None:  # noqa: N802
        fake = self.server
        url = urlsplit(self.path)
        kind = "search" if url.path == SEARCH_PATH else "item" if url.path.startswith(ITEM_PATH) else "other"
        with fake.lock:
            fake.calls[kind] += 1
            fake.arrivals.append(time.monotonic())
            if kind == "search" and fake.calls["search"] == fake.revoke_at_search:
                fake.tokens.clear()
            answer = fake.queue.pop(0) if fake.queue else None
            authorized = self.headers.get("Authorization", "").removeprefix("Bearer ") in fake.tokens
        if answer:
            self._send(answer[0], answer[2], answer[1])
        elif not authorized:
            self._send(401, {"errors": [{"errorId": 1001, "message": "Invalid access token"}]})
        elif kind == "search":
            self._search(dict(parse_qsl(url.query)))
        elif kind == "item":
            self._item(unquote(url.path[len(ITEM_PATH):]))
        else:
            self._send(404, {"errors": [{"errorId": 2002}]})

    def _search(self, q: dict[str, str]) -> None:
        fake = self.server
        with fake.lock:
            fake.searches.append(q)
        if q.get("fieldgroups") == "ASPECT_REFINEMENTS":
            values = [{"localizedAspectValue": make, "matchCount": len(items) * fake.inflate.get(make, 1)}
                      for make, items in fake.makes.items()]
            body: dict = {"total": sum(v["matchCount"] for v in values)}
            if fake.refine:
                body["refinement"] = {"aspectDistributions": [
                    {"localizedAspectName": "Make", "aspectValueDistributions": values}]}
            self._send(200, body)
            return
        m = re.search(r"Make:\{([^}]*)\}", q.get("aspect_filter", ""))
        make = m.group(1) if m else None
        items = fake.makes.get(make, []) if make else [i for items in fake.makes.values() for i in items]
        band = re.search(r"price:\[([\d.]*?)\.\.([\d.]*)\]", q.get("filter", ""))
        if band:
            lo, hi = float(band.group(1) or 0), float(band.group(2) or "inf")
            items = [i for i in items if lo <= float(i["price"]["value"]) <= hi]
        offset, limit = int(q["offset"]), int(q["limit"])
        canned = fake.canned.get((make, offset))
        if canned is not None:
            self._send(200, canned)
            return
        body = {"total": len(items) * fake.inflate.get(make, 1), "offset": offset, "limit": limit}
        if items[offset: offset + limit]:
            body["itemSummaries"] = items[offset: offset + limit]
        if offset + limit < len(items):
            body["next"] = f"{fake.url}{SEARCH_PATH}?{urlencode({**q, 'offset': offset + limit})}"
        self._send(200, body)

    def _item(self, item_id: str) -> None:
        fake = self.server
        with fake.lock:
            fake.in_flight += 1
            fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
        time.sleep(fake.item_delay_s)
        with fake.lock:
            fake.in_flight -= 1
        detail = fake.details.get(item_id)
        self._send(200 if detail else 404, detail or {"errors": [{"errorId": 11001}]})


def summary(n: int, make: str = "Audi", model: str = "TT", price: float = 18450.0, **fields) -> dict:
    return {"itemId": f"v1|{n}|0", "title": f"2015 {make} {model} Premium Plus",
            "price": {"value": f"{price:.2f}", "currency": "USD"},
            "image": {"imageUrl": f"https://i.ebayimg.com/images/{n}/s-l1600.jpg"},
            "itemWebUrl": f"https://www.ebay.com/itm/{n}", "itemLocation": {"postalCode": "787**", "country": "US"},
            "condition": "Used", **fields}


@pytest.fixture
def fake():
    server = FakeEbay()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def make_settings(tmp_path, template_db, fake):
    """eBay settings pointing at the fake, on a fresh copy of the migrated database."""
    shutil.copy(template_db, tmp_path / "autodetect.db")

    def make(**overrides) -> Settings:
        return configure(**{"data_dir": tmp_path, "database_url": "", "source": "ebay", "marketplace_url": fake.url,
                            "ebay_client_id": "client", "ebay_client_secret": "secret", "crawl_page_size": 2,
                            "crawl_backoff_s": 0.01, "crawl_retries": 3, **overrides})
    return make


def run(settings: Settings):
    return crawl(settings, BrowseSource(settings), lambda stage, ids: None)


def stored(settings: Settings) -> dict[str, Listing]:
    with session_scope(settings) as s:
        return {row.external_id: row for row in s.scalars(select(Listing).options(joinedload(Listing.car_class)))}


def test_one_query_per_make_labels_from_the_query_and_a_token_minted_once(make_settings, fake):
    fake.makes = {"Audi": [summary(n) for n in range(1, 6)],
                  "Ford": [summary(n, "Ford", "F-150", 30000) for n in range(6, 9)]}
    settings = make_settings()
    stats = run(settings)
    assert (stats.state, stats.listings, stats.new_listings) == ("idle", 8, 8)
    assert fake.calls["token"] == 1 and fake.calls["search"] == 1 + 3 + 2  # refinement, Audi, Ford
    assert {s.get("aspect_filter") for s in fake.searches[1:]} == {"categoryId:6001,Make:{Audi}",
                                                                   "categoryId:6001,Make:{Ford}"}
    assert all(s["limit"] == "2" and s["category_ids"] == "6001" for s in fake.searches[1:])
    rows = stored(settings)
    assert {r.seller_make for r in rows.values()} == {"Audi", "Ford"}  # the make known from the query
    assert rows["v1|6|0"].car_class.name == "Ford F-150" and rows["v1|6|0"].label_method == "title"
    assert fake.calls["item"] == 0  # every title named its model
    assert stats.calls == fake.calls["search"]


def test_a_401_mints_the_token_once_more(make_settings, fake):
    fake.makes = {"Audi": [summary(n) for n in range(1, 9)]}
    fake.revoke_at_search = 3  # the token "expires" in the middle of the crawl
    stats = run(make_settings())
    assert (stats.state, stats.new_listings) == ("idle", 8)
    assert fake.calls["token"] == 2
    assert fake.calls["search"] == 1 + 4 + 1  # the refused call is made once more


def test_429_and_5xx_are_retried_and_retry_after_is_waited_out(make_settings, fake):
    fake.makes = {"Audi": [summary(1)]}
    fake.queue = [(429, {"Retry-After": "1"}, b'{"errors": [{"errorId": 2001}]}'),
                  (503, {}, b"Service Unavailable")]
    started = time.monotonic()
    stats = run(make_settings())
    assert time.monotonic() - started >= 1.0
    assert (stats.state, stats.new_listings) == ("idle", 1)
    assert fake.calls["search"] == 2 + 2  # refinement answered on the third try, then Audi
    assert stats.calls == 2  # one budgeted call each, however many tries


def test_a_marketplace_that_keeps_answering_429_pauses_the_crawl(make_settings, fake):
    fake.makes = {"Audi": [summary(1)]}
    fake.queue = [(429, {"Retry-After": "0"}, b"{}")] * 10
    stats = run(make_settings(crawl_retries=2))
    assert stats.state == "paused" and "429" in stats.reason
    assert fake.calls["search"] == 3


def test_a_query_over_10000_results_is_split_by_make_then_by_price(make_settings, fake):
    # 25 Fords reported as 25,000 (a band's total is its Fords x 1,000): Ford is split into price bands
    # from the refinement, and a band still over 10,000 is halved again.
    fake.makes = {"Ford": [summary(n, "Ford", "F-150", 1000.0 * n) for n in range(1, 26)],
                  "Audi": [summary(100)]}
    fake.inflate = {"Ford": 1000}
    settings = make_settings(crawl_page_size=200)
    stats = run(settings)
    assert (stats.state, stats.complete, stats.new_listings) == ("idle", True, 26)
    bands = [s["filter"] for s in fake.searches if "filter" in s]
    assert bands == ["price:[0.00..20000.00],priceCurrency:USD",     # 20 Fords: 20,000, split again
                     "price:[0.00..10000.00],priceCurrency:USD",
                     "price:[10000.01..20000.00],priceCurrency:USD",
                     "price:[20000.01..],priceCurrency:USD"]
    assert stats.problems["split"] == 1
    assert len(stored(settings)) == 26


def test_the_call_budget_pauses_the_crawl_and_the_next_crawl_resumes(make_settings, fake):
    fake.makes = {"Audi": [summary(n) for n in range(1, 6)], "BMW": [summary(n, "BMW", "M3") for n in range(6, 9)]}
    settings = make_settings(ebay_daily_call_budget=3)
    first = run(settings)
    assert (first.state, first.calls, first.listings) == ("paused", 3, 4)  # refinement + 2 Audi pages
    with session_scope(settings) as s:
        state = s.scalars(select(CrawlState)).one()
        assert (state.state, state.calls_today, state.locked_until) == ("paused", 3, None)
        assert "offset=4&" in state.cursor["next"]
        s.execute(update(CrawlState).values(calls_day="2000-01-01"))  # the next day
    fake.searches.clear()

    second = run(settings)
    assert (second.state, second.crawl, second.new_listings) == ("idle", 1, 4)  # the same crawl, resumed
    assert [(s["aspect_filter"].split("Make:")[1], s["offset"]) for s in fake.searches] == [
        ("{Audi}", "4"), ("{BMW}", "0"), ("{BMW}", "2")]  # from the cursor: no refinement, no page twice
    assert len(stored(settings)) == 8


def test_details_are_fetched_only_when_the_title_lacks_the_model_concurrently_and_once(make_settings, fake):
    vague = [summary(n, title="Audi for sale, runs and drives, must see") for n in range(1, 7)]
    fake.makes = {"Audi": vague + [summary(7)]}
    fake.details = {f"v1|{n}|0": {"itemId": f"v1|{n}|0", "localizedAspects": [
        {"type": "STRING", "name": "Make", "value": "Audi"}, {"type": "STRING", "name": "Model", "value": "TT"},
        {"type": "STRING", "name": "Year", "value": "2012"}]} for n in range(1, 6)}  # v1|6|0: 404
    fake.item_delay_s = 0.1
    settings = make_settings(crawl_page_size=10, host_concurrency=3)
    stats = run(settings)
    assert fake.calls["item"] == stats.details == 6
    assert fake.max_in_flight == 3
    rows = stored(settings)
    assert (rows["v1|1|0"].car_class.name, rows["v1|1|0"].seller_model, rows["v1|1|0"].year) == ("Audi TT", "TT", 2012)
    assert rows["v1|1|0"].label_method == "aspects"
    assert rows["v1|6|0"].class_id is None and "item details: http 404" in rows["v1|6|0"].issues
    # No detail call for v1|7|0 (its title names the model): its year comes from the title alone.
    assert rows["v1|7|0"].car_class.name == "Audi TT" and rows["v1|7|0"].year == 2015

    again = run(settings)
    assert again.details == 1 and fake.calls["item"] == 7  # only the one no detail call could label
    assert stored(settings)["v1|1|0"].year == 2012  # a summary without aspects does not blank them


def test_calls_to_the_host_are_spaced_by_the_politeness_delay(make_settings, fake):
    fake.makes = {"Audi": [summary(n) for n in range(1, 7)]}
    run(make_settings(host_delay_s=0.1))
    gaps = [b - a for a, b in zip(fake.arrivals, fake.arrivals[1:])]
    assert len(gaps) == 3 and min(gaps) >= 0.09


def test_bad_pages_are_recorded_and_the_crawl_goes_on_without_ending_anything(make_settings, fake):
    fake.makes = {m: [summary(n + k, m, model) for k in range(4)]
                  for n, (m, model) in zip((10, 20, 30, 40, 50), [("Audi", "TT"), ("BMW", "M3"), ("Ford", "F-150"),
                                                                  ("Honda", "Civic"), ("Mazda", "Miata")])}
    settings = make_settings(ended_after_crawls=1)
    assert run(settings).state == "idle"
    fake.canned = {
        ("Audi", 2): b'{"total": 4, "itemSummaries": [{"itemId": ',  # malformed JSON: Audi cut short
        ("BMW", 2): {"total": 4, "itemSummaries": [summary(21, "BMW", "M3"), summary(22, "BMW", "M3")],
                     "next": f"{SEARCH_PATH}?offset=0&aspect_filter=categoryId%3A6001%2CMake%3A%7BBMW%7D"
                             "&category_ids=6001&limit=2"},  # a relative link back to the first page
        ("Ford", 0): {"total": 4, "next": f"{fake.url}{SEARCH_PATH}?category_ids=6001&aspect_filter="
                                          "categoryId%3A6001%2CMake%3A%7BFord%7D&limit=2&offset=2"},  # empty page
        ("Honda", 0): {"total": 4, "itemSummaries": [{"title": "no id"}, "junk", summary(40, "Honda", "Civic")],
                       "next": "http://elsewhere.example/buy/browse/v1/item_summary/search?offset=2"},
        ("Mazda", 0): {"itemSummaries": [summary(50, "Mazda", "Miata", title="Mazda\x00 Miata\x07\r\n" + "x" * 10_000),
                                         {**summary(51, "Mazda", "Miata"),
                                          "price": {"value": "9.999,00", "currency": "EUR"}},
                                         {**summary(50, "Mazda", "Miata"), "image": None}]},  # no total, no next
    }
    stats = run(settings)
    assert (stats.state, stats.complete, stats.ended) == ("partial", False, 0)  # nothing ended for the gaps
    assert stats.problems["malformed JSON"] == 1
    assert stats.problems["bad next link"] == 2  # the loop and the link off the host
    assert stats.problems["empty page"] == 1
    assert stats.problems["rejected item"] == 2
    assert stats.problems["control characters"] == stats.problems["too long"] == 1
    assert stats.problems["other currency"] == 1
    assert stats.duplicate_ids >= 2  # v1|50|0 twice on a page, v1|22|0 on two pages
    assert any("loops back" in n for n in stats.notes) and any("elsewhere.example" in n for n in stats.notes)
    rows = stored(settings)
    assert len(rows) == 20 and all(r.status == "active" for r in rows.values())
    mazda = rows["v1|50|0"]
    assert mazda.title.startswith("Mazda Miata x") and len(mazda.title) <= 500 and "\x00" not in mazda.title
    assert mazda.car_class is not None and mazda.car_class.make == "Mazda"
    assert (str(rows["v1|51|0"].price), rows["v1|51|0"].currency) == ("9999.00", "EUR")


def test_missing_credentials_fail_the_crawl_with_a_clear_reason(make_settings, fake):
    stats = run(make_settings(ebay_client_id=""))
    assert stats.state == "failed" and "AUTODETECT_EBAY_CLIENT_ID" in stats.reason
    assert fake.calls["token"] == fake.calls["search"] == 0


def test_auctions_and_placeholders_are_recorded_and_kept_out_of_prices(make_settings, fake):
    """As eBay sends them: an auction's price is its current bid (with ``bidCount``); a detail call's
    negative mileage keeps its listing out of the statistics after later summaries without it."""
    fake.makes = {"Audi": [
        summary(1),
        summary(2, price=4100.0, buyingOptions=["AUCTION"], bidCount=12,
                currentBidPrice={"value": "4100.00", "currency": "USD"}),
        summary(3, price=1.0, buyingOptions=["FIXED_PRICE", "BEST_OFFER"]),
        summary(4, title="Audi for sale, runs and drives", buyingOptions=["FIXED_PRICE"]),
    ]}
    fake.details = {"v1|4|0": {"itemId": "v1|4|0", "localizedAspects": [
        {"type": "STRING", "name": "Make", "value": "Audi"}, {"type": "STRING", "name": "Model", "value": "TT"},
        {"type": "STRING", "name": "Year", "value": "2013"}, {"type": "STRING", "name": "Mileage", "value": "-8"}]}}
    settings = make_settings(crawl_page_size=10)
    for _ in range(2):  # the second crawl makes no detail call: v1|4|0's mileage comes from the first
        run(settings)
    rows = stored(settings)
    assert fake.calls["item"] == 1
    assert {k: (r.buying_options, r.bid_count, r.price_issue) for k, r in rows.items()} == {
        "v1|1|0": (None, None, None),
        "v1|2|0": ("AUCTION", 12, "auction: the price is a bid"),
        "v1|3|0": ("FIXED_PRICE,BEST_OFFER", None, "placeholder price: below 500"),
        "v1|4|0": ("FIXED_PRICE", None, "negative mileage"),
    }
    assert rows["v1|4|0"].mileage == -8 and rows["v1|4|0"].year == 2013
