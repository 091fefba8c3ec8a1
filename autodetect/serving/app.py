"""The HTTP API and the web page: snap a car, see its make and model, the offers nearby and their prices.

``autodetect serve`` runs ``autodetect.serving.app:app`` with uvicorn; OpenAPI at ``/openapi.json`` and ``/docs``.

- ``POST /identify``         multipart ``photo`` (+ lat/lon or postal_code/country, radius_km, currency)
                             -> the three most likely models, each with its offers nearby and prices
- ``GET /models/{id}/offers`` a model's active offers (class id or name), same filters, paginated
- ``GET /listings/{id}``     one listing with its photos and predictions
- ``GET /photos/{image_id}`` a stored photo (the normalized JPEG), for thumbnails
- ``GET /health``            database and model status
- ``GET /``                  the web page (``autodetect/serving/static/``)

The serving model is loaded lazily, once per process, by ``autodetect.pipeline.inference.ModelProvider``: every
request looks up the active version (one indexed query) and a newly promoted version is loaded once;
a version that fails to load leaves the last good one serving. Uploads are limited while they are
read (``settings.api_max_upload_bytes``), before anything is parsed or decoded. Every bad input gets
a 4xx answer with a JSON ``detail`` message.
"""

from __future__ import annotations

import logging
import math
import re
import time
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from autodetect.db import read_scope
from autodetect.images.decode import UndecodableImage, decode_image, encode_jpeg, normalize
from autodetect.images.store import ImageStore
from autodetect.pipeline.inference import LoadedModel, ModelProvider
from autodetect.serving.offers import (
    MAX_RADIUS_KM,
    LocationError,
    Offer,
    OfferSearch,
    Origin,
    find_offers,
    make_origin,
    thumbnails,
)
from autodetect.settings import Settings, get_settings
from autodetect.storage import CarClass, Image, Listing, ListingPrediction, ListingStatus, ModelVersion, Prediction

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
#: Room for the multipart envelope and the small form fields beside the photo.
MULTIPART_ALLOWANCE = 64 * 1024
TOP_MODELS = 3


# --- response shapes (for /docs; the handlers build plain dicts) -----------------------------------
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
    location: LocationOut | None
    radius_km: float | None
    candidates: list[CandidateOut]
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


ERRORS = {code: {"model": Error} for code in (404, 409, 413, 415, 422)}


# --- the upload limit, enforced while the body arrives ----------------------------------------------
class BodyTooLarge(HTTPException):
    def __init__(self, limit: int):
        super().__init__(413, f"upload too large: the limit is {_size(limit)} ({limit} bytes)")


def _size(n: int) -> str:
    return f"{n / (1024 * 1024):.0f} MiB" if n >= 1024 * 1024 else f"{n / 1024:.0f} KiB"


class BodyLimit:
    """ASGI middleware: a request whose Content-Length exceeds the limit is refused before a byte of
    its body is read; a body without one (chunked) is counted as it arrives and refused on the first
    chunk past the limit. Nothing past the limit is ever buffered."""

    def __init__(self, app, limit: int, photo_limit: int):
        self.app = app
        self.limit = limit
        self.photo_limit = photo_limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        length = None
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    length = None
        if length is not None and length > self.limit:
            return await _send_json(send, 413, BodyTooLarge(self.photo_limit).detail, close=True)
        received = 0
        started = False

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise BodyTooLarge(self.photo_limit)
            return message

        async def tracking_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge as exc:  # raised outside a route (FastAPI answers it inside one)
            if started:
                raise
            await _send_json(send, 413, exc.detail, close=True)


async def _send_json(send, status: int, detail: str, *, close: bool = False) -> None:
    import json

    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# --- the service behind the routes ------------------------------------------------------------------
class Service:
    """Settings, the model provider and the image store of one app (settings resolved on first use,
    so that ``configure()`` before the first request takes effect)."""

    def __init__(self, settings: Settings | None):
        self._settings = settings
        self._provider: ModelProvider | None = None
        self._store: ImageStore | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = get_settings()
        return self._settings

    @property
    def provider(self) -> ModelProvider:
        if self._provider is None:
            self._provider = ModelProvider(self.settings)
        return self._provider

    @property
    def store(self) -> ImageStore:
        if self._store is None:
            self._store = ImageStore(self.settings.data_dir / "images", fsync=False)
        return self._store

    def model(self, session: Session) -> LoadedModel:
        model = self.provider.get(session)
        if model is None:
            reason = self.provider.last_error or (
                "no active model yet: run `autodetect demo` or `autodetect train --now` first")
            raise HTTPException(409, reason)
        return model


def _round(value: float | None, ndigits: int) -> float | None:
    return None if value is None else round(value, ndigits)


def _offer_json(offer: Offer, thumbs: dict[int, int]) -> dict[str, Any]:
    image_id = thumbs.get(offer.listing_id)
    return {
        "listing_id": offer.listing_id, "title": offer.title, "price": offer.price, "currency": offer.currency,
        "year": offer.year, "mileage": offer.mileage, "city": offer.city, "postal_code": offer.postal_code,
        "country": offer.country, "distance_km": _round(offer.distance_km, 1), "url": offer.url,
        "thumbnail_url": f"/photos/{image_id}" if image_id is not None else None,
        "listing_url": f"/listings/{offer.listing_id}", "match": offer.match,
    }


def _counts(search: OfferSearch, radius_km: float | None) -> dict[str, Any]:
    return {"count": search.total, "radius_km": radius_km, "unlocated": search.unlocated,
            "outside_radius": search.outside_radius, "anywhere": search.anywhere}


def _currency(value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    value = value.strip().upper()
    if not re.fullmatch(r"[A-Z]{3}", value):
        raise HTTPException(422, f"currency must be a three-letter ISO 4217 code, not {value!r}")
    return value


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


def _class_info(session: Session, names: list[str]) -> dict[str, CarClass]:
    if not names:
        return {}
    return {c.name: c for c in session.execute(select(CarClass).where(CarClass.name.in_(names))).scalars()}


def _read_upload(photo: UploadFile, limit: int) -> bytes:
    data = photo.file.read(limit + 1)
    if len(data) > limit:
        raise BodyTooLarge(limit)
    return data


def _decode_for_model(settings: Settings, data: bytes) -> bytes:
    """The upload as the pipeline sees a stored photo: decoded, upright RGB, shrunk to the normalized size,
    re-encoded as JPEG (the model was trained on exactly such files)."""
    try:
        picture = decode_image(data, settings.download_max_pixels, draft_side=settings.normalized_max_side)
    except UndecodableImage as exc:
        if exc.reason.startswith("unknown image format") or exc.reason.startswith("empty"):
            raise HTTPException(415, f"not an image: {exc.reason} (send a JPEG, PNG, WebP, GIF, BMP or TIFF photo)")
        raise HTTPException(422, f"unusable image: {exc.reason}") from None
    return encode_jpeg(normalize(picture, settings.normalized_max_side))


# --- the app ----------------------------------------------------------------------------------------
def create_app(settings: Settings | None = None) -> FastAPI:
    """The API and the web page. ``settings`` None: the process-wide settings, read on first use."""
    service = Service(settings)
    app = FastAPI(
        title="AutoDetect",
        version="0.1.0",
        description="Snap a car, learn its make and model, see the offers nearby and their prices.",
    )
    app.state.service = service

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        parts = []
        for e in errors:
            loc = ".".join(str(p) for p in e.get("loc", ()) if p not in ("body", "query", "path", "form"))
            parts.append(f"{loc}: {e.get('msg', 'invalid')}" if loc else str(e.get("msg", "invalid")))
        safe = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
                for e in errors]
        return JSONResponse({"detail": "; ".join(parts) or "invalid request", "errors": safe}, status_code=422)

    @app.exception_handler(SQLAlchemyError)
    async def _database(_: Request, exc: SQLAlchemyError) -> JSONResponse:
        log.error("database error: %s", exc)
        return JSONResponse({"detail": "the database is unavailable or not set up (run `autodetect db upgrade`)"},
                            status_code=503)

    # ---- identify -------------------------------------------------------------------------------
    @app.post("/identify", response_model=IdentifyOut, responses=ERRORS,
              summary="Identify a car photo; its three most likely models with offers nearby and prices")
    def identify(
        photo: Annotated[UploadFile, File(description="A photo of a car (JPEG, PNG, WebP, HEIC...)")],
        lat: Annotated[float | None, Form(description="Latitude of the person, degrees")] = None,
        lon: Annotated[float | None, Form(description="Longitude of the person, degrees")] = None,
        postal_code: Annotated[str | None, Form(max_length=20, description="Instead of lat/lon")] = None,
        country: Annotated[str | None, Form(max_length=3, description="ISO 3166 alpha-2, with postal_code")] = None,
        radius_km: Annotated[float | None, Form(description="Offers within this distance (default: settings)")] = None,
        currency: Annotated[str | None, Form(description="ISO 4217 code for the price statistics")] = None,
        offers: Annotated[int | None, Form(ge=0, le=50, description="Nearest offers per model")] = None,
    ) -> dict[str, Any]:
        s = service.settings
        t0 = time.perf_counter()
        data = _read_upload(photo, s.api_max_upload_bytes)
        wanted_currency = _currency(currency)
        n_offers = s.api_nearest_offers if offers is None else offers
        with read_scope(s) as session:
            origin = _origin(s, session, lat, lon, postal_code, country)
            radius = _radius(s, radius_km, origin)
            model = service.model(session)
        t1 = time.perf_counter()
        jpeg = _decode_for_model(s, data)
        t2 = time.perf_counter()
        from autodetect.serving.identify import rank

        ranked = rank(model, [jpeg], TOP_MODELS)[0]
        t3 = time.perf_counter()
        candidates = []
        with read_scope(s) as session:
            info = _class_info(session, [name for name, _ in ranked])
            for i, (name, probability) in enumerate(ranked, 1):
                search = find_offers(session, name, version_id=model.version_id, origin=origin, radius_km=radius,
                                     currency=wanted_currency, min_per_year=s.api_min_listings_per_year)
                nearest = search.offers[:n_offers]
                thumbs = thumbnails(session, [o.listing_id for o in nearest])
                cls = info.get(name)
                candidates.append({
                    "rank": i, "name": name, "class_id": cls.id if cls else None,
                    "make": cls.make if cls else None, "model": cls.model if cls else None,
                    "probability": round(float(probability), 6), "offers": _counts(search, radius),
                    "prices": search.stats_dict(), "nearest": [_offer_json(o, thumbs) for o in nearest],
                })
        t4 = time.perf_counter()
        return {
            "model_version": {"id": model.version_id, "name": model.name},
            "location": origin.as_dict() if origin else None,
            "radius_km": radius,
            "candidates": candidates,
            "timing_ms": {"decode": round((t2 - t1) * 1000, 2), "model": round((t3 - t2) * 1000, 2),
                          "offers": round((t4 - t3) * 1000, 2), "total": round((t4 - t0) * 1000, 2)},
        }

    # ---- offers of one model --------------------------------------------------------------------
    @app.get("/models/{model_ref}/offers", response_model=OffersPage, responses=ERRORS,
             summary="Active offers of one car model (class id or name), nearest first, with price statistics")
    def model_offers(
        model_ref: str,
        lat: Annotated[float | None, Query()] = None,
        lon: Annotated[float | None, Query()] = None,
        postal_code: Annotated[str | None, Query(max_length=20)] = None,
        country: Annotated[str | None, Query(max_length=3)] = None,
        radius_km: Annotated[float | None, Query()] = None,
        currency: Annotated[str | None, Query()] = None,
        limit: Annotated[int, Query(ge=1)] = 20,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> dict[str, Any]:
        s = service.settings
        if limit > s.api_max_page_size:
            raise HTTPException(422, f"limit must be at most {s.api_max_page_size}")
        wanted_currency = _currency(currency)
        with read_scope(s) as session:
            origin = _origin(s, session, lat, lon, postal_code, country)
            radius = _radius(s, radius_km, origin)
            version = session.execute(select(ModelVersion).where(ModelVersion.status == "active")).scalar_one_or_none()
            name, cls = _find_model(session, model_ref, version)
            search = find_offers(session, name, version_id=version.id if version else None, origin=origin,
                                 radius_km=radius, currency=wanted_currency, min_per_year=s.api_min_listings_per_year)
            if search.anywhere == 0:
                raise HTTPException(404, f"no active offers for {name!r}")
            page = search.offers[offset: offset + limit]
            thumbs = thumbnails(session, [o.listing_id for o in page])
            return {
                "model": {"name": name, "class_id": cls.id if cls else None, "make": cls.make if cls else None,
                          "model": cls.model if cls else None},
                "location": origin.as_dict() if origin else None, "radius_km": radius,
                "total": search.total, "limit": limit, "offset": offset,
                "offers": [_offer_json(o, thumbs) for o in page], "prices": search.stats_dict(),
                "unlocated": search.unlocated, "outside_radius": search.outside_radius, "anywhere": search.anywhere,
            }

    # ---- one listing ----------------------------------------------------------------------------
    @app.get("/listings/{listing_id}", responses=ERRORS, summary="One listing with its photos and predictions")
    def listing(listing_id: int) -> dict[str, Any]:
        with read_scope(service.settings) as session:
            item = session.get(Listing, listing_id)
            if item is None:
                raise HTTPException(404, f"no listing {listing_id}")
            versions = dict(session.execute(select(ModelVersion.id, ModelVersion.name)).all())
            images = session.execute(select(Image).where(Image.listing_id == listing_id)
                                     .order_by(Image.position)).scalars().all()
            sources = {i.id: i.duplicate_of_id or i.id for i in images}
            per_image: dict[int, list[dict[str, Any]]] = {}
            if sources:
                for p in session.execute(select(Prediction).where(Prediction.image_id.in_(set(sources.values())))
                                         .order_by(Prediction.model_version_id)).scalars():
                    per_image.setdefault(p.image_id, []).append({
                        "model_version": versions.get(p.model_version_id), "model_version_id": p.model_version_id,
                        "top_class": p.top_class, "top_probability": p.top_probability, "topk": p.topk})
            listing_preds = session.execute(select(ListingPrediction).where(ListingPrediction.listing_id == listing_id)
                                            .order_by(ListingPrediction.model_version_id)).scalars().all()
            label = item.car_class
            return {
                "id": item.id, "source": item.source, "external_id": item.external_id, "url": item.url,
                "title": item.title, "status": item.status, "year": item.year, "mileage": item.mileage,
                "condition": item.condition,
                "price": float(item.price) if item.price is not None else None, "currency": item.currency,
                "city": item.city, "postal_code": item.postal_code, "country": item.country,
                "latitude": item.latitude, "longitude": item.longitude,
                "seller": {"make": item.seller_make, "model": item.seller_model},
                "label": {"name": label.name if label else None, "class_id": item.class_id,
                          "method": item.label_method, "confidence": item.label_confidence},
                "first_seen": item.first_seen.isoformat() if item.first_seen else None,
                "last_seen": item.last_seen.isoformat() if item.last_seen else None,
                "photos": [{
                    "image_id": i.id, "position": i.position, "source_url": i.url, "stage": i.stage,
                    "state": i.state, "error": i.error, "width": i.width, "height": i.height,
                    "duplicate_of": i.duplicate_of_id,
                    "thumbnail_url": f"/photos/{i.id}" if (i.normalized_key or i.duplicate_of_id) else None,
                    "predictions": per_image.get(sources[i.id], []),
                } for i in images],
                "predictions": [{
                    "model_version": versions.get(p.model_version_id), "model_version_id": p.model_version_id,
                    "top_class": p.top_class, "top_probability": p.top_probability, "topk": p.topk,
                    "photos": p.photos, "mismatch": p.mismatch} for p in listing_preds],
            }

    # ---- photos ---------------------------------------------------------------------------------
    @app.get("/photos/{image_id}", responses={404: {"model": Error}, 200: {"content": {"image/jpeg": {}}}},
             response_class=FileResponse, summary="A stored photo (normalized JPEG, longest side 512 px)")
    def photo(image_id: int):
        with read_scope(service.settings) as session:
            image = session.get(Image, image_id)
            key = image.normalized_key if image is not None else None
            if image is not None and key is None and image.duplicate_of_id is not None:
                original = session.get(Image, image.duplicate_of_id)
                key = original.normalized_key if original is not None else None
        if key is None:
            raise HTTPException(404, f"no stored photo {image_id}")
        try:
            path = service.store.path(key)
        except ValueError:
            raise HTTPException(404, f"no stored photo {image_id}") from None
        if not path.is_file():
            raise HTTPException(404, f"photo {image_id} is missing from the image store")
        return FileResponse(path, media_type="image/jpeg",
                            headers={"Cache-Control": "public, max-age=86400, immutable"})

    # ---- health ---------------------------------------------------------------------------------
    @app.get("/health", summary="Database and model status; the page's settings")
    def health() -> dict[str, Any]:
        s = service.settings
        out: dict[str, Any] = {"status": "ok", "database": "ok", "model": None,
                               "max_upload_bytes": s.api_max_upload_bytes,
                               "default_radius_km": s.api_default_radius_km,
                               "default_country": s.api_default_country}
        try:
            with read_scope(s) as session:
                version = session.execute(
                    select(ModelVersion).where(ModelVersion.status == "active")).scalar_one_or_none()
                out["active_listings"] = session.scalar(
                    select(func.count()).select_from(Listing).where(Listing.status == ListingStatus.active.value))
                if version is not None:
                    out["model"] = {"id": version.id, "name": version.name, "classes": len(version.classes),
                                    "image_size": version.image_size}
        except SQLAlchemyError as exc:
            log.error("health: %s", exc)
            return JSONResponse({**out, "status": "unavailable", "database": "unavailable"}, status_code=503)
        current = service._provider.current if service._provider else None
        out["loaded_model"] = current.name if current else None
        if service._provider and service._provider.last_error:
            out["model_error"] = service._provider.last_error
        if out["model"] is None:
            out["status"] = "no_model"
        return out

    # ---- the page -------------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html",
                            headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    app.add_middleware(_LazyBodyLimit, service=service)
    return app


def _find_model(session: Session, ref: str, version: ModelVersion | None) -> tuple[str, CarClass | None]:
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


class _LazyBodyLimit:
    """:class:`BodyLimit` with the limit read from the service's settings on each request."""

    def __init__(self, app, service: Service):
        self.app = app
        self.service = service

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        s = self.service.settings
        limiter = BodyLimit(self.app, s.api_max_upload_bytes + MULTIPART_ALLOWANCE, s.api_max_upload_bytes)
        return await limiter(scope, receive, send)


app = create_app()
