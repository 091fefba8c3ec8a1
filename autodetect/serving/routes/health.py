"""``GET /health``: the checks that apply to the API (the database and its schema, the active model
loading in this process, the data directory and its disk; see ``autodetect.checks.domain``), the
counts the page shows, and the settings the web page needs.

``status``: ``ok``; ``no_model`` (no active version yet); ``degraded`` (a check failed that leaves the
API answering, e.g. the active model does not load, the disk is nearly full); ``unavailable`` with
HTTP 503 when the database does not answer or has no schema."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from autodetect.checks import FAIL, run_probes
from autodetect.checks.domain import Loader, api_probes
from autodetect.serving.deps import Service, ServiceDep, SessionsDep, SettingsDep
from autodetect.storage import Listing, ListingStatus, ModelVersion

log = logging.getLogger(__name__)

router = APIRouter()


@router.get("/health", summary="The API's checks, database and model status; the page's settings")
def health(settings: SettingsDep, service: ServiceDep, sessions: SessionsDep) -> dict[str, Any]:
    out: dict[str, Any] = {"status": "ok", "database": "ok", "model": None,
                           "max_upload_bytes": settings.api_max_upload_bytes,
                           "default_radius_km": settings.api_default_radius_km,
                           "default_country": settings.api_default_country}
    checks = run_probes(api_probes(settings, _serving_loader(service)), settings.doctor_check_timeout_s)
    out["checks"] = [c.as_dict() for c in checks]
    failed = {c.name for c in checks if c.status == FAIL}
    unavailable = {**out, "status": "unavailable", "database": "unavailable"}
    if failed & {"database", "schema"}:
        log.error("health: %s", "; ".join(f"{c.name}: {c.found}" for c in checks if c.name in failed))
        return JSONResponse(unavailable, status_code=503)
    try:
        with sessions() as session:
            _database_status(session, out)
    except SQLAlchemyError as exc:
        log.error("health: %s", exc)
        return JSONResponse(unavailable, status_code=503)
    provider = service.started_provider
    current = provider.current if provider else None
    out["loaded_model"] = current.name if current else None
    if provider and provider.last_error:
        out["model_error"] = provider.last_error
    if out["model"] is None:
        out["status"] = "no_model"
    elif failed:
        out["status"] = "degraded"
    return out


def _serving_loader(service: Service) -> Loader:
    """The model check loads through the app's own provider: the model this process serves."""

    def load(session: Session, _version: ModelVersion):
        model = service.provider.get(session)
        if model is None:
            raise RuntimeError(service.provider.last_error or "cannot load the active model")
        return model

    return load


def _database_status(session: Session, out: dict[str, Any]) -> None:
    """Put the count of active listings and the active model version (if any) into ``out``."""
    version = session.execute(select(ModelVersion).where(ModelVersion.status == "active")).scalar_one_or_none()
    out["active_listings"] = session.scalar(
        select(func.count()).select_from(Listing).where(Listing.status == ListingStatus.active.value))
    if version is not None:
        out["model"] = {"id": version.id, "name": version.name, "classes": len(version.classes),
                        "image_size": version.image_size}
