"""``POST /identify``: a photo of a car -> its three most likely models, each with its offers nearby and
their prices."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, HTTPException, Request, UploadFile
from sqlalchemy import select
from sqlalchemy.orm import Session

from autodetect.images.decode import UndecodableImage, decode_image, encode_jpeg, normalize
from autodetect.serving.body_limit import BodyTooLarge
from autodetect.serving.deps import Service, ServiceDep, SessionsDep, SettingsDep
from autodetect.serving.filters import OfferFilter, currency_code, offer_filter
from autodetect.serving.offers import OfferSearch, thumbnails
from autodetect.serving.schemas import ERRORS, IdentifyOut, class_fields, offer_json
from autodetect.settings import Settings
from autodetect.storage import CarClass

TOP_MODELS = 3

router = APIRouter()


@router.post("/identify", response_model=IdentifyOut, responses=ERRORS,
             summary="Identify a car photo; its three most likely models with offers nearby and prices")
def identify(
    photo: Annotated[UploadFile, File(description="A photo of a car (JPEG, PNG, WebP, HEIC...)")],
    settings: SettingsDep,
    service: ServiceDep,
    sessions: SessionsDep,
    request: Request,
    lat: Annotated[float | None, Form(description="Latitude of the person, degrees")] = None,
    lon: Annotated[float | None, Form(description="Longitude of the person, degrees")] = None,
    postal_code: Annotated[str | None, Form(max_length=20, description="Instead of lat/lon")] = None,
    country: Annotated[str | None, Form(max_length=3, description="ISO 3166 alpha-2, with postal_code")] = None,
    radius_km: Annotated[float | None, Form(description="Offers within this distance (default: settings)")] = None,
    currency: Annotated[str | None, Form(description="ISO 4217 code for the price statistics")] = None,
    offers: Annotated[int | None, Form(ge=0, le=50, description="Nearest offers per model")] = None,
) -> dict[str, Any]:
    t0 = time.perf_counter()
    data = read_upload(photo, settings.api_max_upload_bytes)
    wanted_currency = currency_code(currency)
    n_offers = settings.api_nearest_offers if offers is None else offers
    with sessions() as session:
        where = offer_filter(settings, session, lat=lat, lon=lon, postal_code=postal_code, country=country,
                             radius_km=radius_km, currency=wanted_currency)
        model = service.model(session)
    t1 = time.perf_counter()
    jpeg = decode_bounded(service, data)
    t2 = time.perf_counter()
    from autodetect.serving.identify import rank

    ranked = rank(model, [jpeg], TOP_MODELS)[0]
    t3 = time.perf_counter()
    with sessions() as session:
        candidates = _candidates(settings, session, ranked, model.version_id, where, n_offers)
    t4 = time.perf_counter()
    request.state.identify_outcome = "identified" if candidates else "no_car"  # for serving/metrics.py
    return {
        "model_version": {"id": model.version_id, "name": model.name},
        "location": where.location(),
        "radius_km": where.radius_km,
        "candidates": candidates,
        "timing_ms": {"decode": round((t2 - t1) * 1000, 2), "model": round((t3 - t2) * 1000, 2),
                      "offers": round((t4 - t3) * 1000, 2), "total": round((t4 - t0) * 1000, 2)},
    }


def read_upload(photo: UploadFile, limit: int) -> bytes:
    """The uploaded photo's bytes; 413 past ``limit``, without reading more than one byte beyond it."""
    data = photo.file.read(limit + 1)
    if len(data) > limit:
        raise BodyTooLarge(limit)
    return data


def decode_bounded(service: Service, data: bytes) -> bytes:
    """``decode_for_model`` in one of the process's decode slots; 503 with ``Retry-After`` when all
    are taken (memory stays bounded however many uploads arrive at once)."""
    if not service.decode_slots.acquire(blocking=False):
        raise HTTPException(503, f"busy: {service.settings.api_max_concurrent_decodes} photos are being decoded; "
                                 "try again in a second", headers={"Retry-After": "1"})
    try:
        return decode_for_model(service.settings, data)
    finally:
        service.decode_slots.release()


def decode_for_model(settings: Settings, data: bytes) -> bytes:
    """The upload as the pipeline sees a stored photo: decoded, upright RGB, shrunk to the normalized size,
    re-encoded as JPEG (the model was trained on exactly such files)."""
    try:
        picture = decode_image(data, settings.download_max_pixels, draft_side=settings.normalized_max_side)
    except UndecodableImage as exc:
        if exc.reason.startswith("unknown image format") or exc.reason.startswith("empty"):
            raise HTTPException(415, f"not an image: {exc.reason} (send a JPEG, PNG, WebP, GIF, BMP or TIFF photo)")
        raise HTTPException(422, f"unusable image: {exc.reason}") from None
    return encode_jpeg(normalize(picture, settings.normalized_max_side))


def _candidates(settings: Settings, session: Session, ranked: list[tuple[str, float]], version_id: int,
                where: OfferFilter, n_offers: int) -> list[dict[str, Any]]:
    """The ranked models with their offers, their prices and the ``n_offers`` nearest offers."""
    info = _class_info(session, [name for name, _ in ranked])
    candidates = []
    for i, (name, probability) in enumerate(ranked, 1):
        search = where.search(settings, session, name, version_id)
        nearest = search.offers[:n_offers]
        thumbs = thumbnails(session, [o.listing_id for o in nearest])
        candidates.append({
            "rank": i, "name": name, **class_fields(info.get(name)),
            "probability": round(float(probability), 6), "offers": _counts(search, where.radius_km),
            "prices": search.stats_dict(), "nearest": [offer_json(o, thumbs) for o in nearest],
        })
    return candidates


def _counts(search: OfferSearch, radius_km: float | None) -> dict[str, Any]:
    return {"count": search.total, "radius_km": radius_km, "unlocated": search.unlocated,
            "outside_radius": search.outside_radius, "anywhere": search.anywhere}


def _class_info(session: Session, names: list[str]) -> dict[str, CarClass]:
    if not names:
        return {}
    return {c.name: c for c in session.execute(select(CarClass).where(CarClass.name.in_(names))).scalars()}
