"""The errors a photo fetch raises, and the short reasons it gives for transport failures.

``PermanentFetchError``: do not retry (gone, not an image, too large, refused address...).
``TransientFetchError``: retry later, after ``retry_after`` seconds if the server said so."""

from __future__ import annotations

import http.client

import urllib3

__all__ = [
    "FetchError",
    "PermanentFetchError",
    "TransientFetchError",
    "short_connection_error",
    "short_ssl_error",
]


class FetchError(Exception):
    """A fetch failed; ``reason`` is short and meant to be stored as the photo's error."""

    permanent: bool = False

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class PermanentFetchError(FetchError):
    """Retrying will not help: 404/410/other 4xx, not an image, too large, refused address..."""

    permanent = True


class TransientFetchError(FetchError):
    """Retrying later may help: timeouts, connection errors, 5xx, 429. ``retry_after`` in seconds
    when the server sent a Retry-After header, else None."""

    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.retry_after = retry_after


def short_connection_error(exc: BaseException) -> str:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, ConnectionRefusedError):
            return "connection refused"
        if isinstance(exc, ConnectionResetError):
            return "connection reset"
        if isinstance(exc, http.client.RemoteDisconnected) or (
                isinstance(exc, urllib3.exceptions.ProtocolError) and "Remote end closed" in str(exc)):
            return "connection closed by server"
        if isinstance(exc, http.client.HTTPException):  # a bad status line, too many headers...
            return "invalid http response"
        nxt = getattr(exc, "reason", None)
        if isinstance(nxt, BaseException):
            exc = nxt
            continue
        if exc.args and isinstance(exc.args[0], BaseException):
            exc = exc.args[0]
            continue
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return "connection error"


def short_ssl_error(exc: BaseException) -> str:
    text = str(exc)
    for needle in ("CERTIFICATE_VERIFY_FAILED", "certificate verify failed", "hostname mismatch",
                   "WRONG_VERSION_NUMBER", "HANDSHAKE_FAILURE"):
        if needle in text:
            return needle.lower().replace("_", " ")
    return "handshake failed"
