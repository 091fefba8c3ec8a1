"""Offers for car models: which active listings match them, how far they are, what they cost, computed by
the database in one query for any number of models (:mod:`autodetect.serving.offers_sql`): its cost follows
the offers in the area, not the size of the catalogue.

- **Matching.** An active listing offers model M when its label (``Listing.class_id`` ->
  ``CarClass.name``) is M, or, for an unlabelled listing, when its listing-level prediction by the
  active model version (``ListingPrediction.top_class``) is M.
- **Where.** A listing's place (``place_lat``/``place_lon``: its own coordinates, else its postal
  code's centroid, see :func:`autodetect.serving.places.listing_point`) is stored with it. With an
  origin, a bounding box on the indexed place narrows the rows, the great-circle distance decides
  (:func:`~autodetect.serving.places.distance_sql`), offers without a place are left out and counted
  (``unlocated``), and the nearest come first.
- **Prices.** Statistics are taken over the offers whose price can count (``price_issue`` is NULL) in one
  currency (the requested one, else the most common one among them); offers in other currencies are
  excluded and counted, as there are no exchange rates offline. The aggregates themselves:
  :func:`autodetect.serving.prices.stats_select`. They are asking prices, not sale prices, and the API
  shows them only over enough comparables (:meth:`OfferSearch.asking_prices`).
- **Deals.** Each offer is appraised against the fair price of a car of its class, age, mileage, title
  words and region (:func:`appraise`, the model in :mod:`autodetect.pricing`); an offer whose price cannot
  count keeps its fair price but gets no rating.

No web framework here: the API (``autodetect.serving.app``) turns these results into JSON.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from autodetect.db import is_postgres
from autodetect.pricing.fair_price import Appraisal, FairPrices
from autodetect.pricing.usable import FIRST_MODEL_YEAR
from autodetect.serving.offers_sql import Shape, bind_values, offers_statement
from autodetect.serving.places import Origin, ensure_math_functions
from autodetect.serving.prices import PriceStats, stats_from_row

__all__ = ["Offer", "OfferSearch", "appraise", "find_offers", "find_offers_of", "thumbnails"]


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
    price_issue: str | None = None  # why its price cannot count (an auction, a placeholder...); None: it counts


@dataclass
class OfferSearch:
    """The active offers of one model, filtered by place, with price statistics."""

    model: str
    total: int  # offers matching (within the radius when there is an origin)
    offers: list[Offer]  # the requested page of them, nearest first (no origin: most recently seen first)
    currency: str | None  # the currency of the statistics
    prices: PriceStats | None
    by_year: list[tuple[int, PriceStats]] = field(default_factory=list)
    excluded_other_currency: int = 0  # offers with a usable price in another (or no) currency
    without_price: int = 0
    excluded_price_issue: int = 0  # offers whose price cannot count (an auction, a placeholder...)
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
            "excluded_price_issue": self.excluded_price_issue,
            "by_year": [{"year": year, **stats.as_dict()} for year, stats in self.by_year],
        }

    def asking_prices(self, min_comparables: int) -> dict[str, Any]:
        """:meth:`stats_dict` as the API shows it: the statistics only over at least ``min_comparables``
        asking prices (else null, the count kept), and only the model years that have as many."""
        out = self.stats_dict()
        if out["count"] < min_comparables:
            out.update(dict.fromkeys(("mean", "median", "p25", "p75", "min", "max")))
        out["by_year"] = [year for year in out["by_year"] if year["count"] >= min_comparables]
        return {**out, "min_comparables": min_comparables}


def appraise(offer: Offer, model: str, fair: FairPrices) -> Appraisal | None:
    """The offer as a car of ``model`` against its fair price (None: no fair price for its class, currency or
    year, nor for a model year before the first cars); an offer whose price cannot count is appraised without
    its price: no difference, no rating."""
    year = offer.year if offer.year is None or offer.year >= FIRST_MODEL_YEAR else None
    return fair.appraise(model, offer.currency or "", None if offer.price_issue else offer.price, year,
                         offer.mileage, postal_code=offer.postal_code, country=offer.country, title=offer.title)


def find_offers(session: Session, model: str, *, version_id: int | None, origin: Origin | None = None,
                radius_km: float | None = None, currency: str | None = None, min_per_year: int = 3,
                limit: int | None = None, offset: int = 0) -> OfferSearch:
    """The active offers of ``model``: see :func:`find_offers_of`."""
    return find_offers_of(session, [model], version_id=version_id, origin=origin, radius_km=radius_km,
                          currency=currency, min_per_year=min_per_year, limit=limit, offset=offset)[model]


def find_offers_of(session: Session, models: Sequence[str], *, version_id: int | None, origin: Origin | None = None,
                   radius_km: float | None = None, currency: str | None = None, min_per_year: int = 3,
                   limit: int | None = None, offset: int = 0) -> dict[str, OfferSearch]:
    """The active offers of each of ``models`` (see the module doc for matching, places and prices), in
    one query for all of them (:mod:`autodetect.serving.offers_sql`): the counts, the price statistics,
    and the page of offers (``limit`` of them, None: all, after ``offset``) with their thumbnails.

    ``version_id`` is the active model version (None: labelled listings only). With ``origin``, only
    offers within ``radius_km`` (None: any distance) count, nearest first."""
    models = list(dict.fromkeys(models))
    if not models:
        return {}
    ensure_math_functions(session)
    postgres = is_postgres(session)
    values = bind_values(models, version_id, origin, radius_km, min_per_year=min_per_year, limit=limit, offset=offset)
    statement = offers_statement(Shape.of(postgres, version_id, origin, radius_km, len(models)))
    rows = session.connection().execute(statement, values).all()  # Core: no ORM entities to build
    searches = {m: OfferSearch(model=m, total=0, offers=[], currency=None, prices=None) for m in models}
    _summarize(rows, searches, currency.upper() if currency else None, postgres)
    return searches


def _summarize(rows: Sequence[Any], searches: dict[str, OfferSearch], currency: str | None,
               postgres: bool) -> None:
    """Fill in each search from the rows of :func:`offers_statement` (counts, statistics, offers): its currency
    is ``currency``, else the most common one among the usable prices in the area (ties to the first in
    alphabetical order); its statistics are those of that currency, per model year in year order."""
    usable: dict[str, Counter] = {model: Counter() for model in searches}  # currency (None too) -> offers
    stats: dict[tuple[str, str], PriceStats] = {}
    per_year: dict[tuple[str, str], list[tuple[int, PriceStats]]] = defaultdict(list)
    pages: dict[str, list[tuple[int, Offer]]] = defaultdict(list)  # model -> (rank, offer)
    for row in rows:
        search = searches[row.model]
        if row.part == "all":  # one row per branch (labelled, predicted)
            search.anywhere += row.n
            search.unlocated += row.unlocated
        elif row.part == "inside":
            search.total += row.n
            if row.pricing == "none":
                search.without_price += row.n
            elif row.pricing == "issue":
                search.excluded_price_issue += row.n
            else:
                usable[row.model][row.currency] += row.n
        elif row.part == "prices":
            stats[row.model, row.currency] = stats_from_row(row, postgres)
        elif row.part == "year":
            per_year[row.model, row.currency].append((row.year, stats_from_row(row, postgres)))
        else:
            pages[row.model].append((row.n, _offer(row)))
    for model, counts in usable.items():
        named = [(cur, n) for cur, n in counts.items() if cur]
        search = searches[model]
        search.currency = currency or (min(named, key=lambda kv: (-kv[1], kv[0]))[0] if named else None)
        search.outside_radius = search.anywhere - search.unlocated - search.total
        search.excluded_other_currency = sum(counts.values()) - (counts[search.currency] if search.currency else 0)
        search.prices = stats.get((model, search.currency))
        search.by_year = sorted(per_year.get((model, search.currency), []), key=lambda year_stats: year_stats[0])
        search.offers = [offer for _, offer in sorted(pages[model], key=lambda ranked: ranked[0])]


def _offer(r: Any) -> Offer:
    return Offer(
        listing_id=r.listing_id, title=r.title or "", price=float(r.price) if r.price is not None else None,
        currency=r.currency, year=r.year, mileage=r.mileage, city=r.city, postal_code=r.postal_code,
        country=r.country, url=r.url, match=r.match, distance_km=r.distance_km, last_seen=r.last_seen,
        thumbnail_image_id=r.thumbnail_image_id, price_issue=r.price_issue,
    )


def thumbnails(offers: Sequence[Offer]) -> dict[int, int]:
    """Listing id -> the image id of its thumbnail (its first photo with a normalized JPEG), for the
    offers that have one."""
    return {o.listing_id: o.thumbnail_image_id for o in offers if o.thumbnail_image_id is not None}
