"""Distances, offline postal codes and price statistics (autodetect.serving.offers), without a model."""

from __future__ import annotations

import math
import random
import statistics
from decimal import Decimal

import pytest

from autodetect.serving.offers import find_offers
from autodetect.serving.places import MAX_RADIUS_KM, LocationError, haversine_km, make_origin, resolve_location
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
                          price=Decimal(price), latitude=48.1 + i / 100, longitude=11.5))
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
