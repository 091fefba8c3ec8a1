"""Helpers for the offers tests (no tests here): the offers search as it was before it moved into SQL (the
oracle the SQL one must agree with), and catalogues of listings written straight into the database, made
to be hard on it: places near the poles and the antimeridian, postal codes only, no place at all, ties in
distance and in time, several currencies, prices missing, model years missing. ``benchmarks/api_latency.py``
writes its large catalogue with :func:`write_catalogue` too."""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import and_, insert, or_, select
from sqlalchemy.orm import Session

from autodetect.serving.offers import Offer, OfferSearch
from autodetect.serving.places import Origin, haversine_km, listing_point, place_columns
from autodetect.serving.prices import PriceStats, price_statistics
from autodetect.storage import CarClass, Image, Listing, ListingPrediction, ListingStatus, ModelVersion


# --- the oracle: find_offers as it was (every matching listing into Python, every distance here) ----------
def old_find_offers(session: Session, model: str, *, version_id: int | None, origin: Origin | None = None,
                    radius_km: float | None = None, currency: str | None = None,
                    min_per_year: int = 3) -> OfferSearch:
    rows = _old_matching_rows(session, model, version_id)
    offers, unlocated, outside = _old_place_offers(rows, model, origin, radius_km)
    _old_sort_offers(offers, origin)
    priced = [o for o in offers if o.price is not None]
    chosen = currency.upper() if currency else _old_most_common(o.currency for o in priced)
    in_currency = [o for o in priced if o.currency == chosen] if chosen else []
    thumbs = _old_thumbnails(session, [o.listing_id for o in offers])
    for o in offers:
        o.thumbnail_image_id = thumbs.get(o.listing_id)
    return OfferSearch(
        model=model, total=len(offers), offers=offers, currency=chosen,
        prices=price_statistics(o.price for o in in_currency),  # type: ignore[misc]
        by_year=_old_stats_by_year(in_currency, min_per_year),
        excluded_other_currency=len(priced) - len(in_currency), without_price=len(offers) - len(priced),
        unlocated=unlocated, outside_radius=outside, anywhere=len(rows),
    )


def _old_matching_rows(session: Session, model: str, version_id: int | None) -> list[Any]:
    lp = ListingPrediction
    stmt = (
        select(Listing.id, Listing.title, Listing.price, Listing.currency, Listing.year, Listing.mileage,
               Listing.city, Listing.postal_code, Listing.country, Listing.url, Listing.latitude,
               Listing.longitude, Listing.last_seen, CarClass.name)
        .outerjoin(CarClass, CarClass.id == Listing.class_id)
        .where(Listing.status == ListingStatus.active.value)
    )
    if version_id is not None:
        stmt = stmt.outerjoin(lp, and_(lp.listing_id == Listing.id, lp.model_version_id == version_id)).where(
            or_(CarClass.name == model, and_(Listing.class_id.is_(None), lp.top_class == model)))
    else:
        stmt = stmt.where(CarClass.name == model)
    return list(session.execute(stmt).all())


def _old_place_offers(rows: Sequence[Any], model: str, origin: Origin | None,
                      radius_km: float | None) -> tuple[list[Offer], int, int]:
    offers: list[Offer] = []
    unlocated = outside = 0
    for r in rows:
        offer = Offer(
            listing_id=r.id, title=r.title or "", price=float(r.price) if r.price is not None else None,
            currency=(r.currency or None) and r.currency.upper(), year=r.year, mileage=r.mileage, city=r.city,
            postal_code=r.postal_code, country=r.country, url=r.url,
            match="label" if r.name == model else "prediction", last_seen=r.last_seen,
        )
        point = listing_point(r.latitude, r.longitude, r.postal_code, r.country)
        if point is not None and origin is not None:
            offer.distance_km = haversine_km(origin.lat, origin.lon, *point)
        if origin is not None:
            if offer.distance_km is None:
                unlocated += 1
                continue
            if radius_km is not None and offer.distance_km > radius_km:
                outside += 1
                continue
        offers.append(offer)
    return offers, unlocated, outside


def _old_sort_offers(offers: list[Offer], origin: Origin | None) -> None:
    if origin is not None:
        offers.sort(key=lambda o: (o.distance_km, o.listing_id))
    else:
        offers.sort(key=lambda o: (o.last_seen is None, _old_neg_time(o.last_seen), -o.listing_id))


def _old_stats_by_year(in_currency: Iterable[Offer], min_per_year: int) -> list[tuple[int, PriceStats]]:
    per_year: dict[int, list[float]] = defaultdict(list)
    for o in in_currency:
        if o.year is not None:
            per_year[o.year].append(o.price)  # type: ignore[arg-type]
    return [(year, price_statistics(ps)) for year, ps in sorted(per_year.items())  # type: ignore[misc]
            if len(ps) >= max(1, min_per_year)]


def _old_neg_time(value: Any) -> float:
    try:
        return -value.timestamp()
    except AttributeError:
        return 0.0


def _old_most_common(values: Iterable[str | None]) -> str | None:
    counts = Counter(v for v in values if v)
    if not counts:
        return None
    return min(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0]


def _old_thumbnails(session: Session, listing_ids: Sequence[int]) -> dict[int, int]:
    if not listing_ids:
        return {}
    rows = session.execute(
        select(Image.listing_id, Image.id)
        .where(Image.listing_id.in_(list(listing_ids)), Image.normalized_key.is_not(None))
        .order_by(Image.listing_id, Image.position)
    ).all()
    out: dict[int, int] = {}
    for listing_id, image_id in rows:
        out.setdefault(listing_id, image_id)
    return out


# --- comparing ---------------------------------------------------------------------------------------------
COUNTS = ("total", "currency", "excluded_other_currency", "without_price", "unlocated", "outside_radius",
          "anywhere")


def assert_same_search(new: OfferSearch, old: OfferSearch, *, exact_distances: bool, exact_mean: bool,
                       offset: int = 0, limit: int | None = None) -> None:
    """The same counts, the same offers in the same order (the page ``offset``/``limit`` of the old ones),
    the same statistics; distances and means bit for bit where asked, else to 1e-9 relative."""
    for name in COUNTS:
        assert getattr(new, name) == getattr(old, name), (new.model, name)
    want = old.offers[offset:None if limit is None else offset + limit]
    assert [o.listing_id for o in new.offers] == [o.listing_id for o in want], new.model
    for got, expected in zip(new.offers, want):
        assert _fields(got) == _fields(expected), got.listing_id
        if exact_distances or expected.distance_km is None:
            assert got.distance_km == expected.distance_km, got.listing_id
        else:
            assert got.distance_km == pytest.approx(expected.distance_km, rel=1e-9, abs=1e-9), got.listing_id
    assert_same_stats(new.prices, old.prices, exact_mean)
    assert [y for y, _ in new.by_year] == [y for y, _ in old.by_year], new.model
    for (_, got), (_, expected) in zip(new.by_year, old.by_year):
        assert_same_stats(got, expected, exact_mean)
    if exact_mean:  # the JSON the API answers, to the cent
        assert new.stats_dict() == {**old.stats_dict(), "excluded_price_issue": 0}


def assert_same_stats(got: PriceStats | None, want: PriceStats | None, exact_mean: bool) -> None:
    assert (got is None) == (want is None)
    if got is None:
        return
    assert (got.count, got.min, got.max, got.p25, got.median, got.p75) == (
        want.count, want.min, want.max, want.p25, want.median, want.p75)
    assert got.mean == (want.mean if exact_mean else pytest.approx(want.mean, rel=1e-12))


def _fields(o: Offer) -> tuple:
    return (o.title, o.price, o.currency, o.year, o.mileage, o.city, o.postal_code, o.country, o.url, o.match,
            o.last_seen, o.thumbnail_image_id)


# --- catalogues --------------------------------------------------------------------------------------------
#: Places that are hard on a bounding box: the poles, the antimeridian, the equator, the prime meridian.
EDGE_PLACES = [(90.0, 0.0), (-90.0, 0.0), (89.95, 10.0), (89.5, -170.0), (-89.9, 45.0), (0.1, 179.95),
               (-16.5, -179.9), (65.0, 179.99), (65.0, -179.99), (0.0, 180.0), (0.0, -180.0), (0.0, 0.0),
               (51.48, 0.0), (-33.9, 151.2), (40.7128, -74.006)]
#: US ZIP codes of sandbox cities (resolved offline) and codes that cannot be resolved.
ZIPS = [("10001", "US"), ("19107", "US"), ("02108", "US"), ("90012", "US"), ("60601", "US"), ("98101", "US")]
UNKNOWN_CODES = [("75008", "FR"), ("00000", "US"), ("SW1A 1AA", "GB")]

Place = tuple[float | None, float | None, str | None, str | None]  # latitude, longitude, postal code, country


def hard_place(rng: random.Random) -> Place:
    """Where a listing of a hard catalogue is (its own fields, before ``place_columns``)."""
    roll = rng.random()
    if roll < 0.25:
        return (*rng.choice(EDGE_PLACES), None, None)
    if roll < 0.45:
        return (math.degrees(math.asin(rng.uniform(-1, 1))), rng.uniform(-180, 180), None, None)
    if roll < 0.65:
        return (None, None, *rng.choice(ZIPS))
    if roll < 0.72:
        return (95.0, 10.0, *rng.choice(ZIPS))  # coordinates out of range: the postal code decides
    if roll < 0.8:
        return (None, None, *rng.choice(UNKNOWN_CODES))
    if roll < 0.9:
        return (None, None, None, None)
    lat, lon = rng.choice(EDGE_PLACES)
    return (lat + rng.choice([-1e-7, 0, 1e-7]), lon, None, None)


@dataclass
class Catalogue:
    classes: list[str]
    version_id: int
    listings: int


def write_catalogue(session: Session, *, classes: int, listings: int, seed: int,
                    place: Callable[[random.Random], Place] = hard_place, dollars_only: bool = True,
                    photos: bool = True) -> Catalogue:
    """Car classes, an active model version, ``listings`` listings (labelled, or unlabelled and predicted
    by the version or by another one; active or ended; prices in several currencies, some missing; some
    with photos) with their places, written in bulk. ``dollars_only``: whole-dollar prices, else cents."""
    rng = random.Random(seed)
    names = [f"Make{c // 7} Model{c}" for c in range(classes)]
    session.execute(insert(CarClass), [{"name": n, "make": n.split()[0], "model": n.split()[1]} for n in names])
    ids = dict(session.execute(select(CarClass.name, CarClass.id)).all())
    version = ModelVersion(name=f"v{seed}", backbone="compact_cnn", image_size=40, classes=names, status="active")
    other = ModelVersion(name=f"old{seed}", backbone="compact_cnn", image_size=40, classes=names, status="retired")
    session.add_all([version, other])
    session.flush()
    start = datetime(2026, 1, 1)
    rows, predictions, images = [], [], []
    for i in range(listings):
        name = names[min(int(rng.expovariate(3 / classes)), classes - 1)]  # some classes much bigger
        labelled = rng.random() < 0.8
        rows.append(_listing(i, rng, ids[name] if labelled else None, place(rng), start, dollars_only))
        if not labelled and rng.random() < 0.85:
            predictions.append((i, version.id if rng.random() < 0.8 else other.id, name))
        if photos and rng.random() < 0.5:
            images.append((i, rng.random() < 0.7))
    session.execute(Listing.__table__.insert(), rows)  # Core's executemany: fast for 100,000 rows
    by_external = dict(session.execute(select(Listing.external_id, Listing.id).where(Listing.source == "gen")).all())
    listing_ids = [by_external[str(i)] for i in range(listings)]
    if predictions:
        session.execute(ListingPrediction.__table__.insert(), [
            {"listing_id": listing_ids[i], "model_version_id": v, "top_class": n, "top_probability": 0.9,
             "topk": [[n, 0.9]], "photos": 1} for i, v, n in predictions])
    if images:
        session.execute(Image.__table__.insert(), [
            {"listing_id": listing_ids[i], "position": position, "url": f"https://cars.example/p/{i}/{position}.jpg",
             "stage": "done", "state": "done", "normalized_key": f"k{i}-{position}" if position or first else None}
            for i, first in images for position in (0, 1)])
    return Catalogue(names, version.id, listings)


def _listing(i: int, rng: random.Random, class_id: int | None, place: Place, start: datetime,
             dollars_only: bool) -> dict[str, Any]:
    lat, lon, postal_code, country = place
    price = None if rng.random() < 0.08 else Decimal(rng.randrange(1500, 60000, 50 if dollars_only else 1))
    if price is not None and not dollars_only:
        price += Decimal(rng.randrange(100)) / 100
    seen = start + timedelta(hours=rng.randrange(2000))  # ties too
    return {
        "source": "gen", "external_id": str(i), "url": f"https://cars.example/item/{i}", "title": f"car {i}",
        "year": None if rng.random() < 0.1 else rng.randrange(2005, 2021), "price": price,
        "currency": rng.choice(["USD"] * 6 + ["EUR"] * 2 + ["usd", "GBP", "", None]),
        "mileage": rng.randrange(0, 200_000), "city": f"city {i % 17}", "postal_code": postal_code,
        "country": country, "latitude": lat, "longitude": lon, "class_id": class_id,
        "status": ListingStatus.active.value if rng.random() < 0.9 else ListingStatus.ended.value,
        "last_seen": seen, **place_columns(lat, lon, postal_code, country),
    }


#: Where searches stand in the comparisons: the poles, both sides of the antimeridian, New York, the origin.
ORIGINS = [Origin(40.7128, -74.006, "coordinates"), Origin(90.0, 0.0, "coordinates"),
           Origin(-90.0, 123.0, "coordinates"), Origin(0.0, 179.9, "coordinates"), Origin(65.0, -179.95, "coordinates"),
           Origin(89.9, -100.0, "coordinates"), Origin(0.0, 0.0, "coordinates")]
#: Radii: tiny, a region, a continent, 20,000 km (nearly everything), the whole Earth, any distance.
RADII = [1.0, 250.0, 5000.0, 20000.0, 20015.2, None]
