"""The API's response shapes, for ``/docs`` (the handlers build plain dicts), and the helpers that build the
dicts two routes share: an offer, and a car class's fields."""

from __future__ import annotations

import math
import re
from typing import Any, Literal

from pydantic import BaseModel, Field

from autodetect.pricing import ratings
from autodetect.pricing.fair_price import Appraisal
from autodetect.serving.offers import Offer
from autodetect.storage import CarClass

#: How the deal ratings are cut, in the words of ``pricing/ratings.py`` (its Sphinx markup left out).
_RATINGS_DOC = re.sub(r"\s*\(:data:`\w+`\)", "", " ".join((ratings.__doc__ or "").split())).replace("``", "")


class ModelRef(BaseModel):
    id: int
    name: str


class OfferOut(BaseModel):
    listing_id: int
    title: str
    price: float | None
    currency: str | None
    year: int | None
    mileage: int | None
    city: str | None
    postal_code: str | None
    country: str | None
    distance_km: float | None = Field(description="Great-circle distance; null without a location")
    url: str | None = Field(description="The listing on its marketplace")
    thumbnail_url: str | None = Field(description="/photos/{image_id}, served by this app")
    listing_url: str = Field(description="/listings/{id}, served by this app")
    match: str = Field(description="'label': the seller's make/model; 'prediction': the model's, unlabelled listing")
    price_issue: str | None = Field(
        None, description="Why this price cannot count, shown instead of a rating (an auction priced by its bid, a "
                          "placeholder below the price floor, an unknown currency, a negative mileage, an "
                          "impossible model year); null: an asking price that counts")
    fair_price: float | None = Field(
        None, description="The fair asking price of this car, in its currency: what comparable offers of its model "
                          "ask for its age, mileage, trim words and region (a robust regression on the catalogue's "
                          "asking prices, not sale prices). Null without a model year, or with fewer than "
                          "price_min_comparables (5 by default) usable asking prices of the model in the currency")
    difference_pct: float | None = Field(
        None, description="(price - fair_price) / fair_price x 100: below 0, cheaper than the fair price; null "
                          "without a fair price or when the price cannot count")
    deal_rating: Literal[ratings.RATINGS] | None = Field(  # type: ignore[valid-type]
        None, description="The asking price against the fair price; null without a fair price or when the price "
                          f"cannot count (see price_issue). {_RATINGS_DOC} The cuts of the fit in use, in percent "
                          "from the fair price: fair_prices.rating_cuts_pct")
    fair_price_basis: Literal["own", "make", "catalogue"] | None = Field(
        None, description="Whose price curve the fair price follows: 'own' (the model's own offers), 'make' or "
                          "'catalogue' (a model with few offers: a curve over its make's or every model's offers, "
                          "shifted by this model's median difference from it)")


class YearStats(BaseModel):
    year: int
    count: int
    mean: float
    median: float
    p25: float
    p75: float
    min: float
    max: float


class AskingPricesOut(BaseModel):
    """Asking prices of the model's offers in the area: what sellers ask, not what cars sell for. The
    statistics are null when there are fewer than ``min_comparables`` comparables (``count`` says how many)."""

    currency: str | None = Field(description="The requested currency, else the most common one among the offers")
    count: int = Field(description="Comparables: offers in the area whose asking price counts, in this currency")
    min_comparables: int = Field(description="The statistics need at least this many comparables "
                                             "(settings.price_min_comparables); with fewer they are null")
    median: float | None = Field(description="Median asking price; null with fewer than min_comparables")
    p25: float | None = Field(description="25th percentile of the asking prices (with p75: the middle half)")
    p75: float | None = Field(description="75th percentile of the asking prices")
    mean: float | None
    min: float | None
    max: float | None
    excluded_other_currency: int = Field(description="Priced offers in another currency, left out (no FX rates)")
    without_price: int
    excluded_price_issue: int = Field(0, description="Offers whose price cannot count (an auction, a placeholder)")
    by_year: list[YearStats] = Field(description="Model years with at least min_comparables asking prices (and "
                                                 "api_min_listings_per_year)")


class FairPricesOut(BaseModel):
    """The fair-price fit the offers were rated against (refitted after crawls that changed the catalogue)."""

    id: int
    fitted_at: str = Field(description="When it was fitted (UTC, ISO 8601)")
    listings: int = Field(description="The usable asking prices it was fitted on")
    rating_cuts_pct: list[float] = Field(
        description="The four cuts between great|good|fair|high|overpriced, in percent from the fair price "
                    f"(the fit's residual quantiles {', '.join(f'{level:.0%}' for level in ratings.LEVELS)})")


class OfferCounts(BaseModel):
    count: int = Field(description="Active offers in the area (anywhere without a location)")
    radius_km: float | None
    unlocated: int = Field(description="Offers left out because their place is unknown")
    outside_radius: int
    anywhere: int = Field(description="Active offers of the model regardless of place")


class LocationOut(BaseModel):
    lat: float
    lon: float
    source: str
    postal_code: str | None
    country: str | None


class CandidateOut(BaseModel):
    rank: int
    name: str
    class_id: int | None
    make: str | None
    model: str | None
    probability: float
    offers: OfferCounts
    asking_prices: AskingPricesOut
    nearest: list[OfferOut]


class IdentifyOut(BaseModel):
    model_version: ModelRef
    verdict: Literal["car", "unknown_model", "no_car"] = Field(
        description="'car': a model we know (see candidates); 'unknown_model': a car, but not a model we know; "
                    "'no_car': no car recognised (also for a photo under 64 px or all one colour)")
    message: str = Field(description="The verdict in words: 'no car recognised', 'a car, but not a model we know'")
    ood_score: float = Field(description="The version's out-of-distribution score (higher: more like its "
                                         "training photos); compared with thresholds chosen at evaluation")
    confidence: float = Field(description="The largest calibrated probability (temperature scaling)")
    location: LocationOut | None
    radius_km: float | None
    candidates: list[CandidateOut] = Field(description="The three most likely models, whatever the verdict")
    fair_prices: FairPricesOut
    timing_ms: dict[str, float]


class CarModelOut(BaseModel):
    name: str
    class_id: int | None
    make: str | None
    model: str | None


class OffersPage(BaseModel):
    model: CarModelOut
    location: LocationOut | None
    radius_km: float | None
    total: int
    limit: int
    offset: int
    offers: list[OfferOut]
    asking_prices: AskingPricesOut
    fair_prices: FairPricesOut
    unlocated: int
    outside_radius: int
    anywhere: int


class Error(BaseModel):
    detail: str


ERRORS = {code: {"model": Error} for code in (404, 409, 413, 415, 422, 503)}


# --- the dicts behind the shapes ---------------------------------------------------------------------
def _round(value: float | None, ndigits: int) -> float | None:
    return None if value is None else round(value, ndigits)


def offer_json(offer: Offer, thumbs: dict[int, int], deal: Appraisal | None) -> dict[str, Any]:
    """An :class:`OfferOut`; ``thumbs`` maps listing ids to the image id of their thumbnail, ``deal`` is the
    offer against its fair price (``offers.appraise``)."""
    image_id = thumbs.get(offer.listing_id)
    difference = deal.difference_pct if deal is not None and math.isfinite(deal.difference_pct) else None
    return {
        "listing_id": offer.listing_id, "title": offer.title, "price": offer.price, "currency": offer.currency,
        "year": offer.year, "mileage": offer.mileage, "city": offer.city, "postal_code": offer.postal_code,
        "country": offer.country, "distance_km": _round(offer.distance_km, 1), "url": offer.url,
        "thumbnail_url": f"/photos/{image_id}" if image_id is not None else None,
        "listing_url": f"/listings/{offer.listing_id}", "match": offer.match, "price_issue": offer.price_issue,
        "fair_price": float(round(deal.fair_price)) if deal else None, "difference_pct": _round(difference, 1),
        "deal_rating": deal.rating if deal else None, "fair_price_basis": deal.pooled if deal else None,
    }


def class_fields(cls: CarClass | None) -> dict[str, Any]:
    """``class_id``, ``make`` and ``model`` of a catalogue class; all None for a class the catalogue lacks."""
    return {"class_id": cls.id if cls else None, "make": cls.make if cls else None,
            "model": cls.model if cls else None}
