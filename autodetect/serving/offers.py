"""Offers for a car model: which active listings match it, how far they are, what they cost.

- **Matching.** An active listing offers model M when its label (``Listing.class_id`` ->
  ``CarClass.name``) is M, or, for an unlabelled listing, when its listing-level prediction by the
  active model version (``ListingPrediction.top_class``) is M.
- **Where.** A listing's own latitude/longitude win; otherwise its postal code is resolved offline
  (:func:`resolve_location`: US ZIP centroids from the ``zipcodes`` package, which embeds GeoNames'
  coordinates in the wheel and never downloads anything). Distances are great-circle (haversine).
  With an origin, offers without a known place are left out and counted (``unlocated``).
- **Prices.** Statistics are taken over the offers in one currency (the requested one, else the most
  common one among the offers); offers in other currencies are excluded and counted — there are no
  exchange rates offline. Percentiles interpolate linearly between order statistics (numpy's default,
  ``statistics.quantiles(..., method="inclusive")``, spreadsheet PERCENTILE.INC).

No web framework here: the API (``autodetect.serving.app``) turns these results into JSON.
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from functools import lru_cache
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from autodetect.storage import CarClass, Image, Listing, ListingPrediction, ListingStatus

log = logging.getLogger(__name__)

__all__ = [
    "EARTH_RADIUS_KM",
    "MAX_RADIUS_KM",
    "LocationError",
    "Offer",
    "OfferSearch",
    "Origin",
    "PriceStats",
    "find_offers",
    "haversine_km",
    "make_origin",
    "price_statistics",
    "quantile",
    "resolve_location",
    "thumbnails",
]

#: Mean Earth radius (IUGG), km.
EARTH_RADIUS_KM = 6371.0088
#: Half the Earth's circumference: every point on Earth is within this distance.
MAX_RADIUS_KM = math.pi * EARTH_RADIUS_KM


class LocationError(ValueError):
    """A location that cannot be used (out of range, half given, an unknown postal code)."""


# --- places -----------------------------------------------------------------------------------------
def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in km between two points given in degrees."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


def valid_coordinates(lat: Any, lon: Any) -> bool:
    try:
        lat, lon = float(lat), float(lon)
    except (TypeError, ValueError):
        return False
    return math.isfinite(lat) and math.isfinite(lon) and -90 <= lat <= 90 and -180 <= lon <= 180


_US_ZIP = re.compile(r"^\s*(\d{5})(?:[-\s]?\d{4})?\s*$")


def resolve_location(postal_code: str | None, country: str | None = "US") -> tuple[float, float] | None:
    """The centroid ``(lat, lon)`` of a postal code, offline; None when unknown.

    US ZIP codes (``12345`` or ``12345-6789``) only, for now: other countries return None (the
    caller may fall back to the coordinates of listings with that postal code, or ask for lat/lon)."""
    if not postal_code:
        return None
    country = (country or "US").strip().upper()
    if country not in ("US", "USA"):
        return None
    m = _US_ZIP.match(str(postal_code))
    if not m:
        return None
    return _us_zip(m.group(1))


@lru_cache(maxsize=65536)
def _us_zip(zip5: str) -> tuple[float, float] | None:
    try:
        import zipcodes
    except ImportError:  # pragma: no cover - a core dependency; degrade rather than crash
        log.warning("the 'zipcodes' package is not installed: US postal codes cannot be resolved")
        return None
    try:
        rows = zipcodes.matching(zip5)
    except (ValueError, TypeError):
        return None
    for row in rows:
        try:
            lat, lon = float(row.get("lat")), float(row.get("long"))
        except (TypeError, ValueError):
            continue
        if valid_coordinates(lat, lon) and (lat, lon) != (0.0, 0.0):
            return lat, lon
    return None


@dataclass(frozen=True)
class Origin:
    """Where the person is: coordinates, and how they were obtained."""

    lat: float
    lon: float
    source: str  # "coordinates" | "postal_code" | "postal_code_listings"
    postal_code: str | None = None
    country: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"lat": round(self.lat, 6), "lon": round(self.lon, 6), "source": self.source,
                "postal_code": self.postal_code, "country": self.country}


def make_origin(session: Session | None, *, lat: float | None = None, lon: float | None = None,
                postal_code: str | None = None, country: str | None = None,
                default_country: str = "US") -> Origin | None:
    """The request's origin from lat/lon, or else from a postal code; None when neither is given.

    Raises :class:`LocationError` for half a coordinate pair, coordinates out of range, or a postal code
    that cannot be placed (neither in the offline table nor among the listings' own coordinates)."""
    if lat is not None or lon is not None:
        if lat is None or lon is None:
            raise LocationError("give both lat and lon, or neither")
        if not (math.isfinite(lat) and -90 <= lat <= 90):
            raise LocationError(f"lat must be between -90 and 90, not {lat}")
        if not (math.isfinite(lon) and -180 <= lon <= 180):
            raise LocationError(f"lon must be between -180 and 180, not {lon}")
        return Origin(float(lat), float(lon), "coordinates")
    code = (postal_code or "").strip()
    if not code:
        return None
    if len(code) > 20:
        raise LocationError("postal_code is too long")
    country = (country or default_country or "US").strip().upper()
    if not re.fullmatch(r"[A-Z]{2}", country):
        raise LocationError(f"country must be a two-letter ISO code, not {country!r}")
    point = resolve_location(code, country)
    if point is not None:
        return Origin(point[0], point[1], "postal_code", code, country)
    if session is not None:  # any country: where the listings with that postal code are
        point = _postal_code_from_listings(session, code, country)
        if point is not None:
            return Origin(point[0], point[1], "postal_code_listings", code, country)
    raise LocationError(f"unknown postal code {code!r} for country {country}: send lat and lon instead")


def _postal_code_from_listings(session: Session, code: str, country: str) -> tuple[float, float] | None:
    rows = session.execute(
        select(Listing.latitude, Listing.longitude)
        .where(Listing.postal_code == code, Listing.country == country,
               Listing.latitude.is_not(None), Listing.longitude.is_not(None))
        .limit(200)
    ).all()
    points = [(float(a), float(b)) for a, b in rows if valid_coordinates(a, b)]
    if not points:
        return None
    return sum(p[0] for p in points) / len(points), sum(p[1] for p in points) / len(points)


def listing_point(lat: Any, lon: Any, postal_code: str | None, country: str | None) -> tuple[float, float] | None:
    """A listing's place: its own coordinates when valid, else its resolved postal code."""
    if lat is not None and lon is not None and valid_coordinates(lat, lon):
        return float(lat), float(lon)
    return resolve_location(postal_code, country) if postal_code else None


# --- prices -----------------------------------------------------------------------------------------
def quantile(sorted_values: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) of already sorted values, interpolated linearly between order statistics."""
    if not sorted_values:
        raise ValueError("no values")
    if not 0 <= q <= 1:
        raise ValueError("q must be within [0, 1]")
    pos = (len(sorted_values) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    frac = pos - lo
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * frac


@dataclass
class PriceStats:
    count: int
    mean: float
    median: float
    p25: float
    p75: float
    min: float
    max: float

    def as_dict(self, ndigits: int = 2) -> dict[str, Any]:
        return {"count": self.count, **{k: round(getattr(self, k), ndigits)
                                        for k in ("mean", "median", "p25", "p75", "min", "max")}}


def price_statistics(prices: Iterable[float | Decimal]) -> PriceStats | None:
    """Count, mean, median, 25th/75th percentiles, min and max; None for no prices."""
    values = sorted(float(p) for p in prices)
    if not values:
        return None
    return PriceStats(
        count=len(values), mean=math.fsum(values) / len(values), median=quantile(values, 0.5),
        p25=quantile(values, 0.25), p75=quantile(values, 0.75), min=values[0], max=values[-1],
    )


# --- offers -----------------------------------------------------------------------------------------
@dataclass
class Offer:
    listing_id: int
    title: str
    price: float | None
    currency: str | None
    year: int | None
    mileage: int | None
    city: str | None
    postal_code: str | None
    country: str | None
    url: str | None
    match: str  # "label" | "prediction"
    distance_km: float | None = None
    last_seen: Any = None
    thumbnail_image_id: int | None = None


@dataclass
class OfferSearch:
    """The active offers of one model, filtered by place, with price statistics."""

    model: str
    total: int  # offers matching (within the radius when there is an origin)
    offers: list[Offer]  # ``total`` of them, nearest first (no origin: most recently seen first)
    currency: str | None  # the currency of the statistics
    prices: PriceStats | None
    by_year: list[tuple[int, PriceStats]] = field(default_factory=list)
    excluded_other_currency: int = 0  # priced offers in another (or no) currency
    without_price: int = 0
    unlocated: int = 0  # with an origin: offers left out because their place is unknown
    outside_radius: int = 0
    anywhere: int = 0  # active offers of the model regardless of place

    def stats_dict(self) -> dict[str, Any]:
        return {
            "currency": self.currency,
            **(self.prices.as_dict() if self.prices else
               {"count": 0, "mean": None, "median": None, "p25": None, "p75": None, "min": None, "max": None}),
            "excluded_other_currency": self.excluded_other_currency,
            "without_price": self.without_price,
            "by_year": [{"year": year, **stats.as_dict()} for year, stats in self.by_year],
        }


def find_offers(session: Session, model: str, *, version_id: int | None, origin: Origin | None = None,
                radius_km: float | None = None, currency: str | None = None,
                min_per_year: int = 3) -> OfferSearch:
    """All active offers of ``model`` (see the module doc for matching, places and prices).

    ``version_id`` is the active model version (None: labelled listings only). With ``origin``, only
    offers within ``radius_km`` (None: any distance) count, nearest first."""
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
    rows = session.execute(stmt).all()

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

    if origin is not None:
        offers.sort(key=lambda o: (o.distance_km, o.listing_id))
    else:
        offers.sort(key=lambda o: (o.last_seen is None, _neg_time(o.last_seen), -o.listing_id))

    priced = [o for o in offers if o.price is not None]
    chosen = currency.upper() if currency else _most_common(o.currency for o in priced)
    in_currency = [o for o in priced if o.currency == chosen] if chosen else []
    per_year: dict[int, list[float]] = defaultdict(list)
    for o in in_currency:
        if o.year is not None:
            per_year[o.year].append(o.price)
    by_year = [(year, price_statistics(ps)) for year, ps in sorted(per_year.items())
               if len(ps) >= max(1, min_per_year)]
    return OfferSearch(
        model=model, total=len(offers), offers=offers, currency=chosen,
        prices=price_statistics(o.price for o in in_currency), by_year=by_year,  # type: ignore[misc]
        excluded_other_currency=len(priced) - len(in_currency), without_price=len(offers) - len(priced),
        unlocated=unlocated, outside_radius=outside, anywhere=len(rows),
    )


def _neg_time(value: Any) -> float:
    try:
        return -value.timestamp()
    except AttributeError:
        return 0.0


def _most_common(values: Iterable[str | None]) -> str | None:
    counts = Counter(v for v in values if v)
    if not counts:
        return None
    return min(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0]


def thumbnails(session: Session, listing_ids: Sequence[int]) -> dict[int, int]:
    """For each listing, the id of its first photo (by position) that has a normalized JPEG in the store."""
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
