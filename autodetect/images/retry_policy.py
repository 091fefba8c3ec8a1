"""The retry policy of photo downloads: which failures are transient, how long a server asks us to
wait (Retry-After), and the exponential backoff with jitter before the next try."""

from __future__ import annotations

import email.utils
import time

import requests
import urllib3

from autodetect.images.errors import PermanentFetchError, TransientFetchError

__all__ = ["check_status", "is_connect_failure", "parse_retry_after"]


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP-date); None if absent or invalid."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # not "²", which isdigit() too
        return min(float(value), 1e9)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None:
        return None
    now = time.time() if now is None else now
    try:
        return max(0.0, when.timestamp() - now)
    except (OverflowError, OSError, ValueError):  # a date the platform's clock cannot place
        return None


def check_status(resp: requests.Response) -> None:
    """Nothing for a 2xx; TransientFetchError for 408, 429 and 5xx (with the server's Retry-After),
    PermanentFetchError for any other status."""
    code = resp.status_code
    if 200 <= code < 300:
        return
    if code in (429, 503) or code >= 500 or code == 408:
        retry_after = parse_retry_after(resp.headers.get("Retry-After"))
        raise TransientFetchError(f"http {code}", retry_after=retry_after)
    raise PermanentFetchError(f"http {code}")


def is_connect_failure(exc: requests.exceptions.ConnectionError) -> bool:
    """True when nothing was sent (the TCP connection itself failed): safe to try another address."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(reason, urllib3.exceptions.NewConnectionError)
