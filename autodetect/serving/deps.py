"""What the routes depend on: the app's :class:`Service` (settings, the serving model, the image store),
set on ``app.state.service`` by ``create_app``, and typed dependencies that hand out its parts.

- ``ServiceDep``  the service itself: ``service.model(session)`` is the active model (409 when there is none),
                  ``service.fair_prices(session)`` the newest fair-price fit
- ``SettingsDep`` the app's settings
- ``SessionsDep`` a source of read-only sessions: ``with sessions() as session: ...``

``SessionsDep`` hands out sessions to open rather than one open session, so that each route decides how long
it holds a database connection: ``/identify`` reads twice and holds none while the model runs, ``/photos``
lets go before the file is sent, ``/health`` answers a database failure itself.

The dependencies are ``async`` only so that FastAPI calls them in the event loop instead of a worker thread:
none of them waits on anything (the middleware has already resolved the settings)."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Annotated, Any, TypeVar

from fastapi import Depends, HTTPException, Request
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from autodetect.db import read_scope, session_scope
from autodetect.images.store import ImageStore
from autodetect.model.provider import LoadedModel, ModelProvider
from autodetect.pricing.fair_price import FairPrices
from autodetect.pricing.fits import refresh_fair_prices
from autodetect.settings import Settings, get_settings
from autodetect.storage import ModelVersion, PriceModel, VersionStatus

#: The active model version's id.
_ACTIVE_ID = select(ModelVersion.id).where(ModelVersion.status == VersionStatus.active.value)
#: Opens a read-only session (see :func:`autodetect.db.read_scope`).
Sessions = Callable[[], AbstractContextManager[Session]]
T = TypeVar("T")


@dataclass(frozen=True)
class FairPriceFit:
    """A stored fair-price fit (a ``price_models`` row) as the API uses it."""

    id: int
    fitted_at: datetime
    listings: int  # the usable asking prices it was fitted on
    prices: FairPrices

    @staticmethod
    def of(row: PriceModel) -> FairPriceFit:
        return FairPriceFit(row.id, row.fitted_at, row.listings, FairPrices(row.params))

    def as_json(self) -> dict[str, Any]:
        """What an answer says about the fit: when, on how much, and the ratings' cuts in percent from the
        fair price (``exp(cut) - 1``)."""
        return {"id": self.id, "fitted_at": self.fitted_at.replace(tzinfo=UTC).isoformat(), "listings": self.listings,
                "rating_cuts_pct": [round(math.expm1(cut) * 100, 1) for cut in self.prices.thresholds]}


class DecodeBudget:
    """The pixels this process decodes at once, at most ``limit``. An upload reserves what its decode will
    hold (a big JPEG decoded reduced to the model's size holds a hundredth of its full frame), so memory
    stays bounded at a few photos at the pixel limit while ordinary uploads never turn each other away."""

    def __init__(self, limit: int):
        self.limit = limit
        self._used = 0
        self._lock = threading.Lock()

    def try_reserve(self, pixels: int) -> bool:
        with self._lock:
            if self._used + pixels > self.limit:
                return False
            self._used += pixels
            return True

    def release(self, pixels: int) -> None:
        with self._lock:
            self._used -= pixels


class Service:
    """Settings, the model provider and the image store of one app (settings resolved on first use,
    so that ``configure()`` before the first request takes effect)."""

    def __init__(self, settings: Settings | None):
        self._settings = settings
        self._provider: ModelProvider | None = None
        self._store: ImageStore | None = None
        self._decodes: DecodeBudget | None = None
        self._version_id: int | None = None
        self._per_version: dict[str, Any] = {}
        self._per_version_lock = threading.Lock()
        self._fair: FairPriceFit | None = None
        self._fit_lock = threading.Lock()  # the first fit of a catalogue without one

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
    def started_provider(self) -> ModelProvider | None:
        """The model provider if a request has needed it yet, else None (without starting one)."""
        return self._provider

    @property
    def decode_budget(self) -> DecodeBudget:
        """Bounds the pixels decoded at once: ``api_max_concurrent_decodes`` photos at the pixel limit."""
        if self._decodes is None:
            self._decodes = DecodeBudget(self.settings.api_max_concurrent_decodes * self.settings.download_max_pixels)
        return self._decodes

    @property
    def store(self) -> ImageStore:
        if self._store is None:
            self._store = ImageStore(self.settings.data_dir / "images", fsync=False)
        return self._store

    def per_version(self, version_id: int, key: str, build: Callable[[], T]) -> T:
        """``build()``, made once per model version: what a request would otherwise read again for every
        photo (the classes' fields, ...). Everything kept is dropped when another version becomes active."""
        with self._per_version_lock:
            if version_id != self._version_id:
                self._version_id, self._per_version = version_id, {}
            if key not in self._per_version:
                self._per_version[key] = build()
            return self._per_version[key]

    def fair_prices(self, session: Session) -> FairPriceFit:
        """The newest fair-price fit, kept until a newer one is stored: a request costs one lookup of the
        newest ``price_models`` id. Fits are made after crawls (``pricing/fits.py``), never here, except the
        first one of a catalogue that has none yet, made once (in its own write transaction)."""
        newest = session.scalar(select(func.max(PriceModel.id)))
        cached = self._fair
        if cached is not None and cached.id == newest:
            return cached
        if newest is None:
            with self._fit_lock:  # one first fit; a request waiting here gets the first one's
                with session_scope(self.settings) as writer:
                    self._fair = FairPriceFit.of(refresh_fair_prices(writer, self.settings))
                return self._fair
        row = session.scalars(select(PriceModel).order_by(PriceModel.id.desc()).limit(1)).one()
        self._fair = FairPriceFit.of(row)  # a request that read an older one may put it back: the next reloads
        return self._fair

    def model(self, session: Session) -> LoadedModel:
        """The active version's serving model; while the version the provider serves is still the active
        one, that costs one indexed id lookup (the provider reads and compares the whole registry row)."""
        current = self.provider.current
        if current is not None and current.version_id == self.provider.active_id:
            active_id = session.execute(_ACTIVE_ID).scalar_one_or_none()
            if active_id == current.version_id:
                return current
        model = self.provider.get(session)
        if model is None:
            reason = self.provider.last_error or (
                "no active model yet: run `autodetect demo` or `autodetect train --now` first")
            raise HTTPException(409, reason)
        return model


async def get_service(request: Request) -> Service:
    return request.app.state.service


ServiceDep = Annotated[Service, Depends(get_service)]


async def get_settings_dep(service: ServiceDep) -> Settings:
    return service.settings


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]


async def get_sessions(settings: SettingsDep) -> Sessions:
    return partial(read_scope, settings)


SessionsDep = Annotated[Sessions, Depends(get_sessions)]
