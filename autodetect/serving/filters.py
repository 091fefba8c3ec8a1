"""The place, radius and currency that ``/identify`` and ``/models/{id}/offers`` filter offers by, read from
the request (a 422 with a message for each bad value)."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from fastapi import HTTPException
from sqlalchemy.orm import Session

from autodetect.serving.offers import OfferSearch, find_offers_of
from autodetect.serving.places import MAX_RADIUS_KM, LocationError, Origin, make_origin
from autodetect.settings import Settings


def currency_code(value: str | None) -> str | None:
    """A three-letter ISO 4217 code in capitals; None when not given."""
    if value is None or not value.strip():
        return None
    value = value.strip().upper()
    if not re.fullmatch(r"[A-Z]{3}", value):
        raise HTTPException(422, f"currency must be a three-letter ISO 4217 code, not {value!r}")
    return value


@dataclass(frozen=True)
class OfferFilter:
    """Where the person is (None: anywhere), how far to look, and the currency of the price statistics."""

    origin: Origin | None
    radius_km: float | None
    currency: str | None

    def location(self) -> dict | None:
        return self.origin.as_dict() if self.origin else None

    def search(self, settings: Settings, session: Session, names: Sequence[str], version_id: int | None, *,
               limit: int, offset: int = 0) -> dict[str, OfferSearch]:
        """The active offers of each car model of ``names`` that pass this filter (``limit`` of them after
        ``offset``, with the counts and prices of all), in one query for all the names."""
        return find_offers_of(session, names, version_id=version_id, origin=self.origin, radius_km=self.radius_km,
                              currency=self.currency, min_per_year=settings.api_min_listings_per_year,
                              limit=limit, offset=offset)


def offer_filter(settings: Settings, session: Session, *, lat: float | None, lon: float | None,
                 postal_code: str | None, country: str | None, radius_km: float | None,
                 currency: str | None) -> OfferFilter:
    """The filter of a request; ``currency`` already checked by :func:`currency_code`."""
    origin = _origin(settings, session, lat, lon, postal_code, country)
    return OfferFilter(origin, _radius(settings, radius_km, origin), currency)


def _radius(settings: Settings, radius_km: float | None, origin: Origin | None) -> float | None:
    if radius_km is not None and not (math.isfinite(radius_km) and 0 < radius_km <= MAX_RADIUS_KM):
        raise HTTPException(422, f"radius_km must be above 0 and at most {MAX_RADIUS_KM:.0f}, not {radius_km}")
    if origin is None:
        return None
    return float(radius_km if radius_km is not None else settings.api_default_radius_km)


def _origin(settings: Settings, session: Session, lat, lon, postal_code, country) -> Origin | None:
    try:
        return make_origin(session, lat=lat, lon=lon, postal_code=postal_code, country=country,
                           default_country=settings.api_default_country)
    except LocationError as exc:
        raise HTTPException(422, str(exc)) from None
