"""Places, offline: distances between points, postal codes to coordinates, and where a request stands.

- A listing's own latitude/longitude win; otherwise its postal code is resolved offline
  (:func:`resolve_location`: US ZIP centroids from the ``zipcodes`` package, which embeds GeoNames'
  coordinates in the wheel and never downloads anything). Distances are great-circle (haversine).
- A request's :class:`Origin` comes from lat/lon, or from a postal code (the offline table, else the
  coordinates of the listings with that postal code): :func:`make_origin`.
- In SQL (the offers search): a listing's place is stored (``place_lat``/``place_lon``, indexed), a
  :func:`bounding_box` around the origin narrows the rows on that index, and :func:`distance_sql` is
  :func:`haversine_km` operation for operation (the same floating-point results as here).
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session
from sqlalchemy.sql import ColumnElement

from autodetect.storage import Listing

log = logging.getLogger(__name__)

__all__ = [
    "EARTH_RADIUS_KM",
    "MAX_RADIUS_KM",
    "BoundingBox",
    "LocationError",
    "Origin",
    "bounding_box",
    "box_sql",
    "distance_sql",
    "ensure_math_functions",
    "haversine_km",
    "listing_point",
    "make_origin",
    "place_columns",
    "resolve_location",
    "valid_coordinates",
]

#: Mean Earth radius (IUGG), km.
EARTH_RADIUS_KM = 6371.0088
#: Half the Earth's circumference: every point on Earth is within this distance.
MAX_RADIUS_KM = math.pi * EARTH_RADIUS_KM


class LocationError(ValueError):
    """A location that cannot be used (out of range, half given, an unknown postal code)."""


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in km between two points given in degrees."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


@dataclass(frozen=True)
class BoundingBox:
    """Latitudes ``lat_min..lat_max`` and longitudes within one of ``lon_ranges`` (empty: any longitude)."""

    lat_min: float
    lat_max: float
    lon_ranges: tuple[tuple[float, float], ...] = ()


#: Degrees added to each side of a bounding box, so that rounding can never leave out a point the exact
#: distance keeps (about 0.1 mm; the distance itself decides).
_BOX_MARGIN_DEG = 1e-9


def bounding_box(lat: float, lon: float, radius_km: float) -> BoundingBox | None:
    """A box holding every point within ``radius_km`` of (lat, lon); None when that is the whole Earth.

    The latitudes span the radius's angle either side; a pole within the radius takes every longitude.
    Otherwise the widest longitude of the circle is ``asin(sin(angle) / cos(lat))`` either side, split in
    two ranges where it crosses the antimeridian."""
    angle = radius_km / EARTH_RADIUS_KM
    if angle >= math.pi:
        return None
    dlat = math.degrees(angle) + _BOX_MARGIN_DEG
    lat_min, lat_max = lat - dlat, lat + dlat
    if lat_min <= -90 or lat_max >= 90:
        return BoundingBox(max(lat_min, -90.0), min(lat_max, 90.0))
    dlon = math.degrees(math.asin(min(1.0, math.sin(angle) / math.cos(math.radians(lat))))) + _BOX_MARGIN_DEG
    west, east = lon - dlon, lon + dlon
    if dlon >= 180:
        return BoundingBox(lat_min, lat_max)
    if west < -180:
        return BoundingBox(lat_min, lat_max, ((west + 360, 180.0), (-180.0, east)))
    if east > 180:
        return BoundingBox(lat_min, lat_max, ((west, 180.0), (-180.0, east - 360)))
    return BoundingBox(lat_min, lat_max, ((west, east),))


def box_sql(lat: ColumnElement, lon: ColumnElement, box: BoundingBox) -> ColumnElement:
    """``box`` as a condition on the place columns (ranges an index on them serves)."""
    condition = lat.between(box.lat_min, box.lat_max)
    if box.lon_ranges:
        condition = and_(condition, or_(*(lon.between(west, east) for west, east in box.lon_ranges)))
    return condition


def distance_sql(lat: ColumnElement, lon: ColumnElement, p1: Any, cos_p1: Any, lon0: Any,
                 postgres: bool) -> ColumnElement:
    """:func:`haversine_km` from an origin to the place columns, in SQL, with the same operations in the
    same order (``radians`` as a product by pi/180, as Python's; ``power`` for ``** 2``). The origin comes
    as ``p1`` (its latitude in radians), ``cos_p1`` (the cosine of that) and ``lon0`` (its longitude in
    degrees), computed in Python as :func:`haversine_km` computes them."""
    degree = math.pi / 180
    p2 = lat * degree
    dp, dl = p2 - p1, (lon - lon0) * degree
    a = func.power(func.sin(dp / 2), 2) + cos_p1 * func.cos(p2) * func.power(func.sin(dl / 2), 2)
    at_most_one = func.least(1.0, func.sqrt(a)) if postgres else func.min(1.0, func.sqrt(a))
    return 2 * EARTH_RADIUS_KM * func.asin(at_most_one)


def _sqlite_has_math() -> bool:
    """Whether this process's SQLite has the math functions built in (3.35+ compiled with them)."""
    import sqlite3
    from contextlib import closing

    if sqlite3.sqlite_version_info < (3, 35, 0):
        return False
    with closing(sqlite3.connect(":memory:")) as probe:
        try:
            probe.execute("SELECT sin(0), asin(0), power(2, 2)")
        except sqlite3.OperationalError:
            return False
    return True


def _sql_function(function):  # type: ignore[no-untyped-def]
    """``function`` as SQL calls it: NULL in, NULL out (SQLite may evaluate a term of an AND that is false)."""
    return lambda *args: None if None in args else function(*args)


_SQLITE_MATH = {name: _sql_function(f) for name, f in
                {"sin": math.sin, "cos": math.cos, "asin": math.asin, "sqrt": math.sqrt, "power": math.pow}.items()}


@lru_cache(maxsize=1)
def sqlite_needs_math() -> bool:
    return not _sqlite_has_math()


def ensure_math_functions(session: Session) -> None:
    """Give the session's SQLite connection the functions :func:`distance_sql` uses when the library lacks
    them (Python's own: the same C library, the same results). PostgreSQL has them."""
    if session.get_bind().dialect.name != "sqlite" or not sqlite_needs_math():
        return
    raw = session.connection().connection.driver_connection
    for name, function in _SQLITE_MATH.items():
        raw.create_function(name, 2 if name == "power" else 1, function, deterministic=True)


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


def place_columns(lat: Any, lon: Any, postal_code: str | None, country: str | None) -> dict[str, float | None]:
    """``place_lat`` and ``place_lon`` of a listing row with these fields (:func:`listing_point`), for
    whoever writes listings: the offers search reads the place from these indexed columns."""
    point = listing_point(lat, lon, postal_code, country)
    return {"place_lat": point[0] if point else None, "place_lon": point[1] if point else None}
