"""Prices through the HTTP API, without a model: ``GET /models/{id}/offers`` over catalogues the real crawler
stored from a feed (so the price parser and the price-issue rules are the product's). Asking-price statistics
only over enough comparables, placeholders and auctions never in them, every offer against its fair price
with a deal rating, and the API taking up each new fit (made after a crawl, never inside a request)."""

from __future__ import annotations

import json
import shutil
import statistics
import sys
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select, update

sys.path.insert(0, str(Path(__file__).resolve().parent))
import test_api_support as sup  # noqa: E402
from test_pricing import sandbox_item  # noqa: E402

from autodetect.db import session_scope  # noqa: E402
from autodetect.pipeline.discovery import crawl  # noqa: E402
from autodetect.pricing import usable  # noqa: E402
from autodetect.pricing.ratings import RATINGS  # noqa: E402
from autodetect.sandbox.marketplace import Marketplace  # noqa: E402
from autodetect.serving.app import create_app  # noqa: E402
from autodetect.settings import Settings, configure  # noqa: E402
from autodetect.sources import open_source  # noqa: E402
from autodetect.storage import CarClass, Listing, PriceModel  # noqa: E402

TT = "Audi TT"


@pytest.fixture
def settings(tmp_path, template_db) -> Settings:
    shutil.copy(template_db, tmp_path / "autodetect.db")
    return configure(data_dir=tmp_path, database_url="", source="feed", feed_url=str(tmp_path / "feed.jsonl"),
                     crawl_page_size=50, price_refit_interval_s=0)


@pytest.fixture
def client(settings):
    with sup.client_for(create_app(settings)) as c:
        yield c


def item(n: int, price: str | None = "18450.00", year: int = 2016, mileage: int = 60_000, currency: str = "USD",
         **fields) -> dict:
    """A fixed-price Audi TT as the Browse API's item detail reads."""
    aspects = [{"name": "Make", "value": "Audi"}, {"name": "Model", "value": "TT"},
               {"name": "Year", "value": str(year)}, {"name": "Mileage", "value": str(mileage)}]
    return {"itemId": f"v1|{n}|0", "title": f"Audi TT Coupe #{n}", "price": {"value": price, "currency": currency},
            "buyingOptions": ["FIXED_PRICE"], "itemLocation": {"postalCode": "78701", "country": "US"},
            "localizedAspects": aspects, **fields}


def placeholder(n: int) -> dict:
    return item(n, price="1.00")


def auction(n: int) -> dict:
    """An auction priced by its current bid, with bids."""
    return item(n, price="2500.00", buyingOptions=["AUCTION"], bidCount=6,
                currentBidPrice={"value": "2500.00", "currency": "USD"})


def crawl_feed(settings: Settings, items: list[dict]) -> None:
    Path(settings.feed_url).write_text("\n".join(json.dumps(i) for i in items), encoding="utf-8")
    assert crawl(settings, open_source(settings), lambda stage, ids: None).listings == len(items)


def offers_of(client, name: str, **params) -> dict:
    r = client.get(f"/models/{name}/offers", params={"limit": 100, **params})
    assert r.status_code == 200, r.text
    return r.json()


def fits(settings: Settings) -> int:
    with session_scope(settings) as s:
        return s.scalar(select(func.count()).select_from(PriceModel))


# --- asking prices: enough comparables, and only real asking prices ------------------------------------------
def test_four_comparables_show_no_range_and_placeholders_and_auctions_never_count(settings, client):
    prices = [14000, 16500, 18000, 21000]
    crawl_feed(settings, [*(item(n, f"{p}.00") for n, p in enumerate(prices, 1)), placeholder(5), auction(6)])
    body = offers_of(client, TT)
    asking = body["asking_prices"]
    assert body["total"] == 6 and asking["count"] == 4 and asking["min_comparables"] == 5
    assert asking["excluded_price_issue"] == 2  # the $1 and the auction are offers, not prices
    assert {k: asking[k] for k in ("median", "p25", "p75", "mean", "min", "max")} == dict.fromkeys(
        ("median", "p25", "p75", "mean", "min", "max"))
    assert asking["by_year"] == []
    by_title = {o["title"]: o for o in body["offers"]}
    assert by_title["Audi TT Coupe #5"]["price_issue"] == usable.below_floor(settings.price_floor)
    assert by_title["Audi TT Coupe #6"]["price_issue"] == usable.AUCTION
    assert all(o["fair_price"] is None and o["deal_rating"] is None for o in body["offers"])  # 4: no fair price

    # A fifth real asking price (three decimals: 12,500, not 12.5 million), then a range over the five.
    crawl_feed(settings, [*(item(n, f"{p}.00") for n, p in enumerate(prices, 1)), placeholder(5), auction(6),
                          item(7, "12500.000")])
    body = offers_of(client, TT)
    asking = body["asking_prices"]
    counted = [*prices, 12500]
    q1, q2, q3 = statistics.quantiles(counted, n=4, method="inclusive")
    assert asking["count"] == 5 and asking["excluded_price_issue"] == 2
    assert (asking["median"], asking["p25"], asking["p75"]) == (pytest.approx(q2), pytest.approx(q1),
                                                                 pytest.approx(q3))
    assert (asking["min"], asking["max"]) == (12500, 21000)  # neither $1 nor the $2,500 bid
    assert asking["by_year"] == [{"year": 2016, "count": 5, "mean": pytest.approx(statistics.mean(counted)),
                                  "median": pytest.approx(q2), "p25": pytest.approx(q1), "p75": pytest.approx(q3),
                                  "min": 12500, "max": 21000}]
    by_title = {o["title"]: o for o in body["offers"]}
    for n in (5, 6):  # a fair price (the car is a 2016 Audi TT), but no difference and no rating
        offer = by_title[f"Audi TT Coupe #{n}"]
        assert offer["price_issue"] and offer["fair_price"] > 5000
        assert offer["difference_pct"] is None and offer["deal_rating"] is None
    rated = [by_title[f"Audi TT Coupe #{n}"] for n in (1, 2, 3, 4, 7)]
    assert all(o["price_issue"] is None and o["deal_rating"] in RATINGS for o in rated)
    cheapest, dearest = min(rated, key=lambda o: o["price"]), max(rated, key=lambda o: o["price"])
    assert RATINGS.index(cheapest["deal_rating"]) < RATINGS.index(dearest["deal_rating"])


def test_with_a_currency_of_too_few_offers_the_statistics_are_null_with_their_count(settings, client):
    crawl_feed(settings, [*(item(n, f"{15000 + 500 * n}.00") for n in range(1, 8)),
                          *(item(n, "16000.00", currency="EUR") for n in (8, 9))])
    asking = offers_of(client, TT, currency="EUR")["asking_prices"]
    assert (asking["currency"], asking["count"], asking["median"], asking["p25"]) == ("EUR", 2, None, None)
    assert asking["excluded_other_currency"] == 7
    usd = offers_of(client, TT)
    assert usd["asking_prices"]["count"] == 7 and usd["asking_prices"]["median"] == 17000  # 15,500 to 18,500
    euro_offers = [o for o in usd["offers"] if o["currency"] == "EUR"]
    assert len(euro_offers) == 2 and all(o["fair_price"] is None for o in euro_offers)  # 2 EUR comparables


# --- fair prices and ratings on a sandbox catalogue -------------------------------------------------------------
def test_every_offer_carries_its_fair_price_and_a_rating_that_follows_its_difference(settings, client):
    market = Marketplace(listings=300, models=3, seed=21, price_quirks=True)
    crawl_feed(settings, [sandbox_item(market.listing(i)) for i in range(300)])
    with session_scope(settings) as s:
        external = dict(s.execute(select(Listing.id, Listing.external_id)).all())
    errors, seen = [], set()
    for name in market.classes():
        body = offers_of(client, name)
        cuts = body["fair_prices"]["rating_cuts_pct"]
        assert len(cuts) == 4 and cuts == sorted(cuts) and cuts[0] < 0 < cuts[-1]
        for o in body["offers"]:
            truth = market.expected_price(external[o["listing_id"]])
            seen.add(truth.quirk)
            if truth.quirk in ("placeholder", "auction", "unknown_currency", "future_year", "year_before_1900"):
                assert o["price_issue"] and o["deal_rating"] is None and o["difference_pct"] is None, o
            if truth.quirk in ("unknown_currency", "future_year", "year_before_1900"):
                assert o["fair_price"] is None, o  # no curve in "XYZ", no car of that year
            if o["price_issue"] is None and o["fair_price"] is not None:
                assert o["difference_pct"] == pytest.approx((o["price"] - o["fair_price"]) / o["fair_price"] * 100,
                                                            abs=0.06)
                expected = RATINGS[sum(o["difference_pct"] > c for c in cuts)]  # ties within the rounding aside
                if min(abs(o["difference_pct"] - c) for c in cuts) > 0.2:
                    assert o["deal_rating"] == expected, o
                if o["currency"] == "USD":
                    errors.append(abs(o["fair_price"] - truth.expected) / truth.expected)
    assert {"placeholder", "auction", "unknown_currency", "future_year", "year_before_1900"} <= seen
    assert len(errors) > 200
    assert float(np.median(errors)) < 0.08, "the fair price is near the sandbox's generating price"


# --- the fit follows the catalogue, and the API follows the fit ---------------------------------------------------
def test_the_api_takes_up_the_fit_made_after_new_listings_and_never_fits_in_a_request(settings, client):
    first = [item(n, f"{15000 + 700 * n}.00", year=2014 + n % 4) for n in range(1, 9)]
    crawl_feed(settings, first)
    assert fits(settings) == 1
    before = offers_of(client, TT)
    probe = next(o for o in before["offers"] if o["title"] == "Audi TT Coupe #1")
    assert probe["fair_price"] > 0 and before["fair_prices"]["listings"] == 8

    crawl_feed(settings, [*first, *(item(n, f"{30000 + 500 * n}.00", year=2014 + n % 4) for n in range(9, 17))])
    assert fits(settings) == 2  # refitted after the crawl that brought new listings
    after = offers_of(client, TT)
    assert after["fair_prices"]["id"] > before["fair_prices"]["id"] and after["fair_prices"]["listings"] == 16
    moved = next(o for o in after["offers"] if o["title"] == "Audi TT Coupe #1")
    assert moved["fair_price"] > probe["fair_price"] * 1.1  # dearer comparables: a higher fair price

    with session_scope(settings) as s:  # the catalogue changes without a crawl: no fit inside a request
        s.execute(update(Listing).values(price=Listing.price * 2))
    for _ in range(3):
        assert offers_of(client, TT)["fair_prices"]["id"] == after["fair_prices"]["id"]
    assert fits(settings) == 2


def test_a_catalogue_without_a_fit_is_fitted_once(settings, client):
    with session_scope(settings) as s:  # listings stored without a crawl: no fit yet
        cls = CarClass(name=TT, make="Audi", model="TT")
        s.add(cls)
        s.flush()
        for n in range(6):
            s.add(Listing(source="t", external_id=str(n), title=f"TT {n}", class_id=cls.id, year=2015 + n % 3,
                          price=16000 + 900 * n, currency="USD", status="active"))
    assert fits(settings) == 0
    ids = {offers_of(client, TT)["fair_prices"]["id"] for _ in range(3)}
    assert len(ids) == 1 and fits(settings) == 1
    assert all(o["fair_price"] and o["deal_rating"] in RATINGS for o in offers_of(client, TT)["offers"])


def test_the_rating_cuts_are_stated_in_the_api_docs(client):
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    rating = schemas["OfferOut"]["properties"]["deal_rating"]
    words = rating["description"]
    assert "lowest 10%" in words and "top 10%" in words and "log(asking / fair)" in words
    assert set(RATINGS) <= set(next(a for a in rating["anyOf"] if "enum" in a)["enum"])
    assert "asking prices" in schemas["AskingPricesOut"]["description"].lower()
    assert "10%, 30%, 70%, 90%" in schemas["FairPricesOut"]["properties"]["rating_cuts_pct"]["description"]


def test_the_service_keeps_one_fit_until_a_newer_one_is_stored(settings):
    from autodetect.db import read_scope
    from autodetect.serving.deps import Service

    first = [item(n, f"{15000 + 700 * n}.00") for n in range(1, 7)]
    crawl_feed(settings, first)
    service = Service(settings)
    with read_scope(settings) as s:
        kept = service.fair_prices(s)
    with read_scope(settings) as s:
        assert service.fair_prices(s) is kept  # not read again, nor rebuilt
    crawl_feed(settings, [*first, item(7, "24000.00")])
    with read_scope(settings) as s:
        newer = service.fair_prices(s)
    assert newer.id > kept.id and newer.listings == kept.listings + 1
