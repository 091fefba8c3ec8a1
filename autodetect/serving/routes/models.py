"""``GET /models/{id}/offers``: a car model's active offers (class id or name), nearest first, paginated, each
against its fair price with a deal rating, and the asking prices' median and middle half."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from autodetect.serving.deps import ServiceDep, SessionsDep, SettingsDep
from autodetect.serving.filters import currency_code, offer_filter
from autodetect.serving.offers import appraise, thumbnails
from autodetect.serving.schemas import ERRORS, OffersPage, class_fields, offer_json
from autodetect.storage import CarClass, ModelVersion

router = APIRouter()


@router.get("/models/{model_ref}/offers", response_model=OffersPage, responses=ERRORS,
            summary="Active offers of one car model (class id or name), nearest first, each with its fair price and "
                    "deal rating, and the asking prices' median and range")
def model_offers(
    model_ref: str,
    settings: SettingsDep,
    service: ServiceDep,
    sessions: SessionsDep,
    lat: Annotated[float | None, Query()] = None,
    lon: Annotated[float | None, Query()] = None,
    postal_code: Annotated[str | None, Query(max_length=20)] = None,
    country: Annotated[str | None, Query(max_length=3)] = None,
    radius_km: Annotated[float | None, Query()] = None,
    currency: Annotated[str | None, Query()] = None,
    limit: Annotated[int, Query(ge=1)] = 20,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    if limit > settings.api_max_page_size:
        raise HTTPException(422, f"limit must be at most {settings.api_max_page_size}")
    wanted_currency = currency_code(currency)
    with sessions() as session:
        where = offer_filter(settings, session, lat=lat, lon=lon, postal_code=postal_code, country=country,
                             radius_km=radius_km, currency=wanted_currency)
        version = session.execute(select(ModelVersion).where(ModelVersion.status == "active")).scalar_one_or_none()
        name, cls = _find_model(session, model_ref, version)
        search = where.search(settings, session, [name], version.id if version else None,
                              limit=limit, offset=offset)[name]
        if search.anywhere == 0:
            raise HTTPException(404, f"no active offers for {name!r}")
        page = search.offers
        thumbs = thumbnails(page)
        fit = service.fair_prices(session)
        return {
            "model": {"name": name, **class_fields(cls)},
            "location": where.location(), "radius_km": where.radius_km,
            "total": search.total, "limit": limit, "offset": offset,
            "offers": [offer_json(o, thumbs, appraise(o, name, fit.prices)) for o in page],
            "asking_prices": search.asking_prices(settings.price_min_comparables), "fair_prices": fit.as_json(),
            "unlocated": search.unlocated, "outside_radius": search.outside_radius, "anywhere": search.anywhere,
        }


def _find_model(session: Session, ref: str, version: ModelVersion | None) -> tuple[str, CarClass | None]:
    """The car model a path names: a class id, a class name (any case), or a class of the active version."""
    ref = ref.strip()
    cls = None
    if ref.isdigit():
        cls = session.get(CarClass, int(ref))
    if cls is None:
        cls = session.execute(select(CarClass).where(CarClass.name == ref)).scalar_one_or_none()
    if cls is None:
        cls = session.execute(select(CarClass).where(func.lower(CarClass.name) == ref.lower())).scalars().first()
    if cls is not None:
        return cls.name, cls
    if version is not None and ref in (version.classes or []):
        return ref, None
    raise HTTPException(404, f"no car model {ref!r} (give a class id or a name)")
