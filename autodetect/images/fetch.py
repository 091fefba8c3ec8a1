"""Download one photo safely.

``Fetcher.fetch(url)`` returns the bytes of an image or raises ``PermanentFetchError`` (do not retry:
the photo is gone, is not an image, is too big, or points somewhere we refuse to go) or
``TransientFetchError`` (retry later, after ``retry_after`` seconds if the server said so).

The guard against server-side request forgery (SSRF):

* only ``http`` and ``https``; no credentials in the URL; a malformed URL (the photo's own or a
  redirect's target: a bad IPv6 literal or port, a control character, an over-long URL, a host name
  DNS cannot carry) is a ``PermanentFetchError`` ("malformed redirect URL: Invalid IPv6 URL");
* the host is resolved once per hop (``socket.getaddrinfo``) and EVERY address it resolves to is
  checked: private, loopback, link-local, multicast, reserved, unspecified and other non-global
  addresses (also when embedded in IPv6: IPv4-mapped, 6to4, Teredo, NAT64) are refused unless the
  allow-list lets them through;
* the connection goes to one of the checked addresses and nowhere else: the transport adapter builds
  its connection pool for the pinned IP, while the Host header, TLS SNI and certificate check keep the
  host name. Nothing re-resolves the name, so DNS rebinding between check and connect is impossible;
* redirects are followed by hand, each hop checked again, limited in number, loops detected;
* no proxies, no ``.netrc``, no cookies, nothing read from the environment.

The address checks and the allow-list live in ``address_guard``, the pinning adapter and the
deadline watchdog in ``pinning``, Retry-After and backoff in ``retry_policy``, the image
signatures in ``sniff``.

Limits: connect and read timeouts per socket operation, and a total deadline for the whole fetch
(DNS lookups and redirects included): DNS lookups run on shared lookup threads and are waited for
until the deadline, and a watchdog shuts the socket down at the deadline, so neither a resolver that
never answers nor a server trickling one byte a second (headers or body) holds the calling thread
longer. (The TLS handshake is bounded as a whole by the connect timeout.) The body is capped: a
``Content-Length`` above the cap is refused before reading, and the cap is enforced while streaming.
The declared content type must be ``image/*`` or ``application/octet-stream`` (or absent) and the
bytes must start with the signature of an image format we decode (JPEG, PNG, GIF, WebP, BMP, TIFF,
HEIC, AVIF).

Whatever the remote side sends (status, headers, body, redirects, TLS), ``fetch`` raises nothing but
a ``FetchError``: an error no step foresaw is logged and raised as ``TransientFetchError("unexpected
error: ...")``, so it is retried a bounded number of times like any other.

One ``Fetcher`` is meant to be shared by all threads of a process: its connection pool is thread-safe
and sized with ``pool_size``.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import time
from dataclasses import dataclass
from typing import Sequence
from urllib.parse import urljoin, urlsplit, urlunsplit

import requests
from requests.sessions import merge_setting
from requests.structures import CaseInsensitiveDict
import urllib3

from autodetect.images.address_guard import (
    AllowList, check_host_name, check_text, check_url, malformed, normalize_host, parse_problem,
)
from autodetect.images.errors import (
    FetchError,
    PermanentFetchError,
    TransientFetchError,
    short_connection_error,
    short_ssl_error,
)
from autodetect.images.pinning import (
    Deadline, Pin, PinnedAdapter, Resolver, current_fetch, resolve_within, system_resolver,
)
from autodetect.images.retry_policy import check_status, is_connect_failure
from autodetect.images.sniff import EXTENSIONS, MIME_TYPES, describe_unknown, sniff_image_type

__all__ = ["Fetched", "Fetcher", "Resolver"]

log = logging.getLogger(__name__)

_DEFAULT_PORTS = {"http": 80, "https": 443}
_REDIRECT_STATUSES = {301, 302, 303, 307, 308}
_CHUNK = 64 * 1024
_SNIFF_BYTES = 32


@dataclass(frozen=True)
class Fetched:
    """A downloaded image. ``content_type`` is the MIME type of the format the bytes really are
    (from their signature, not the server's header); ``kind`` the short format name."""

    data: bytes
    content_type: str
    final_url: str
    kind: str = ""

    @property
    def ext(self) -> str:
        """File extension for the store: ``jpg``, ``png``, ``gif``, ``webp``, ``bmp``, ``tif``..."""
        return EXTENSIONS.get(self.kind, "bin")


# --- the fetcher -----------------------------------------------------------------------------------


def _secs(x: float) -> str:
    return f"{x:g}"


def _media_type(header: str | None) -> str:
    return (header or "").split(";", 1)[0].strip().lower()


def _clip(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _redirect_target(base: str, resp: requests.Response) -> str:
    """The absolute URL a redirect points to, or PermanentFetchError."""
    location = resp.headers.get("Location")
    if not location or not location.strip():
        raise PermanentFetchError(f"http {resp.status_code} without Location")
    try:  # http.client decodes headers as latin-1; servers send UTF-8
        location = location.encode("latin1").decode("utf8")
    except UnicodeError:
        pass
    location = check_text(location, "redirect URL")
    try:
        return urljoin(base, location)
    except ValueError as exc:  # "Invalid IPv6 URL"...
        raise malformed("redirect URL", parse_problem(exc)) from None


class Fetcher:
    """Downloads photos; one instance shared by all threads of a process.

    ``settings`` supplies the limits (``download_*``); ``session`` the default headers (e.g. a
    User-Agent) and TLS verification (``session.verify``); requests always go through this fetcher's
    own pinning adapter, without proxies, cookies or environment (a session passed in is changed
    accordingly: ``trust_env=False``, a cookie policy that keeps nothing, the adapter mounted).
    ``pool_size`` is the number of keep-alive connections kept per host: make it at least the
    number of threads downloading at once. ``resolver(host, port) -> [ip]`` replaces DNS (tests);
    the default calls ``socket.getaddrinfo``. Either runs on a shared lookup thread and is waited for
    until the fetch's total deadline (``download_total_timeout_s``)."""

    def __init__(
        self,
        settings,
        session: requests.Session | None = None,
        *,
        pool_size: int = 32,
        resolver: Resolver | None = None,
        user_agent: str = "AutoDetect/0.1 (photo fetcher)",
    ):
        self.connect_timeout = float(settings.download_connect_timeout_s)
        self.read_timeout = float(settings.download_read_timeout_s)
        self.total_timeout = float(settings.download_total_timeout_s)
        self.max_bytes = int(settings.download_max_bytes)
        self.max_redirects = int(settings.download_max_redirects)
        self.allow = AllowList(settings.download_allow_hosts)
        self._resolver = resolver
        self._session = session or requests.Session()
        self._session.trust_env = False
        self._session.cookies.set_policy(_NoCookies())
        self._adapter = PinnedAdapter(pool_size)
        self._session.mount("http://", self._adapter)
        self._session.mount("https://", self._adapter)
        self._headers = {
            "Accept": "image/jpeg,image/png,image/webp,image/*;q=0.8,*/*;q=0.5",
            "Accept-Encoding": "identity",
        }
        if session is None:  # a session passed in keeps its own User-Agent
            self._headers["User-Agent"] = user_agent

    # -- public --

    def fetch(self, url: str) -> Fetched:
        """The image at ``url``, following redirects; raises PermanentFetchError or
        TransientFetchError with a short reason, and nothing else."""
        ctx = Deadline(time.monotonic() + self.total_timeout)
        current_fetch.deadline = ctx
        try:
            return self._fetch(url, ctx)
        except FetchError:
            raise
        except Exception as exc:  # noqa: BLE001 - whatever the remote side provoked that no step foresaw
            log.warning("unexpected error fetching %.200r", url, exc_info=True)
            raise TransientFetchError(f"unexpected error: {type(exc).__name__}: {_clip(str(exc), 100)}") from exc
        finally:
            current_fetch.deadline = None
            ctx.release()

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> "Fetcher":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the steps --

    def _fetch(self, url: str, ctx: Deadline) -> Fetched:
        seen: set[str] = set()
        current, what = url, "URL"
        for _hop in range(self.max_redirects + 1):
            prep, host, port = self._prepare(current, what)
            if prep.url in seen:
                raise PermanentFetchError(f"redirect loop: {_clip(prep.url)}")
            seen.add(prep.url)
            addresses = self._resolve(host, port, ctx)
            resp = self._send(prep, host, addresses, ctx)
            try:
                if resp.status_code in _REDIRECT_STATUSES:
                    current, what = _redirect_target(prep.url, resp), "redirect URL"
                    continue
                check_status(resp)
                self._check_headers(resp)
                data, kind = self._read_body(resp, ctx)
                return Fetched(data=data, content_type=MIME_TYPES[kind], final_url=prep.url, kind=kind)
            finally:
                ctx.release()  # before the connection can go back to the pool
                resp.close()
        raise PermanentFetchError(f"too many redirects (more than {self.max_redirects})")

    def _prepare(self, url: str, what: str) -> tuple[requests.PreparedRequest, str, int]:
        """The request for ``url`` (the photo's ``URL`` or a ``redirect URL``), its host and port."""
        parts = check_url(url, what)
        scheme = parts.scheme
        url = urlunsplit((scheme, parts.netloc, parts.path or "/", parts.query, ""))
        try:
            # Not ``session.prepare_request``: no cookies or netrc ever apply, and merging them costs
            # more CPU than the rest of a loopback download's request.
            prep = requests.PreparedRequest()
            prep.prepare(method="GET", url=url, headers=merge_setting(
                self._headers, self._session.headers, dict_class=CaseInsensitiveDict))
            final = urlsplit(prep.url)
            host = final.hostname
            port = final.port or _DEFAULT_PORTS[scheme]
        except (requests.exceptions.RequestException, ValueError, UnicodeError) as exc:
            raise malformed(what, parse_problem(exc)) from None
        if not host:
            raise malformed(what, "no host")
        host = normalize_host(host)
        check_host_name(host, what)
        check_text(prep.url, what)  # once percent-encoded, still within the length limit
        netloc_host = f"[{host}]" if ":" in host else host
        prep.headers["Host"] = netloc_host if final.port in (None, _DEFAULT_PORTS[scheme]) else f"{netloc_host}:{port}"
        prep.headers.pop("Cookie", None)
        prep.headers.pop("Authorization", None)
        return prep, host, port

    def _resolve(self, host: str, port: int, ctx: Deadline) -> list[str]:
        try:
            ipaddress.ip_address(host)
            addresses: Sequence[str] = [host]
        except ValueError:
            try:
                addresses = resolve_within(self._resolver or system_resolver, host, port, ctx.remaining())
            except socket.gaierror as exc:
                if exc.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", -5)):
                    raise PermanentFetchError(f"dns: unknown host {host}") from None
                raise TransientFetchError(f"dns: cannot resolve {host}") from None
            except UnicodeError:  # the IDNA codec refused the name
                raise PermanentFetchError(f"dns: bad host name {host}") from None
            except OSError:
                raise TransientFetchError(f"dns: cannot resolve {host}") from None
        return self.allow.check(host, port, addresses)

    def _send(
        self, prep: requests.PreparedRequest, host: str, addresses: list[str], ctx: Deadline
    ) -> requests.Response:
        last: FetchError | None = None
        for ip in addresses[:3]:
            remaining = ctx.remaining()
            if remaining <= 0:
                break
            prep.autodetect_pin = Pin(host=host, ip=ip)  # type: ignore[attr-defined]
            timeout = (min(self.connect_timeout, remaining), min(self.read_timeout, remaining))
            try:
                return self._adapter.send(
                    prep, stream=True, timeout=timeout, verify=self._session.verify,
                    cert=self._session.cert, proxies={},
                )
            except requests.exceptions.ConnectTimeout:
                last = TransientFetchError(f"connect timed out after {_secs(timeout[0])} s")
                if ctx.remaining() <= 0:
                    break
            except requests.exceptions.SSLError as exc:
                raise PermanentFetchError(f"tls error: {short_ssl_error(exc)}") from None
            except requests.exceptions.ReadTimeout:
                raise self._timeout(ctx, f"read timed out after {_secs(timeout[1])} s") from None
            except requests.exceptions.ConnectionError as exc:
                if ctx.fired or ctx.remaining() <= 0:
                    raise self._timeout(ctx, "") from None
                if not is_connect_failure(exc):
                    raise TransientFetchError(short_connection_error(exc)) from None
                last = TransientFetchError(short_connection_error(exc))
            except requests.exceptions.InvalidHeader as exc:  # conflicting Content-Length values...
                raise PermanentFetchError(f"invalid http response: {_clip(str(exc), 80)}") from None
            except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError) as exc:
                raise TransientFetchError(f"request failed: {type(exc).__name__}") from None
        if last is None or ctx.remaining() <= 0:
            raise self._timeout(ctx, "")
        raise last

    def _timeout(self, ctx: Deadline, fallback: str) -> TransientFetchError:
        if ctx.fired or ctx.remaining() <= 0 or not fallback:
            return TransientFetchError(f"timed out after {_secs(self.total_timeout)} s")
        return TransientFetchError(fallback)

    def _check_headers(self, resp: requests.Response) -> None:
        media = _media_type(resp.headers.get("Content-Type"))
        if media and not (media.startswith("image/") or media in ("application/octet-stream", "binary/octet-stream")):
            raise PermanentFetchError(f"not an image: {media}")
        length = (resp.headers.get("Content-Length") or "").strip()
        if length.isascii() and length.isdigit():
            if int(length) > self.max_bytes:
                raise PermanentFetchError(f"too large: {int(length)} bytes (limit {self.max_bytes})")
            if int(length) == 0:
                raise PermanentFetchError("empty response (0 bytes)")

    def _read_body(self, resp: requests.Response, ctx: Deadline) -> tuple[bytes, str]:
        raw = resp.raw
        chunks: list[bytes] = []
        total = 0
        kind: str | None = None
        head = b""
        try:
            while True:
                if ctx.remaining() <= 0:
                    raise self._timeout(ctx, "")
                chunk = raw.read1(_CHUNK, decode_content=True)
                if not chunk:
                    break
                total += len(chunk)
                if total > self.max_bytes:
                    raise PermanentFetchError(f"too large: more than {self.max_bytes} bytes")
                chunks.append(chunk)
                if kind is None and len(head) < _SNIFF_BYTES:
                    head += chunk[: _SNIFF_BYTES - len(head)]
                    if len(head) >= _SNIFF_BYTES:
                        kind = self._sniff(head)
        except FetchError:
            raise
        except (urllib3.exceptions.ReadTimeoutError, socket.timeout):
            raise self._timeout(ctx, f"read timed out after {_secs(self.read_timeout)} s") from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            if ctx.fired or ctx.remaining() <= 0:
                raise self._timeout(ctx, "") from None
            if isinstance(exc, urllib3.exceptions.DecodeError):
                raise PermanentFetchError("bad content encoding") from None
            raise TransientFetchError(f"{short_connection_error(exc)} while reading the body") from None
        if ctx.fired:  # the watchdog cut a close-delimited body: what we have is not all of it
            raise self._timeout(ctx, "")
        if total == 0:
            raise PermanentFetchError("empty response (0 bytes)")
        if kind is None:
            kind = self._sniff(head)
        return b"".join(chunks), kind

    @staticmethod
    def _sniff(head: bytes) -> str:
        kind = sniff_image_type(head)
        if kind is None:
            raise PermanentFetchError(describe_unknown(head))
        return kind


class _NoCookies:
    """A cookie policy that accepts and returns nothing (photos need no cookies; none leak)."""

    netscape = True
    rfc2965 = False
    hide_cookie2 = False

    def set_ok(self, cookie, request):  # type: ignore[no-untyped-def]
        return False

    def return_ok(self, cookie, request):  # type: ignore[no-untyped-def]
        return False

    def domain_return_ok(self, domain, request):  # type: ignore[no-untyped-def]
        return False

    def path_return_ok(self, path, request):  # type: ignore[no-untyped-def]
        return False
