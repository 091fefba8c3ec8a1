"""``POST /identify``: a photo of a car -> the verdict ("car", "unknown_model": a car, but not a model we
know, "no_car": no car recognised) with its message, and the three most likely models (calibrated
probabilities), each with its offers nearby (each against its fair price, with a deal rating) and the median and
middle half of their asking prices; the page shows the models only for "car"."""

from __future__ import annotations

import io
import time
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, HTTPException, Request, UploadFile
from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session

from autodetect.images.decode import FORMATS, UndecodableImage, decode_image
from autodetect.model.provider import LoadedModel
from autodetect.serving.body_limit import BodyTooLarge
from autodetect.serving.deps import Service, ServiceDep, SessionsDep, SettingsDep
from autodetect.serving.filters import OfferFilter, currency_code, offer_filter
from autodetect.pricing.fair_price import FairPrices
from autodetect.serving.offers import OfferSearch, appraise, thumbnails
from autodetect.serving.schemas import ERRORS, IdentifyOut, class_fields, offer_json
from autodetect.settings import Settings
from autodetect.storage import CarClass

TOP_MODELS = 3
#: The metrics' outcome of each verdict (``serving/metrics.py``).
OUTCOME = {"car": "identified", "unknown_model": "unknown_model", "no_car": "no_car"}

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
    picture = decode_bounded(service, data, model.image_size)
    t2 = time.perf_counter()
    from autodetect.serving.identify import rank

    answer = rank(model, [picture], TOP_MODELS, settings.identify_min_side)[0]
    t3 = time.perf_counter()
    with sessions() as session:
        fit = service.fair_prices(session)
        candidates = _candidates(settings, service, session, answer.ranking, model, where, n_offers, fit.prices)
    t4 = time.perf_counter()
    request.state.identify_outcome = OUTCOME[answer.verdict]  # for serving/metrics.py
    return {
        "model_version": {"id": model.version_id, "name": model.name},
        "verdict": answer.verdict, "message": answer.message, "ood_score": round(answer.ood_score, 6),
        "confidence": round(answer.confidence, 6),
        "location": where.location(),
        "radius_km": where.radius_km,
        "candidates": candidates,
        "fair_prices": fit.as_json(),
        "timing_ms": {"decode": round((t2 - t1) * 1000, 2), "model": round((t3 - t2) * 1000, 2),
                      "offers": round((t4 - t3) * 1000, 2), "total": round((t4 - t0) * 1000, 2)},
    }


def read_upload(photo: UploadFile, limit: int) -> bytes:
    """The uploaded photo's bytes; 413 past ``limit``, without reading more than one byte beyond it."""
    data = photo.file.read(limit + 1)
    if len(data) > limit:
        raise BodyTooLarge(limit)
    return data


def decode_bounded(service: Service, data: bytes, model_side: int) -> Image.Image:
    """``decode_for_model`` within the process's decode budget (the pixels its decode will hold, read from
    the header); 503 with ``Retry-After`` when the budget is spent (memory stays bounded however many
    uploads arrive at once)."""
    settings = service.settings
    pixels = _decoded_pixels(data, _draft_side(settings, model_side), settings.download_max_pixels)
    if not service.decode_budget.try_reserve(pixels):
        raise HTTPException(503, f"busy: photos of {service.decode_budget.limit} pixels in all are being decoded; "
                                 "try again in a second", headers={"Retry-After": "1"})
    try:
        return decode_for_model(settings, data, model_side)
    finally:
        service.decode_budget.release(pixels)


def _draft_side(settings: Settings, model_side: int) -> int:
    return max(model_side, settings.identify_min_side)


def _decoded_pixels(data: bytes, draft_side: int, max_pixels: int) -> int:
    """The pixels decoding ``data`` will hold, from its header (a JPEG reduced to ``draft_side`` as
    ``decode_image`` reduces it); at most ``max_pixels``, beyond which the decode refuses the photo unread,
    and 1 for what is no image (its decode fails at once)."""
    try:
        with Image.open(io.BytesIO(data), formats=FORMATS) as img:
            if img.format == "JPEG":
                img.draft("RGB", (draft_side, draft_side))
            return max(1, min(img.size[0] * img.size[1], max_pixels))
    except Exception:  # noqa: BLE001 - not an image: decode_image says why
        return 1


def decode_for_model(settings: Settings, data: bytes, model_side: int) -> Image.Image:
    """The upload decoded straight at about the model's size, upright RGB: a JPEG is reduced while it is
    decoded (1/2, 1/4 or 1/8) as long as both sides stay at least ``model_side`` and ``identify_min_side``
    (so its short side still tells a photo too small to show a car). Never a full-size decode of a big
    JPEG, nor a JPEG encoded again; ``rank`` resizes it to the model's input. The answers agree with the
    full path's (tests/unit/test_identify_decode.py: 40 of 40 photos, the demo's model too)."""
    try:
        picture = decode_image(data, settings.download_max_pixels, draft_side=_draft_side(settings, model_side))
    except UndecodableImage as exc:
        if exc.reason.startswith("unknown image format") or exc.reason.startswith("empty"):
            raise HTTPException(415, f"not an image: {exc.reason} (send a JPEG, PNG, WebP, GIF, BMP or TIFF photo)")
        raise HTTPException(422, f"unusable image: {exc.reason}") from None
    return picture


def _candidates(settings: Settings, service: Service, session: Session, ranked: list[tuple[str, float]],
                model: LoadedModel, where: OfferFilter, n_offers: int, fair: FairPrices) -> list[dict[str, Any]]:
    """The ranked models with their offers, their asking prices and the ``n_offers`` nearest offers, each
    appraised against ``fair`` (one set of queries for all of them)."""
    info = service.per_version(model.version_id, "class_fields", lambda: _class_fields(session, model.classes))
    searches = where.search(settings, session, [name for name, _ in ranked], model.version_id, limit=n_offers)
    candidates = []
    for i, (name, probability) in enumerate(ranked, 1):
        search = searches[name]
        nearest = search.offers
        thumbs = thumbnails(nearest)
        candidates.append({
            "rank": i, "name": name, **info.get(name, class_fields(None)),
            "probability": round(float(probability), 6), "offers": _counts(search, where.radius_km),
            "asking_prices": search.asking_prices(settings.price_min_comparables),
            "nearest": [offer_json(o, thumbs, appraise(o, name, fair)) for o in nearest],
        })
    return candidates


def _counts(search: OfferSearch, radius_km: float | None) -> dict[str, Any]:
    return {"count": search.total, "radius_km": radius_km, "unlocated": search.unlocated,
            "outside_radius": search.outside_radius, "anywhere": search.anywhere}


def _class_fields(session: Session, names: list[str]) -> dict[str, dict[str, Any]]:
    """The catalogue fields (``class_fields``) of the classes ``names`` (a model version's)."""
    classes = session.execute(select(CarClass).where(CarClass.name.in_(names))).scalars()
    return {c.name: class_fields(c) for c in classes}
