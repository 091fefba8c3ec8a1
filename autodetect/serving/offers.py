"""Offers for a car model: which active listings match it, how far they are, what they cost.

- **Matching.** An active listing offers model M when its label (``Listing.class_id`` ->
  ``CarClass.name``) is M, or, for an unlabelled listing, when its listing-level prediction by the
  active model version (``ListingPrediction.top_class``) is M.
- **Where.** A listing's own latitude/longitude win; otherwise its postal code is resolved offline
  (:mod:`autodetect.serving.places`). Distances are great-circle (haversine). With an origin, offers
  without a known place are left out and counted (``unlocated``).
- **Prices.** Statistics are taken over the offers in one currency (the requested one, else the most
  common one among the offers); offers in other currencies are excluded and counted — there are no
  exchange rates offline. The statistics themselves: :mod:`autodetect.serving.prices`.

No web framework here: the API (``autodetect.serving.app``) turns these results into JSON.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from autodetect.serving.places import Origin, haversine_km, listing_point
from autodetect.serving.prices import PriceStats, price_statistics
from autodetect.storage import CarClass, Image, Listing, ListingPrediction, ListingStatus

__all__ = ["Offer", "OfferSearch", "find_offers", "thumbnails"]


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
    rows = _matching_rows(session, model, version_id)
    offers, unlocated, outside = _place_offers(rows, model, origin, radius_km)
    _sort_offers(offers, origin)
    priced = [o for o in offers if o.price is not None]
    chosen = currency.upper() if currency else _most_common(o.currency for o in priced)
    in_currency = [o for o in priced if o.currency == chosen] if chosen else []
    return OfferSearch(
        model=model, total=len(offers), offers=offers, currency=chosen,
        prices=price_statistics(o.price for o in in_currency),  # type: ignore[misc]
        by_year=_stats_by_year(in_currency, min_per_year),
        excluded_other_currency=len(priced) - len(in_currency), without_price=len(offers) - len(priced),
        unlocated=unlocated, outside_radius=outside, anywhere=len(rows),
    )


def _matching_rows(session: Session, model: str, version_id: int | None) -> list[Any]:
    """The active listings that offer ``model``: labelled so, or unlabelled and predicted so by ``version_id``."""
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


def _place_offers(rows: Sequence[Any], model: str, origin: Origin | None,
                  radius_km: float | None) -> tuple[list[Offer], int, int]:
    """The offers of ``rows`` with their distances; with an origin, only those placed within the radius.
    Also how many were left out as unlocated and as outside the radius."""
    offers: list[Offer] = []
    unlocated = outside = 0
    for r in rows:
        offer = _offer(r, model)
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


def _offer(r: Any, model: str) -> Offer:
    return Offer(
        listing_id=r.id, title=r.title or "", price=float(r.price) if r.price is not None else None,
        currency=(r.currency or None) and r.currency.upper(), year=r.year, mileage=r.mileage, city=r.city,
        postal_code=r.postal_code, country=r.country, url=r.url,
        match="label" if r.name == model else "prediction", last_seen=r.last_seen,
    )


def _sort_offers(offers: list[Offer], origin: Origin | None) -> None:
    """Nearest first with an origin; else most recently seen first (never seen last); ties by listing id."""
    if origin is not None:
        offers.sort(key=lambda o: (o.distance_km, o.listing_id))
    else:
        offers.sort(key=lambda o: (o.last_seen is None, _neg_time(o.last_seen), -o.listing_id))


def _stats_by_year(in_currency: Iterable[Offer], min_per_year: int) -> list[tuple[int, PriceStats]]:
    """Price statistics per model year, for the years with at least ``min_per_year`` (and one) priced offers."""
    per_year: dict[int, list[float]] = defaultdict(list)
    for o in in_currency:
        if o.year is not None:
            per_year[o.year].append(o.price)  # type: ignore[arg-type]
    return [(year, price_statistics(ps)) for year, ps in sorted(per_year.items())  # type: ignore[misc]
            if len(ps) >= max(1, min_per_year)]


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
