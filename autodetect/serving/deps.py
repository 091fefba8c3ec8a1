"""What the routes depend on: the app's :class:`Service` (settings, the serving model, the image store),
set on ``app.state.service`` by ``create_app``, and typed dependencies that hand out its parts.

- ``ServiceDep``  the service itself: ``service.model(session)`` is the active model (409 when there is none)
- ``SettingsDep`` the app's settings
- ``SessionsDep`` a source of read-only sessions: ``with sessions() as session: ...``

``SessionsDep`` hands out sessions to open rather than one open session, so that each route decides how long
it holds a database connection: ``/identify`` reads twice and holds none while the model runs, ``/photos``
lets go before the file is sent, ``/health`` answers a database failure itself.

The dependencies are ``async`` only so that FastAPI calls them in the event loop instead of a worker thread:
none of them waits on anything (the middleware has already resolved the settings)."""

from __future__ import annotations

import threading

from collections.abc import Callable
from contextlib import AbstractContextManager
from functools import partial
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from sqlalchemy.orm import Session

from autodetect.db import read_scope
from autodetect.images.store import ImageStore
from autodetect.model.provider import LoadedModel, ModelProvider
from autodetect.settings import Settings, get_settings

#: Opens a read-only session (see :func:`autodetect.db.read_scope`).
Sessions = Callable[[], AbstractContextManager[Session]]


class Service:
    """Settings, the model provider and the image store of one app (settings resolved on first use,
    so that ``configure()`` before the first request takes effect)."""

    def __init__(self, settings: Settings | None):
        self._settings = settings
        self._provider: ModelProvider | None = None
        self._store: ImageStore | None = None
        self._decodes: threading.BoundedSemaphore | None = None

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
    def decode_slots(self) -> threading.BoundedSemaphore:
        """Bounds the photos decoded at once (``api_max_concurrent_decodes``)."""
        if self._decodes is None:
            self._decodes = threading.BoundedSemaphore(self.settings.api_max_concurrent_decodes)
        return self._decodes

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


async def get_service(request: Request) -> Service:
    return request.app.state.service


ServiceDep = Annotated[Service, Depends(get_service)]


async def get_settings_dep(service: ServiceDep) -> Settings:
    return service.settings


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]


async def get_sessions(settings: SettingsDep) -> Sessions:
    return partial(read_scope, settings)


SessionsDep = Annotated[Sessions, Depends(get_sessions)]
