"""The upload limit, enforced while the body arrives (ASGI middleware), and the 413 it answers with."""

from __future__ import annotations

import json

from fastapi import HTTPException

from autodetect.serving.deps import Service

#: Room for the multipart envelope and the small form fields beside the photo.
MULTIPART_ALLOWANCE = 64 * 1024


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
        length = _content_length(scope)
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


def _content_length(scope) -> int | None:
    """The request's Content-Length (the last one given); None when absent or not a number."""
    length = None
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                length = None
    return length


async def _send_json(send, status: int, detail: str, *, close: bool = False) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


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
