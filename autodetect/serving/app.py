"""The HTTP API and the web page: snap a car, see its make and model, the offers nearby and their prices.

``autodetect serve`` runs ``autodetect.serving.app:app`` with uvicorn; OpenAPI at ``/openapi.json`` and ``/docs``.

- ``POST /identify``         multipart ``photo`` (+ lat/lon or postal_code/country, radius_km, currency)
                             -> the three most likely models, each with its offers nearby and prices
- ``GET /models/{id}/offers`` a model's active offers (class id or name), same filters, paginated
- ``GET /listings/{id}``     one listing with its photos and predictions
- ``GET /photos/{image_id}`` a stored photo (the normalized JPEG), for thumbnails
- ``GET /health``            database and model status
- ``GET /metrics``           Prometheus metrics: latency per route, /identify outcomes (``serving/metrics.py``)
- ``GET /``                  the web page (``autodetect/serving/static/``)

Each route lives in ``autodetect.serving.routes`` (one module a resource) and takes what it needs from
``autodetect.serving.deps``; this module only puts the app together.

The serving model is loaded lazily, once per process, by ``autodetect.pipeline.inference.ModelProvider``: every
request looks up the active version (one indexed query) and a newly promoted version is loaded once;
a version that fails to load leaves the last good one serving. Uploads are limited while they are
read (``settings.api_max_upload_bytes``), before anything is parsed or decoded. Every bad input gets
a 4xx answer with a JSON ``detail`` message.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import SQLAlchemyError

from autodetect.serving.body_limit import _LazyBodyLimit
from autodetect.serving.deps import Service
from autodetect.serving.metrics import ApiMetrics, RequestMetrics
from autodetect.serving.routes import health, identify, listings, metrics, models, page, photos
from autodetect.settings import Settings

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The API and the web page. ``settings`` None: the process-wide settings, read on first use."""
    service = Service(settings)
    app = FastAPI(
        title="AutoDetect",
        version="0.1.0",
        description="Snap a car, learn its make and model, see the offers nearby and their prices.",
    )
    app.state.service = service
    app.state.metrics = ApiMetrics(service)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(SQLAlchemyError, _database)
    for routes in (identify, models, listings, photos, health, metrics, page):
        app.include_router(routes.router)
    app.mount("/static", StaticFiles(directory=page.STATIC_DIR), name="static")
    app.add_middleware(_LazyBodyLimit, service=service)
    app.add_middleware(RequestMetrics, metrics=app.state.metrics)  # outermost: it times the whole answer
    return app


async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
    """A 422 whose ``detail`` is one readable line (``field: message; ...``), the errors themselves beside it."""
    errors = exc.errors()
    parts = []
    for e in errors:
        loc = ".".join(str(p) for p in e.get("loc", ()) if p not in ("body", "query", "path", "form"))
        parts.append(f"{loc}: {e.get('msg', 'invalid')}" if loc else str(e.get("msg", "invalid")))
    safe = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
            for e in errors]
    return JSONResponse({"detail": "; ".join(parts) or "invalid request", "errors": safe}, status_code=422)


async def _database(_: Request, exc: SQLAlchemyError) -> JSONResponse:
    log.error("database error: %s", exc)
    return JSONResponse({"detail": "the database is unavailable or not set up (run `autodetect db upgrade`)"},
                        status_code=503)


app = create_app()
