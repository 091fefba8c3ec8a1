"""Distances, offline postal codes and price statistics (autodetect.serving.offers), without a model."""

from __future__ import annotations

import math
import random
import statistics
import sys
from decimal import Decimal
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import test_offers_support as sup

from autodetect.serving.offers import find_offers, find_offers_of
from autodetect.serving.places import (MAX_RADIUS_KM, LocationError, haversine_km, make_origin, place_columns,
                                       resolve_location)
from autodetect.serving.prices import price_statistics, quantile


def test_haversine_known_distances():
    assert haversine_km(40.7128, -74.0060, 40.7128, -74.0060) == 0
    assert haversine_km(40.7128, -74.0060, 34.0522, -118.2437) == pytest.approx(3936, abs=5)  # NY - LA
    assert haversine_km(51.5074, -0.1278, 48.8566, 2.3522) == pytest.approx(344, abs=2)  # London - Paris
    assert haversine_km(0, 0, 0, 180) == pytest.approx(MAX_RADIUS_KM)
    assert haversine_km(0, 179.9, 0, -179.9) == pytest.approx(22.2, abs=0.1)  # across the date line
    assert haversine_km(89.9, 0, 89.9, 180) == pytest.approx(22.2, abs=0.1)  # over the pole


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 10, 51])
def test_quantiles_match_the_statistics_module(n):
    rng = random.Random(n)
    values = sorted(rng.uniform(1000, 90000) for _ in range(n))
    stats = price_statistics(values)
    assert stats.count == n and stats.min == values[0] and stats.max == values[-1]
    assert stats.mean == pytest.approx(statistics.mean(values))
    assert stats.median == pytest.approx(statistics.median(values))
    if n >= 2:
        q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
        assert (stats.p25, stats.median, stats.p75) == (pytest.approx(q1), pytest.approx(q2), pytest.approx(q3))
    else:
        assert stats.p25 == stats.p75 == values[0]


def test_price_statistics_edge_cases():
    assert price_statistics([]) is None
    stats = price_statistics([Decimal("10000.50"), Decimal("20000.50")])
    assert stats.as_dict() == {"count": 2, "mean": 15000.5, "median": 15000.5, "p25": 12500.5, "p75": 17500.5,
                               "min": 10000.5, "max": 20000.5}
    with pytest.raises(ValueError):
        quantile([], 0.5)
    with pytest.raises(ValueError):
        quantile([1.0], 1.5)


def test_sandbox_cities_resolve_offline():
    locations = pytest.importorskip("autodetect.sandbox.locations")
    for city in locations.CITIES:
        point = resolve_location(city.postal_code, "US")
        assert point is not None, city
        assert haversine_km(*point, city.latitude, city.longitude) < 25, city


def test_resolve_location_formats():
    assert resolve_location("10001-1234", "us") == resolve_location("10001", "US") != None  # noqa: E711
    assert resolve_location(" 10001 ", None) is not None  # the country defaults to the US
    for bad in ("", None, "00000", "1000", "ABCDE", "10001-12345678"):
        assert resolve_location(bad, "US") is None, bad
    assert resolve_location("75008", "FR") is None  # no offline table for France (yet)


def test_make_origin():
    assert make_origin(None) is None
    o = make_origin(None, lat=40.0, lon=-74.0)
    assert (o.lat, o.lon, o.source) == (40.0, -74.0, "coordinates")
    o = make_origin(None, postal_code="94103")
    assert o.source == "postal_code" and o.country == "US" and 37 < o.lat < 38
    for kwargs, words in [
        ({"lat": 40.0}, "both"), ({"lat": 90.5, "lon": 0.0}, "lat"), ({"lat": 0.0, "lon": 181.0}, "lon"),
        ({"lat": math.nan, "lon": 0.0}, "lat"), ({"lat": 0.0, "lon": math.inf}, "lon"),
        ({"postal_code": "99999"}, "unknown postal code"), ({"postal_code": "10001", "country": "U1"}, "country"),
        ({"postal_code": "1" * 30}, "too long"),
    ]:
        with pytest.raises(LocationError, match=words):
            make_origin(None, **kwargs)


def test_find_offers_currency_choice_and_years(tmp_path):
    from autodetect.db import session_scope, upgrade
    from autodetect.settings import Settings
    from autodetect.storage import CarClass, Listing

    tmp_path.mkdir(exist_ok=True)
    settings = Settings(data_dir=tmp_path, database_url="")
    upgrade(settings)
    with session_scope(settings) as s:
        cls = CarClass(name="Audi TT", make="Audi", model="TT")
        s.add(cls)
        s.flush()
        rows = [("EUR", 2010, 10000), ("EUR", 2010, 12000), ("EUR", 2010, 14000), ("EUR", 2011, 9000),
                ("USD", 2010, 30000), ("USD", 2011, 31000), (None, 2012, 5000)]
        for i, (cur, year, price) in enumerate(rows):
            s.add(Listing(source="t", external_id=str(i), title=f"TT {i}", class_id=cls.id, currency=cur, year=year,
                          price=Decimal(price), latitude=48.1 + i / 100, longitude=11.5,
                          **place_columns(48.1 + i / 100, 11.5, None, None)))
        s.add(Listing(source="t", external_id="x", title="no price", class_id=cls.id, year=2010))
    with session_scope(settings) as s:
        found = find_offers(s, "Audi TT", version_id=None)
        assert found.total == found.anywhere == 8 and found.currency == "EUR"  # the most common one
        assert found.prices.count == 4 and found.prices.mean == pytest.approx(11250)
        assert found.excluded_other_currency == 3 and found.without_price == 1
        assert [(y, st.count) for y, st in found.by_year] == [(2010, 3)]
        usd = find_offers(s, "Audi TT", version_id=None, currency="usd")
        assert usd.currency == "USD" and usd.prices.count == 2 and usd.excluded_other_currency == 5
        origin = make_origin(s, lat=48.1, lon=11.5)
        near = find_offers(s, "Audi TT", version_id=None, origin=origin, radius_km=3.5)
        assert [o.title for o in near.offers] == ["TT 0", "TT 1", "TT 2", "TT 3"]
        assert near.unlocated == 1 and near.outside_radius == 3
        # a postal code the offline table lacks is placed where listings with it are
        s.query(Listing).filter_by(external_id="0").update({"postal_code": "80331", "country": "DE"})
        o = make_origin(s, postal_code="80331", country="de")
        assert o.source == "postal_code_listings" and (o.lat, o.lon) == (48.1, 11.5)


# --- the offers search in SQL against the search as it was (tests/unit/test_offers_support.py) ----------------
@pytest.fixture(scope="module")
def hard_catalogue(tmp_path_factory):
    from autodetect.db import session_scope, upgrade
    from autodetect.settings import Settings

    settings = Settings(data_dir=tmp_path_factory.mktemp("offers"), database_url="")
    upgrade(settings)
    with session_scope(settings) as s:
        catalogue = sup.write_catalogue(s, classes=6, listings=1500, seed=7)
    return settings, catalogue


def compare_everywhere(settings, catalogue, *, exact_distances: bool, exact_mean: bool = True) -> int:
    """Old and new searches for every class, origin, radius, currency and version; returns the searches compared."""
    from autodetect.db import read_scope

    compared = 0
    with read_scope(settings) as s:
        for version_id in (catalogue.version_id, None):
            for origin in [None, *sup.ORIGINS]:
                for radius in sup.RADII if origin else [None]:
                    for currency in (None, "eur", "JPY"):
                        kwargs = dict(version_id=version_id, origin=origin, radius_km=radius, currency=currency)
                        new = find_offers_of(s, catalogue.classes, **kwargs)
                        for name in catalogue.classes:
                            sup.assert_same_search(new[name], sup.old_find_offers(s, name, **kwargs),
                                                   exact_distances=exact_distances, exact_mean=exact_mean)
                            compared += 1
    return compared


def test_sql_offers_equal_the_old_search_on_sqlite(hard_catalogue):
    settings, catalogue = hard_catalogue
    assert compare_everywhere(settings, catalogue, exact_distances=True) == 2 * (1 + 7 * 6) * 3 * 6


def test_sql_offers_equal_the_old_search_with_python_math_functions(hard_catalogue, monkeypatch):
    """An SQLite without its math functions gets Python's: the same answers."""
    from autodetect.serving import places

    monkeypatch.setattr(places, "sqlite_needs_math", lambda: True)
    settings, catalogue = hard_catalogue
    from autodetect.db import read_scope

    with read_scope(settings) as s:
        origin = sup.ORIGINS[3]
        for name in catalogue.classes:
            new = find_offers(s, name, version_id=catalogue.version_id, origin=origin, radius_km=5000.0)
            old = sup.old_find_offers(s, name, version_id=catalogue.version_id, origin=origin, radius_km=5000.0)
            sup.assert_same_search(new, old, exact_distances=True, exact_mean=True)


def test_pages_of_offers_and_prices_in_cents(tmp_path):
    from autodetect.db import read_scope, session_scope, upgrade
    from autodetect.settings import Settings

    settings = Settings(data_dir=tmp_path, database_url="")
    upgrade(settings)
    with session_scope(settings) as s:
        catalogue = sup.write_catalogue(s, classes=3, listings=600, seed=3, dollars_only=False)
    with read_scope(settings) as s:
        for origin, radius in [(None, None), (sup.ORIGINS[0], 20000.0), (sup.ORIGINS[1], 8000.0)]:
            kwargs = dict(version_id=catalogue.version_id, origin=origin, radius_km=radius)
            for name in catalogue.classes:
                old = sup.old_find_offers(s, name, **kwargs)
                for offset, limit in [(0, 5), (3, 7), (len(old.offers) - 2, 10), (len(old.offers) + 5, 3)]:
                    new = find_offers(s, name, **kwargs, limit=limit, offset=offset)
                    sup.assert_same_search(new, old, exact_distances=True, exact_mean=False, offset=offset,
                                           limit=limit)


def test_antimeridian_and_poles_answer_what_the_geometry_says(tmp_path):
    """Offers across the date line and around a pole are found, at the distance the sphere gives."""
    from autodetect.db import read_scope, session_scope, upgrade
    from autodetect.settings import Settings
    from autodetect.storage import CarClass, Listing

    settings = Settings(data_dir=tmp_path, database_url="")
    upgrade(settings)
    places = {"east": (0.0, 179.95), "west": (0.0, -179.9), "far west": (0.0, -179.0), "north": (89.9, -60.0),
              "pole": (90.0, 0.0), "south": (-89.95, 0.0)}
    with session_scope(settings) as s:
        cls = CarClass(name="Audi TT", make="Audi", model="TT")
        s.add(cls)
        s.flush()
        for title, (lat, lon) in places.items():
            s.add(Listing(source="t", external_id=title, title=title, class_id=cls.id, price=Decimal(1000),
                          currency="USD", **place_columns(lat, lon, None, None)))
    with read_scope(settings) as s:
        def titles(lat, lon, radius):
            origin = make_origin(s, lat=lat, lon=lon)
            found = find_offers(s, "Audi TT", version_id=None, origin=origin, radius_km=radius)
            return [(o.title, round(o.distance_km, 1)) for o in found.offers]

        # on the equator and over a pole, the distance is the angle times 111.195 km
        assert titles(0.0, 179.9, 50) == [("east", 5.6), ("west", 22.2)]
        assert titles(0.0, 179.9, 200) == [("east", 5.6), ("west", 22.2), ("far west", 122.3)]
        assert titles(0.0, -179.95, 12) == [("west", 5.6), ("east", 11.1)]
        assert titles(90.0, 0.0, 20) == [("pole", 0.0), ("north", 11.1)]
        assert titles(89.95, 120.0, 20) == [("pole", 5.6), ("north", 16.7)]  # over the pole
        assert titles(-90.0, 0.0, 10) == [("south", 5.6)]
        within_20000 = titles(0.0, 0.0, 20000)  # all but the two within 20,000 km of the antipode
        assert len(within_20000) == 4 and within_20000[-1] == ("far west", 19903.9)
        assert titles(0.0, 0.0, 20015.2)[-2:] == [("west", 20004.0), ("east", 20009.6)]  # the whole Earth


def test_no_located_offers_answers_fast_with_the_counts(tmp_path):
    import time

    from autodetect.db import read_scope, session_scope, upgrade
    from autodetect.settings import Settings

    settings = Settings(data_dir=tmp_path, database_url="")
    upgrade(settings)
    with session_scope(settings) as s:
        catalogue = sup.write_catalogue(s, classes=3, listings=20_000, seed=5, place=lambda rng: (None,) * 4,
                                        photos=False)
    with read_scope(settings) as s:
        origin = make_origin(s, lat=40.7, lon=-74.0)
        find_offers_of(s, catalogue.classes, version_id=catalogue.version_id, origin=origin, radius_km=250.0)
        t0 = time.perf_counter()
        found = find_offers_of(s, catalogue.classes, version_id=catalogue.version_id, origin=origin,
                               radius_km=250.0, limit=5)
        seconds = time.perf_counter() - t0
    for name in catalogue.classes:
        assert found[name].total == 0 and found[name].offers == [] and found[name].prices is None
        assert found[name].unlocated == found[name].anywhere > 0
    assert sum(f.anywhere for f in found.values()) > 10_000
    assert seconds < 0.5, f"{seconds:.3f} s to count {sum(f.anywhere for f in found.values())} unlocated offers"


def test_prices_with_an_issue_do_not_count(tmp_path):
    """An auction or a placeholder price (``price_issue``) is an offer, but not a price."""
    from autodetect.db import read_scope, session_scope, upgrade
    from autodetect.settings import Settings
    from autodetect.storage import CarClass, Listing

    settings = Settings(data_dir=tmp_path, database_url="")
    upgrade(settings)
    with session_scope(settings) as s:
        cls = CarClass(name="Audi TT", make="Audi", model="TT")
        s.add(cls)
        s.flush()
        rows = [(10000, "EUR", None), (12000, "EUR", None), (1, "USD", "placeholder price"), (2, "USD", "auction"),
                (3, "USD", "auction"), (14000, "EUR", None), (30000, "USD", None), (None, None, None)]
        for i, (price, currency, issue) in enumerate(rows):
            s.add(Listing(source="t", external_id=str(i), title=f"TT {i}", class_id=cls.id, year=2010,
                          currency=currency, price=None if price is None else Decimal(price), price_issue=issue))
    with read_scope(settings) as s:
        found = find_offers(s, "Audi TT", version_id=None)
    assert found.total == 8 and found.currency == "EUR"  # the three auctions in USD do not make it the most common
    assert (found.prices.count, found.prices.mean, found.prices.min) == (3, 12000.0, 10000.0)
    assert (found.excluded_price_issue, found.excluded_other_currency, found.without_price) == (3, 1, 1)
    assert found.stats_dict()["excluded_price_issue"] == 3


def test_bounding_boxes_hold_their_circles():
    """Random circles: every point within the radius lies in the box (poles and the antimeridian included)."""
    from autodetect.serving.places import bounding_box

    rng = random.Random(4)
    for _ in range(300):
        lat, lon = math.degrees(math.asin(rng.uniform(-1, 1))), rng.uniform(-180, 180)
        radius = rng.choice([1, 50, 500, 3000, 9000, 19000]) * rng.uniform(0.5, 1)
        box = bounding_box(lat, lon, radius)
        for _ in range(60):  # points on and inside the circle's edge, by bearing
            bearing, angle = rng.uniform(0, 2 * math.pi), radius / 6371.0088 * rng.choice([1.0, rng.random()])
            plat = math.asin(math.sin(math.radians(lat)) * math.cos(angle)
                             + math.cos(math.radians(lat)) * math.sin(angle) * math.cos(bearing))
            plon = math.radians(lon) + math.atan2(math.sin(bearing) * math.sin(angle) * math.cos(math.radians(lat)),
                                                  math.cos(angle) - math.sin(math.radians(lat)) * math.sin(plat))
            plat, plon = math.degrees(plat), (math.degrees(plon) + 180) % 360 - 180
            if haversine_km(lat, lon, plat, plon) > radius:
                continue
            assert box.lat_min <= plat <= box.lat_max, (lat, lon, radius, plat, plon)
            assert not box.lon_ranges or any(w <= plon <= e for w, e in box.lon_ranges), (lat, lon, radius, plat, plon)
    assert bounding_box(10.0, 10.0, 20015.2) is None  # the whole Earth
    assert bounding_box(89.0, 0.0, 200).lon_ranges == ()  # a pole inside: every longitude
    assert len(bounding_box(0.0, 179.9, 50).lon_ranges) == 2  # across the antimeridian: two ranges


# --- where a listing's place comes from ----------------------------------------------------------------------
def test_discovery_stores_the_place_of_the_fields_as_the_upsert_leaves_them(tmp_path):
    """Own coordinates win, else the postal code; a later record without a field keeps the stored one, and
    the place follows what is stored."""
    from autodetect.catalogue.names import normalize
    from autodetect.db import session_scope, upgrade
    from autodetect.pipeline.discovery import CrawlStats, store_page
    from autodetect.settings import Settings
    from autodetect.sources.base import SourceListing
    from autodetect.storage import Listing

    settings = Settings(data_dir=tmp_path, database_url="")
    upgrade(settings)

    def crawl(**fields):
        item = SourceListing(external_id="a", title="2015 Audi TT", **fields)
        with session_scope(settings) as s:
            store_page(s, "feed", 1, [item], {"a": normalize(None, None, item.title)}, 1, CrawlStats("feed"))
            row = s.query(Listing).one()
            return row.place_lat, row.place_lon

    new_york = resolve_location("10001", "US")
    assert crawl(postal_code="10001", country="US") == new_york
    assert crawl() == new_york  # nothing new: the stored postal code still places it
    assert crawl(latitude=48.1, longitude=11.5) == (48.1, 11.5)  # its own coordinates win
    assert crawl(postal_code="19107", country="US") == (48.1, 11.5)  # ...and are kept when a record lacks them
    assert crawl(latitude=95.0, longitude=11.5) == resolve_location("19107", "US")  # unusable ones: the postal code
    assert crawl(postal_code="75008", country="FR") == (None, None)  # no coordinates, an unknown postal code


def test_the_migration_places_the_listings_it_finds(tmp_path):
    from alembic import command
    from sqlalchemy import text

    from autodetect.db import alembic_config, engine, upgrade
    from autodetect.settings import Settings

    settings = Settings(data_dir=tmp_path, database_url="")
    command.upgrade(alembic_config(settings), "0003")
    rows = [("own", 40.0, -74.0, "19107", "US"), ("zip", None, None, "10001", "US"), ("bad", 95.0, 0.0, "02108", "US"),
            ("foreign", None, None, "75008", "FR"), ("none", None, None, None, None)]
    with engine(settings).begin() as conn:
        for ext, lat, lon, code, country in rows:
            conn.execute(text("INSERT INTO listings (source, external_id, title, latitude, longitude, postal_code, "
                              "country, label_method, label_confidence, status, issues, first_seen, last_seen, "
                              "last_crawl, raw) VALUES ('t', :ext, '', :lat, :lon, :code, :country, 'unknown', 0, "
                              "'active', '[]', '2026-01-01', '2026-01-01', 0, '{}')"),
                         {"ext": ext, "lat": lat, "lon": lon, "code": code, "country": country})
    upgrade(settings)
    with engine(settings).connect() as conn:
        placed = {ext: (lat, lon) for ext, lat, lon in
                  conn.execute(text("SELECT external_id, place_lat, place_lon FROM listings"))}
    assert placed == {ext: tuple(place_columns(lat, lon, code, country).values())
                      for ext, lat, lon, code, country in rows}
    assert placed["own"] == (40.0, -74.0) and placed["zip"] == resolve_location("10001", "US")
    assert placed["bad"] == resolve_location("02108", "US") and placed["foreign"] == placed["none"] == (None, None)
