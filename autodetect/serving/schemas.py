"""The API's response shapes, for ``/docs`` (the handlers build plain dicts), and the helpers that build the
dicts two routes share: an offer, and a car class's fields."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from autodetect.serving.offers import Offer
from autodetect.storage import CarClass


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


class YearStats(BaseModel):
    year: int
    count: int
    mean: float
    median: float
    p25: float
    p75: float
    min: float
    max: float


class PriceStatsOut(BaseModel):
    currency: str | None = Field(description="The requested currency, else the most common one among the offers")
    count: int
    mean: float | None
    median: float | None
    p25: float | None
    p75: float | None
    min: float | None
    max: float | None
    excluded_other_currency: int = Field(description="Priced offers in another currency, left out (no FX rates)")
    without_price: int
    excluded_price_issue: int = Field(0, description="Offers whose price cannot count (an auction, a placeholder)")
    by_year: list[YearStats] = Field(description="Model years with at least api_min_listings_per_year priced offers")


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
    prices: PriceStatsOut
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
    prices: PriceStatsOut
    unlocated: int
    outside_radius: int
    anywhere: int


class Error(BaseModel):
    detail: str


ERRORS = {code: {"model": Error} for code in (404, 409, 413, 415, 422, 503)}


# --- the dicts behind the shapes ---------------------------------------------------------------------
def _round(value: float | None, ndigits: int) -> float | None:
    return None if value is None else round(value, ndigits)


def offer_json(offer: Offer, thumbs: dict[int, int]) -> dict[str, Any]:
    """An :class:`OfferOut`; ``thumbs`` maps listing ids to the image id of their thumbnail."""
    image_id = thumbs.get(offer.listing_id)
    return {
        "listing_id": offer.listing_id, "title": offer.title, "price": offer.price, "currency": offer.currency,
        "year": offer.year, "mileage": offer.mileage, "city": offer.city, "postal_code": offer.postal_code,
        "country": offer.country, "distance_km": _round(offer.distance_km, 1), "url": offer.url,
        "thumbnail_url": f"/photos/{image_id}" if image_id is not None else None,
        "listing_url": f"/listings/{offer.listing_id}", "match": offer.match,
    }


def class_fields(cls: CarClass | None) -> dict[str, Any]:
    """``class_id``, ``make`` and ``model`` of a catalogue class; all None for a class the catalogue lacks."""
    return {"class_id": cls.id if cls else None, "make": cls.make if cls else None,
            "model": cls.model if cls else None}
