"""``GET /health``: database and model status, and the settings the web page needs."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from autodetect.serving.deps import ServiceDep, SessionsDep, SettingsDep
from autodetect.storage import Listing, ListingStatus, ModelVersion

log = logging.getLogger(__name__)

router = APIRouter()


@router.get("/health", summary="Database and model status; the page's settings")
def health(settings: SettingsDep, service: ServiceDep, sessions: SessionsDep) -> dict[str, Any]:
    out: dict[str, Any] = {"status": "ok", "database": "ok", "model": None,
                           "max_upload_bytes": settings.api_max_upload_bytes,
                           "default_radius_km": settings.api_default_radius_km,
                           "default_country": settings.api_default_country}
    try:
        with sessions() as session:
            _database_status(session, out)
    except SQLAlchemyError as exc:
        log.error("health: %s", exc)
        return JSONResponse({**out, "status": "unavailable", "database": "unavailable"}, status_code=503)
    provider = service.started_provider
    current = provider.current if provider else None
    out["loaded_model"] = current.name if current else None
    if provider and provider.last_error:
        out["model_error"] = provider.last_error
    if out["model"] is None:
        out["status"] = "no_model"
    return out


def _database_status(session: Session, out: dict[str, Any]) -> None:
    """Put the count of active listings and the active model version (if any) into ``out``."""
    version = session.execute(select(ModelVersion).where(ModelVersion.status == "active")).scalar_one_or_none()
    out["active_listings"] = session.scalar(
        select(func.count()).select_from(Listing).where(Listing.status == ListingStatus.active.value))
    if version is not None:
        out["model"] = {"id": version.id, "name": version.name, "classes": len(version.classes),
                        "image_size": version.image_size}
