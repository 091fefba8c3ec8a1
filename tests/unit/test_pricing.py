"""Prices that mean something: which asking prices count (and why the others do not), the fair-price model
(refitted when the catalogue changes, pooling for thin classes, deal ratings), and the sandbox's generating
function that makes it checkable. Crawls write to a fresh SQLite database."""

from __future__ import annotations

import json
import math
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import requests
from sqlalchemy import func, select, update

from autodetect.db import session_scope
from autodetect.pipeline.discovery import crawl
from autodetect.pricing import usable
from autodetect.pricing.fair_price import Comparable, FairPrices, fit_fair_prices, region_of
from autodetect.pricing.fits import catalogue_key, comparables, current_fair_prices
from autodetect.pricing.ratings import rate, rating_for
from autodetect.pricing.regression import huber_fit
from autodetect.sandbox.marketplace import Marketplace
from autodetect.sandbox.prices import NOISE_SIGMA, generating_price
from autodetect.sandbox.server import SandboxServer
from autodetect.settings import Settings, configure
from autodetect.sources import open_source
from autodetect.storage import Listing, PriceModel, utcnow


@pytest.fixture
def make_settings(tmp_path, template_db):
    shutil.copy(template_db, tmp_path / "autodetect.db")

    def make(**overrides) -> Settings:
        return configure(**{"data_dir": tmp_path, "database_url": "", "source": "feed",
                            "feed_url": str(tmp_path / "feed.jsonl"), "crawl_page_size": 50, **overrides})
    return make


def item(n: int, price: str | None = "18450.00", currency: str = "USD", year: str = "2015", **fields) -> dict:
    aspects = [{"name": "Make", "value": "Audi"}, {"name": "Model", "value": "TT"}, {"name": "Year", "value": year}]
    return {"itemId": f"v1|{n}|0", "title": f"Audi TT Coupe #{n}", "price": {"value": price, "currency": currency},
            "buyingOptions": ["FIXED_PRICE"], "itemLocation": {"postalCode": "78701", "country": "US"},
            "localizedAspects": aspects + fields.pop("extra_aspects", []), **fields}


def sandbox_item(listing) -> dict:
    """A sandbox listing as its item detail reads (aspects included)."""
    return {"itemId": listing.item_id, "title": listing.title,
            "price": {"value": listing.price, "currency": listing.currency} if listing.price else None,
            "buyingOptions": list(listing.offer.buying_options), "bidCount": listing.offer.bid_count,
            "itemLocation": {"postalCode": listing.city.postal_code, "country": "US"},
            "localizedAspects": [{"name": k, "value": v} for k, v in listing.aspects.items()]}


def write_feed(settings: Settings, items: list[dict]) -> None:
    Path(settings.feed_url).write_text("\n".join(json.dumps(i) for i in items), encoding="utf-8")


def run(settings: Settings):
    return crawl(settings, open_source(settings), lambda stage, ids: None)


def stored(settings: Settings) -> dict[str, Listing]:
    with session_scope(settings) as s:
        return {row.external_id: row for row in s.scalars(select(Listing))}


def fit_input(settings: Settings) -> dict[str, Comparable]:
    """What the fit is made on, by external id."""
    with session_scope(settings) as s:
        ids = dict(s.execute(select(Listing.id, Listing.external_id)).all())
        return {ids[i]: c for i, c in comparables(s)}


# --- which prices count -----------------------------------------------------------------------

def test_unusable_prices_are_kept_with_their_reason_and_never_reach_the_fit(make_settings):
    settings = make_settings()
    future = str(utcnow().year + 5)
    write_feed(settings, [
        item(1),
        item(2, price="1.00"),  # a placeholder
        item(3, price="4200.00", buyingOptions=["AUCTION"], bidCount=7,
             currentBidPrice={"value": "4200.00", "currency": "USD"}),  # priced by its bid
        item(4, price="19000.00", buyingOptions=["AUCTION", "FIXED_PRICE"], bidCount=2),  # Buy It Now counts
        item(5, price="12500.000"),  # a float printed with three decimals: 12,500, not 12.5 million
        item(6, extra_aspects=[{"name": "Mileage", "value": "-45,000"}]),
        item(7, year=future),
        item(8, year="1895"),
        item(9, currency="XYZ"),
        item(10, price="16.900,00", currency="EUR"),
    ])
    assert run(settings).listings == 10
    rows = stored(settings)
    assert len(rows) == 10  # every listing is kept
    issues = {ext: row.price_issue for ext, row in rows.items()}
    assert issues == {
        "v1|1|0": None, "v1|2|0": "placeholder price: below 500", "v1|3|0": usable.AUCTION, "v1|4|0": None,
        "v1|5|0": None, "v1|6|0": usable.NEGATIVE_MILEAGE, "v1|7|0": usable.FUTURE_YEAR,
        "v1|8|0": usable.EARLY_YEAR, "v1|9|0": usable.UNKNOWN_CURRENCY, "v1|10|0": None}
    assert (rows["v1|3|0"].buying_options, rows["v1|3|0"].bid_count) == ("AUCTION", 7)
    assert (rows["v1|4|0"].buying_options, rows["v1|4|0"].bid_count) == ("AUCTION,FIXED_PRICE", 2)
    assert (rows["v1|6|0"].mileage, rows["v1|7|0"].year, rows["v1|8|0"].year) == (-45000, int(future), 1895)
    assert "negative mileage: '-45,000'" in rows["v1|6|0"].issues
    counted = fit_input(settings)
    assert set(counted) == {"v1|1|0", "v1|4|0", "v1|5|0", "v1|10|0"}
    assert counted["v1|5|0"].price == 12500.0
    assert (counted["v1|10|0"].currency, counted["v1|10|0"].price) == ("EUR", 16900.0)


def test_a_reason_survives_a_record_without_the_field_and_ends_with_a_real_price(make_settings):
    settings = make_settings(price_floor=1000)
    write_feed(settings, [item(1, extra_aspects=[{"name": "Mileage", "value": "-12"}]), item(2, price="999.00")])
    run(settings)
    assert {k: r.price_issue for k, r in stored(settings).items()} == {
        "v1|1|0": usable.NEGATIVE_MILEAGE, "v1|2|0": "placeholder price: below 1000"}
    write_feed(settings, [item(1), item(2, price="15,000")])  # no mileage this time; a real price
    run(settings)
    rows = stored(settings)
    assert (rows["v1|1|0"].mileage, rows["v1|1|0"].price_issue) == (-12, usable.NEGATIVE_MILEAGE)
    assert (float(rows["v1|2|0"].price), rows["v1|2|0"].price_issue) == (15000.0, None)


# --- the fit follows the catalogue --------------------------------------------------------------

def test_the_fair_prices_are_refitted_after_new_listings(make_settings):
    settings = make_settings(price_refit_interval_s=0)
    market = Marketplace(listings=240, models=3, seed=21, price_quirks=True)
    write_feed(settings, [sandbox_item(market.listing(i)) for i in range(120)])
    run(settings)
    with session_scope(settings) as s:
        first = s.scalars(select(PriceModel)).one()
        first_key, first_count = first.catalogue_key, first.listings
        assert first_key == catalogue_key(s, settings)
    run(settings)  # the same catalogue: no refit
    with session_scope(settings) as s:
        assert s.scalar(select(func.count()).select_from(PriceModel)) == 1

    write_feed(settings, [sandbox_item(market.listing(i)) for i in range(240)])
    run(settings)
    with session_scope(settings) as s:
        fits = s.scalars(select(PriceModel).order_by(PriceModel.id)).all()
        assert len(fits) == 2 and fits[1].catalogue_key != first_key and fits[1].listings > first_count
        assert fits[1].listings == len(comparables(s))
        s.execute(update(Listing).where(Listing.external_id == market.listing(0).item_id)
                  .values(price=Listing.price + 1000))
    with session_scope(settings) as s:  # a reader refits a changed catalogue lazily
        fair = current_fair_prices(s, settings)
        assert s.scalar(select(func.count()).select_from(PriceModel)) == 3
    listing = market.listing(5)
    assert fair.estimate(listing.class_name, "USD", listing.year, listing.mileage) > 0


# --- the model ------------------------------------------------------------------------------------

def sandbox_comparables(market: Marketplace, mileage_share: float = 0.1) -> list[tuple[object, Comparable]]:
    """The usable sandbox listings as comparables, a share of them with their mileage (as crawled)."""
    rng = np.random.default_rng(0)
    out = []
    for listing in market.listings():
        if listing.offer.rating is None or listing.offer.quirk:
            continue
        mileage = listing.mileage if rng.random() < mileage_share else None
        out.append((listing, Comparable(listing.class_name, listing.spec.make, listing.currency,
                                        float(listing.price.replace(",", "")), listing.year, mileage,
                                        region_of(listing.city.postal_code, "US"), listing.title)))
    return out


def errors(fair: FairPrices, held: list) -> np.ndarray:
    return np.array([abs(fair.estimate(c.class_name, c.currency, c.year, c.mileage, title=c.title,
                                       postal_code=listing.city.postal_code, country="US")
                         / listing.offer.expected - 1) for listing, c in held])


def test_the_fair_price_follows_age_and_beats_the_class_median():
    rows = sandbox_comparables(Marketplace(listings=1500, models=5, seed=3))
    train = [c for listing, c in rows if listing.index % 4]
    held = [(listing, c) for listing, c in rows if not listing.index % 4]
    fair = FairPrices(fit_fair_prices(train, reference_year=2026))
    medians = {name: np.median([c.price for c in train if c.class_name == name])
               for name in {c.class_name for c in train}}
    naive = np.array([abs(medians[c.class_name] / listing.offer.expected - 1) for listing, c in held])
    ours = errors(fair, held)
    assert np.median(ours) < 0.7 * np.median(naive) and np.median(ours) < 0.12
    older = fair.estimate("Audi TT", "USD", 2010, 150_000)
    newer = fair.estimate("Audi TT", "USD", 2020, 30_000)
    assert older < newer


def test_thin_classes_borrow_their_makes_or_the_catalogues_curve():
    rows = sandbox_comparables(Marketplace(listings=2000, models=10, seed=4))
    kept: Counter[str] = Counter()
    train, held = [], []
    for listing, c in rows:
        if not listing.index % 5:
            held.append((listing, c))
        elif c.class_name not in ("Audi TT", "Toyota Camry", "BMW X5") or kept[c.class_name] < {"BMW X5": 4}.get(
                c.class_name, 12):
            kept[c.class_name] += 1
            train.append(c)
    params = fit_fair_prices(train, reference_year=2026, own_fit_min=40, min_comparables=5)
    curves = params["curves"]["USD"]
    assert (curves["Audi TT"]["pooled"], curves["Toyota Camry"]["pooled"]) == ("make", "catalogue")
    assert curves["Audi A4"]["pooled"] == "own" and curves["Audi TT"]["comparables"] == 12
    assert "BMW X5" not in curves  # 4 comparables: no fair price at all
    fair = FairPrices(params)
    assert fair.estimate("BMW X5", "USD", 2018, 40_000) is None
    thin = [(listing, c) for listing, c in held if c.class_name in ("Audi TT", "Toyota Camry")]
    assert np.median(errors(fair, thin)) < 0.15


def test_deal_ratings_cut_the_residuals_at_the_stored_thresholds():
    thresholds = [-0.2, -0.05, 0.05, 0.2]
    assert [rate(a, 100.0, thresholds) for a in (70, 90, 100, 110, 130)] == \
        ["great", "good", "fair", "high", "overpriced"]
    assert rating_for(-0.05, thresholds) == "good" and rating_for(0.2, thresholds) == "high"  # a cut: the better
    assert rate(0, 100.0, thresholds) is None and rate(100, 0, thresholds) is None
    rows = sandbox_comparables(Marketplace(listings=800, models=4, seed=5))
    fair = FairPrices(fit_fair_prices([c for _, c in rows], reference_year=2026))
    ratings = Counter(fair.rate(c.price, fair.estimate(c.class_name, c.currency, c.year, c.mileage, title=c.title,
                                                       postal_code=listing.city.postal_code, country="US"))
                      for listing, c in rows)
    shares = {k: n / len(rows) for k, n in ratings.items()}  # the fit's own offers fall 10/20/40/20/10
    assert abs(shares["great"] - 0.1) < 0.04 and abs(shares["fair"] - 0.4) < 0.06
    appraisal = fair.appraise("Audi TT", "USD", 20000, 2015, 90_000)
    assert appraisal.rating == fair.rate(20000, appraisal.fair_price)
    assert appraisal.difference_pct == pytest.approx((20000 / appraisal.fair_price - 1) * 100)


def test_the_huber_fit_is_not_dragged_by_outliers():
    rng = np.random.default_rng(1)
    x = np.column_stack([np.ones(200), rng.uniform(0, 20, 200)])
    y = 10 - 0.08 * x[:, 1] + rng.normal(0, 0.05, 200)
    y[:12] += 4  # misread prices that passed every check
    robust = huber_fit(x, y, np.array([0.0, 1e-6]))
    plain = np.linalg.lstsq(x, y, rcond=None)[0]
    assert abs(robust[1] + 0.08) < 0.01 and abs(robust[0] - 10) < 0.05 and abs(plain[0] - 10) > 0.1


# --- the sandbox makes it checkable ---------------------------------------------------------

def test_the_sandbox_prices_follow_the_generating_function_and_quirks_leave_photos_alone():
    plain = Marketplace(listings=400, models=5, seed=9)
    quirky = Marketplace(listings=400, models=5, seed=9, price_quirks=True)
    assert all(l.offer.quirk is None and l.currency == "USD" for l in plain.listings())
    quirks = Counter(l.offer.quirk for l in quirky.listings())
    assert {"placeholder", "auction", "eur"} <= set(quirks) and 0.08 < 1 - quirks[None] / 400 < 0.25
    for a, b in zip(plain.listings(), quirky.listings(), strict=True):
        assert (a.photos, a.class_name, a.colour, a.year, a.mileage) == (b.photos, b.class_name, b.colour, b.year,
                                                                         b.mileage)
    assert quirky.photo_bytes(quirky.listing(7).photos[0].path) == plain.photo_bytes(plain.listing(7).photos[0].path)
    listing = next(l for l in plain.listings() if l.offer.rating)
    expected = generating_price(listing.spec, listing.year, listing.mileage, listing.offer.trim, listing.city.state)
    assert listing.offer.expected == pytest.approx(expected)
    noise = [math.log(float(l.price) / l.offer.expected) for l in plain.listings() if l.price and "," not in l.price]
    assert abs(np.std(noise) - NOISE_SIGMA) < 0.02


def test_the_expected_price_endpoint_and_auctions_in_search():
    market = Marketplace(listings=300, models=3, seed=6, price_quirks=True)
    auction = next(l for l in market.listings() if l.offer.quirk == "auction" and l.offer.bid_count)
    with SandboxServer(market) as server, requests.Session() as http:
        body = http.get(f"{server.url}/expected-price/{auction.item_id}", timeout=5).json()
        assert body["expectedPrice"] == round(auction.offer.expected, 2) and body["dealRating"] is None
        assert body["buyingOptions"] == ["AUCTION"] and body["className"] == auction.class_name
        fixed = next(l for l in market.listings() if l.offer.rating)
        by_number = http.get(f"{server.url}/expected-price/{fixed.item_number}", timeout=5).json()
        assert by_number["dealRating"] == fixed.offer.rating and by_number["askingPrice"] == fixed.price
        assert http.get(f"{server.url}/expected-price/v1|1|0", timeout=5).status_code == 404
        token = http.post(f"{server.url}/identity/v1/oauth2/token", auth=("id", "secret"),
                          data={"grant_type": "client_credentials"}, timeout=5).json()["access_token"]
        detail = http.get(f"{server.url}/buy/browse/v1/item/{auction.item_id}", timeout=5,
                          headers={"Authorization": f"Bearer {token}"}).json()
    assert detail["buyingOptions"] == ["AUCTION"] and detail["bidCount"] == auction.offer.bid_count
    assert detail["price"] == detail["currentBidPrice"] == {"value": auction.price, "currency": "USD"}
