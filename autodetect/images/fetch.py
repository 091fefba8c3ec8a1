"""Download one photo safely.

``Fetcher.fetch(url)`` returns the bytes of an image or raises ``PermanentFetchError`` (do not retry:
the photo is gone, is not an image, is too big, or points somewhere we refuse to go) or
``TransientFetchError`` (retry later, after ``retry_after`` seconds if the server said so).

The guard against server-side request forgery (SSRF):

* only ``http`` and ``https``; no credentials in the URL;
* the host is resolved once per hop (``socket.getaddrinfo``) and EVERY address it resolves to is
  checked: private, loopback, link-local, multicast, reserved, unspecified and other non-global
  addresses (also when embedded in IPv6: IPv4-mapped, 6to4, Teredo, NAT64) are refused unless the
  allow-list lets them through;
* the connection goes to one of the checked addresses and nowhere else: the transport adapter builds
  its connection pool for the pinned IP, while the Host header, TLS SNI and certificate check keep the
  host name. Nothing re-resolves the name, so DNS rebinding between check and connect is impossible;
* redirects are followed by hand, each hop checked again, limited in number, loops detected;
* no proxies, no ``.netrc``, no cookies, nothing read from the environment.

Allow-list entries (``Settings.download_allow_hosts``), each optionally restricted to one port:

* a host name: ``sandbox``, ``sandbox:8765`` (matches the URL's host name, case-insensitive);
* an IP address: ``127.0.0.1``, ``127.0.0.1:8765``, ``::1``, ``[::1]:8765``;
* a network: ``10.0.0.0/8``, ``10.0.0.0/8:8080``, ``fd00::/8``, ``[fd00::/8]:8080``.

An entry with a port allows only that port, so allowing the sandbox marketplace on loopback does not
open every service listening on loopback.

Limits: connect and read timeouts per socket operation, and a total deadline for the whole fetch
(redirects included) enforced by a watchdog that shuts the socket down, so a server trickling one byte
a second (headers or body) is cut at the deadline. The body is capped: a ``Content-Length`` above the
cap is refused before reading, and the cap is enforced while streaming. The declared content type must
be ``image/*`` or ``application/octet-stream`` (or absent) and the bytes must start with the signature
of an image format we decode (JPEG, PNG, GIF, WebP, BMP, TIFF, HEIC, AVIF).

One ``Fetcher`` is meant to be shared by all threads of a process: its connection pool is thread-safe
and sized with ``pool_size``.
"""

from __future__ import annotations

import email.utils
import heapq
import ipaddress
import itertools
import os
import random
import socket
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence
from urllib.parse import urljoin, urlsplit, urlunsplit

import requests
from requests.sessions import merge_setting
from requests.structures import CaseInsensitiveDict
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

__all__ = [
    "AllowList",
    "Fetched",
    "FetchError",
    "Fetcher",
    "PermanentFetchError",
    "TransientFetchError",
    "backoff_delay",
    "classify_address",
    "parse_retry_after",
    "sniff_image_type",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Sequence[str]]

_DEFAULT_PORTS = {"http": 80, "https": 443}
_REDIRECT_STATUSES = {301, 302, 303, 307, 308}
_CHUNK = 64 * 1024
_SNIFF_BYTES = 32


# --- errors and result -------------------------------------------------------------------------


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


_EXTENSIONS = {
    "jpeg": "jpg", "png": "png", "gif": "gif", "webp": "webp",
    "bmp": "bmp", "tiff": "tif", "heic": "heic", "avif": "avif",
}
_MIME = {
    "jpeg": "image/jpeg", "png": "image/png", "gif": "image/gif", "webp": "image/webp",
    "bmp": "image/bmp", "tiff": "image/tiff", "heic": "image/heic", "avif": "image/avif",
}


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
        return _EXTENSIONS.get(self.kind, "bin")


# --- image signatures ----------------------------------------------------------------------------

_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"mif1", b"msf1"}
_AVIF_BRANDS = {b"avif", b"avis"}


def sniff_image_type(head: bytes) -> str | None:
    """The image format of bytes from their magic number: ``jpeg``, ``png``, ``gif``, ``webp``,
    ``bmp``, ``tiff``, ``heic``, ``avif``; None when none matches. 32 bytes are enough."""
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:2] == b"BM" and len(head) >= 26:
        return "bmp"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if head[4:8] == b"ftyp":
        box_size = int.from_bytes(head[:4], "big")
        brands = {head[8:12]} | {
            head[i : i + 4] for i in range(16, min(box_size, len(head)) - 3, 4)
        }
        if brands & _AVIF_BRANDS:
            return "avif"
        if brands & _HEIF_BRANDS:
            return "heic"
    return None


def _describe_unknown(head: bytes) -> str:
    text = head.lstrip()[:16].lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")):
        return "not an image: content is HTML"
    if text.startswith(b"<"):
        return "not an image: content is XML/HTML"
    if text.startswith((b"{", b"[")):
        return "not an image: content is JSON"
    return f"not an image: unknown signature {head[:8].hex()}"


# --- the address checker ---------------------------------------------------------------------------

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_SHARED = ipaddress.ip_network("100.64.0.0/10")


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _classify_one(ip: IPAddress) -> str | None:
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if isinstance(ip, ipaddress.IPv4Address) and ip in _SHARED:
        return "shared"
    if ip.is_private:
        return "private"
    if ip.is_reserved:
        return "reserved"
    if not ip.is_global:
        return "non-global"
    return None


def classify_address(ip: str | IPAddress) -> str | None:
    """None for a public (globally routable unicast) address; otherwise why it is refused:
    ``unspecified``, ``loopback``, ``link-local``, ``multicast``, ``shared``, ``private``,
    ``reserved`` or ``non-global``. IPv4 embedded in IPv6 (mapped, 6to4, Teredo, NAT64) counts."""
    if not isinstance(ip, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        ip = ipaddress.ip_address(ip)
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            return "link-local"
        if ip.ipv4_mapped is not None:  # ::ffff:a.b.c.d is the IPv4 address itself
            return _classify_one(ip.ipv4_mapped)
        inner = _embedded_ipv4(ip)
        if inner is not None:
            why = _classify_one(inner)
            if why is not None:
                return why
    return _classify_one(ip)


@dataclass(frozen=True)
class _AllowEntry:
    host: str | None = None
    network: IPNetwork | None = None
    port: int | None = None

    def matches(self, host: str, ip: IPAddress, port: int) -> bool:
        if self.port is not None and self.port != port:
            return False
        if self.host is not None:
            return self.host == host
        assert self.network is not None
        if self.network.version != ip.version:
            if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
                ip = ip.ipv4_mapped
            else:
                return False
        return ip in self.network


def _normalize_host(host: str) -> str:
    return host.strip().lower().rstrip(".")


def _parse_allow_entry(entry: str) -> _AllowEntry:
    text = entry.strip()
    if not text:
        raise ValueError("empty allow-list entry")
    port: int | None = None
    if text.startswith("["):
        inner, sep, rest = text[1:].partition("]")
        if not sep:
            raise ValueError(f"bad allow-list entry {entry!r}: missing ']'")
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"bad allow-list entry {entry!r}")
            port = _parse_port(rest[1:], entry)
        text = inner
    elif text.count(":") == 1:
        text, port_text = text.split(":")
        port = _parse_port(port_text, entry)
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        if "/" in text or not text:
            raise ValueError(f"bad allow-list entry {entry!r}") from None
        return _AllowEntry(host=_normalize_host(text), port=port)
    return _AllowEntry(network=network, port=port)


def _parse_port(text: str, entry: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"bad port in allow-list entry {entry!r}")
    return int(text)


class AllowList:
    """Hosts, IPs and networks (each optionally with a port) let through although not public.

    ``AllowList(["sandbox:8765", "127.0.0.1:8765", "10.0.0.0/8", "[::1]:8765", "fd00::/8"])``.
    Invalid entries raise ValueError at construction, so a typo is found at start-up."""

    def __init__(self, entries: Iterable[str] = ()):
        self.entries = tuple(_parse_allow_entry(e) for e in entries)

    def allows(self, host: str, ip: str | IPAddress, port: int) -> bool:
        if not isinstance(ip, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
            ip = ipaddress.ip_address(ip)
        host = _normalize_host(host)
        return any(e.matches(host, ip, port) for e in self.entries)

    def check(self, host: str, port: int, addresses: Iterable[str]) -> list[str]:
        """The addresses, deduplicated and in order, if every one is public or allowed; otherwise
        ``PermanentFetchError("refused address IP (why)")``. One bad address refuses the host: a
        name that resolves to a public and a private address is an attack, not a fallback."""
        checked: list[str] = []
        for text in addresses:
            ip = ipaddress.ip_address(text)
            if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
                ip = ip.ipv4_mapped  # ::ffff:a.b.c.d is a.b.c.d: check, report and connect as such
            why = classify_address(ip)
            if why is not None and not self.allows(host, ip, port):
                raise PermanentFetchError(f"refused address {ip} ({why})")
            if str(ip) not in checked:
                checked.append(str(ip))
        if not checked:
            raise TransientFetchError(f"dns: no address for {host}")
        return checked


def _system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [info[4][0] for info in infos if info[0] in (socket.AF_INET, socket.AF_INET6)]


# --- the total-deadline watchdog ------------------------------------------------------------------


class _Watch:
    __slots__ = ("deadline", "sock", "conn", "cancelled", "fired")

    def __init__(self, deadline: float, sock: socket.socket, conn: object):
        self.deadline = deadline
        self.sock = sock
        self.conn = conn
        self.cancelled = False
        self.fired = False


class _Watchdog:
    """One daemon thread per process that shuts down sockets whose fetch passed its deadline.
    A shut-down socket makes the blocked ``recv`` return at once, whatever the server trickles."""

    def __init__(self) -> None:
        self._reinit()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._reinit)

    def _reinit(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, _Watch]] = []
        self._by_conn: dict[object, list[_Watch]] = {}
        self._cancelled = 0
        self._seq = itertools.count()
        self._running = False

    def watch(self, deadline: float, sock: socket.socket, conn: object) -> _Watch:
        w = _Watch(deadline, sock, conn)
        with self._cond:
            if not self._running:
                self._running = True
                threading.Thread(target=self._run, name="fetch-watchdog", daemon=True).start()
            heapq.heappush(self._heap, (deadline, next(self._seq), w))
            self._by_conn.setdefault(conn, []).append(w)
            self._cond.notify()
        return w

    def _cancel_locked(self, w: _Watch) -> None:
        if w.cancelled or w.fired:
            return
        w.cancelled = True
        self._cancelled += 1
        same = self._by_conn.get(w.conn)
        if same is not None:
            same.remove(w)
            if not same:
                del self._by_conn[w.conn]
        if self._cancelled > 256 and self._cancelled * 2 > len(self._heap):
            self._heap = [e for e in self._heap if not e[2].cancelled]
            heapq.heapify(self._heap)
            self._cancelled = 0

    def cancel(self, watches: Iterable[_Watch]) -> None:
        with self._cond:
            for w in watches:
                self._cancel_locked(w)

    def cancel_conn(self, conn: object) -> None:
        with self._cond:
            for w in list(self._by_conn.get(conn, ())):
                self._cancel_locked(w)

    def _run(self) -> None:
        with self._cond:
            while True:
                while self._heap and self._heap[0][2].cancelled:
                    heapq.heappop(self._heap)
                    self._cancelled = max(0, self._cancelled - 1)
                if not self._heap:
                    self._cond.wait()
                    continue
                wait = self._heap[0][0] - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                _, _, w = heapq.heappop(self._heap)
                same = self._by_conn.get(w.conn)
                if same is not None and w in same:
                    same.remove(w)
                    if not same:
                        del self._by_conn[w.conn]
                w.fired = True
                try:  # the plain socket's shutdown, also under TLS, leaves the SSL object alone
                    socket.socket.shutdown(w.sock, socket.SHUT_RDWR)
                except (OSError, TypeError):
                    pass


_watchdog = _Watchdog()
_local = threading.local()


class _Deadline:
    """The total deadline of one fetch, and the sockets it is watching."""

    def __init__(self, deadline: float):
        self.deadline = deadline
        self.watches: list[_Watch] = []

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def watch(self, sock: socket.socket, conn: object) -> None:
        self.watches.append(_watchdog.watch(self.deadline, sock, conn))

    @property
    def fired(self) -> bool:
        return any(w.fired for w in self.watches)

    def release(self) -> None:
        _watchdog.cancel(self.watches)


class _DeadlineMixin:
    """Registers the socket with the current fetch's deadline before waiting for the response."""

    def getresponse(self):  # type: ignore[no-untyped-def]
        ctx: _Deadline | None = getattr(_local, "deadline", None)
        sock = getattr(self, "sock", None)
        if ctx is not None and sock is not None:
            ctx.watch(sock, self)
        return super().getresponse()  # type: ignore[misc]


class _HTTPConnection(_DeadlineMixin, HTTPConnection):
    pass


class _HTTPSConnection(_DeadlineMixin, HTTPSConnection):
    pass


class _PoolMixin:
    def _put_conn(self, conn):  # type: ignore[no-untyped-def]
        # The connection goes back to the pool (maybe to another thread): no watch may touch it.
        if conn is not None:
            _watchdog.cancel_conn(conn)
        return super()._put_conn(conn)  # type: ignore[misc]


class _HTTPPool(_PoolMixin, HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(_PoolMixin, HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


# --- the pinning transport adapter ----------------------------------------------------------------


@dataclass(frozen=True)
class _Pin:
    host: str
    ip: str


class PinnedAdapter(HTTPAdapter):
    """Connects to the IP pinned on the request (``request.autodetect_pin``), never to what the host
    name resolves to, while the Host header, SNI and certificate check use the host name. A request
    without a pin is refused (nothing can bypass the address check through this adapter)."""

    def __init__(self, pool_size: int = 32):
        super().__init__(pool_connections=pool_size, pool_maxsize=pool_size, max_retries=0)

    def init_poolmanager(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}

    def get_connection_with_tls_context(self, request, verify, proxies=None, cert=None):  # type: ignore[no-untyped-def]
        pin: _Pin | None = getattr(request, "autodetect_pin", None)
        if pin is None:
            raise requests.exceptions.InvalidURL("refused: request without a checked address")
        host_params, pool_kwargs = self.build_connection_pool_key_attributes(request, verify, cert)
        host_params["host"] = pin.ip
        if host_params["scheme"] == "https" and pin.host != pin.ip:
            pool_kwargs["server_hostname"] = pin.host
            pool_kwargs["assert_hostname"] = pin.host
        return self.poolmanager.connection_from_host(**host_params, pool_kwargs=pool_kwargs)


# --- Retry-After and backoff -------------------------------------------------------------------


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP-date); None if absent or invalid."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    now = time.time() if now is None else now
    return max(0.0, when.timestamp() - now)


def backoff_delay(
    attempt: int,
    retry_after: float | None = None,
    *,
    base: float = 2.0,
    cap: float = 600.0,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait before retry number ``attempt`` (0 for the first retry).

    Exponential with "equal jitter": ``d = min(cap, base * 2**attempt)``, a delay in ``[d/2, d]``.
    A server's Retry-After is honoured (never retry earlier than it asked, plus up to 10% jitter so
    that many photos of one host do not return at once), and everything is capped at ``cap``."""
    rng = rng or random
    exp = min(cap, base * (2 ** max(0, attempt)))
    delay = exp / 2 + rng.uniform(0, exp / 2)
    if retry_after is not None and retry_after > 0:
        delay = max(delay, retry_after * (1 + rng.uniform(0, 0.1)))
    return min(cap, delay)


# --- the fetcher -----------------------------------------------------------------------------------


def _secs(x: float) -> str:
    return f"{x:g}"


def _media_type(header: str | None) -> str:
    return (header or "").split(";", 1)[0].strip().lower()


def _is_connect_failure(exc: requests.exceptions.ConnectionError) -> bool:
    """True when nothing was sent (the TCP connection itself failed): safe to try another address."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(reason, urllib3.exceptions.NewConnectionError)


def _short_connection_error(exc: BaseException) -> str:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, ConnectionRefusedError):
            return "connection refused"
        if isinstance(exc, ConnectionResetError):
            return "connection reset"
        if isinstance(exc, urllib3.exceptions.ProtocolError) and "Remote end closed" in str(exc):
            return "connection closed by server"
        nxt = getattr(exc, "reason", None)
        if isinstance(nxt, BaseException):
            exc = nxt
            continue
        if exc.args and isinstance(exc.args[0], BaseException):
            exc = exc.args[0]
            continue
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return "connection error"


class Fetcher:
    """Downloads photos; one instance shared by all threads of a process.

    ``settings`` supplies the limits (``download_*``); ``session`` the default headers (e.g. a
    User-Agent) and TLS verification (``session.verify``); requests always go through this fetcher's
    own pinning adapter, without proxies, cookies or environment (a session passed in is changed
    accordingly: ``trust_env=False``, a cookie policy that keeps nothing, the adapter mounted).
    ``pool_size`` is the number of keep-alive connections kept per host: make it at least the
    number of threads downloading at once. ``resolver(host, port) -> [ip]`` replaces DNS (tests);
    the default calls ``socket.getaddrinfo`` (note: DNS lookups are not covered by the deadline)."""

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
        TransientFetchError with a short reason."""
        ctx = _Deadline(time.monotonic() + self.total_timeout)
        _local.deadline = ctx
        try:
            return self._fetch(url, ctx)
        finally:
            _local.deadline = None
            ctx.release()

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> "Fetcher":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the steps --

    def _fetch(self, url: str, ctx: _Deadline) -> Fetched:
        seen: set[str] = set()
        current = url
        for _hop in range(self.max_redirects + 1):
            prep, host, port = self._prepare(current)
            if prep.url in seen:
                raise PermanentFetchError(f"redirect loop: {prep.url}")
            seen.add(prep.url)
            addresses = self._resolve(host, port)
            resp = self._send(prep, host, addresses, ctx)
            try:
                if resp.status_code in _REDIRECT_STATUSES:
                    location = resp.headers.get("Location")
                    if not location:
                        raise PermanentFetchError(f"http {resp.status_code} without Location")
                    try:  # http.client decodes headers as latin-1; servers send UTF-8
                        location = location.encode("latin1").decode("utf8")
                    except UnicodeError:
                        pass
                    current = urljoin(prep.url, location.strip())
                    continue
                self._check_status(resp)
                self._check_headers(resp)
                data, kind = self._read_body(resp, ctx)
                return Fetched(data=data, content_type=_MIME[kind], final_url=prep.url, kind=kind)
            finally:
                ctx.release()  # before the connection can go back to the pool
                resp.close()
        raise PermanentFetchError(f"too many redirects (more than {self.max_redirects})")

    def _prepare(self, url: str) -> tuple[requests.PreparedRequest, str, int]:
        try:
            parts = urlsplit(url.strip())
        except ValueError:
            raise PermanentFetchError("bad url") from None
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS:
            raise PermanentFetchError(f"bad scheme: {scheme or 'none'}")
        if parts.username is not None or parts.password is not None:
            raise PermanentFetchError("bad url: credentials in url")
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
        except (requests.exceptions.RequestException, ValueError, UnicodeError):
            raise PermanentFetchError("bad url") from None
        if not host:
            raise PermanentFetchError("bad url: no host")
        host = _normalize_host(host)
        netloc_host = f"[{host}]" if ":" in host else host
        prep.headers["Host"] = netloc_host if final.port in (None, _DEFAULT_PORTS[scheme]) else f"{netloc_host}:{port}"
        prep.headers.pop("Cookie", None)
        prep.headers.pop("Authorization", None)
        return prep, host, port

    def _resolve(self, host: str, port: int) -> list[str]:
        try:
            ipaddress.ip_address(host)
            addresses: Sequence[str] = [host]
        except ValueError:
            try:
                addresses = (self._resolver or _system_resolver)(host, port)
            except socket.gaierror as exc:
                if exc.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", -5)):
                    raise PermanentFetchError(f"dns: unknown host {host}") from None
                raise TransientFetchError(f"dns: cannot resolve {host}") from None
            except (OSError, UnicodeError):
                raise TransientFetchError(f"dns: cannot resolve {host}") from None
        return self.allow.check(host, port, addresses)

    def _send(
        self, prep: requests.PreparedRequest, host: str, addresses: list[str], ctx: _Deadline
    ) -> requests.Response:
        last: FetchError | None = None
        for ip in addresses[:3]:
            remaining = ctx.remaining()
            if remaining <= 0:
                break
            prep.autodetect_pin = _Pin(host=host, ip=ip)  # type: ignore[attr-defined]
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
                raise PermanentFetchError(f"tls error: {_short_ssl_error(exc)}") from None
            except requests.exceptions.ReadTimeout:
                raise self._timeout(ctx, f"read timed out after {_secs(timeout[1])} s") from None
            except requests.exceptions.ConnectionError as exc:
                if ctx.fired or ctx.remaining() <= 0:
                    raise self._timeout(ctx, "") from None
                if not _is_connect_failure(exc):
                    raise TransientFetchError(_short_connection_error(exc)) from None
                last = TransientFetchError(_short_connection_error(exc))
            except requests.exceptions.RequestException as exc:
                raise TransientFetchError(f"request failed: {type(exc).__name__}") from None
        if last is None or ctx.remaining() <= 0:
            raise self._timeout(ctx, "")
        raise last

    def _timeout(self, ctx: _Deadline, fallback: str) -> TransientFetchError:
        if ctx.fired or ctx.remaining() <= 0 or not fallback:
            return TransientFetchError(f"timed out after {_secs(self.total_timeout)} s")
        return TransientFetchError(fallback)

    def _check_status(self, resp: requests.Response) -> None:
        code = resp.status_code
        if 200 <= code < 300:
            return
        if code in (429, 503) or code >= 500 or code == 408:
            retry_after = parse_retry_after(resp.headers.get("Retry-After"))
            raise TransientFetchError(f"http {code}", retry_after=retry_after)
        raise PermanentFetchError(f"http {code}")

    def _check_headers(self, resp: requests.Response) -> None:
        media = _media_type(resp.headers.get("Content-Type"))
        if media and not (media.startswith("image/") or media in ("application/octet-stream", "binary/octet-stream")):
            raise PermanentFetchError(f"not an image: {media}")
        length = resp.headers.get("Content-Length")
        if length is not None and length.strip().isdigit():
            if int(length) > self.max_bytes:
                raise PermanentFetchError(f"too large: {int(length)} bytes (limit {self.max_bytes})")
            if int(length) == 0:
                raise PermanentFetchError("empty response (0 bytes)")

    def _read_body(self, resp: requests.Response, ctx: _Deadline) -> tuple[bytes, str]:
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
            raise TransientFetchError(f"{_short_connection_error(exc)} while reading the body") from None
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
            raise PermanentFetchError(_describe_unknown(head))
        return kind


def _short_ssl_error(exc: BaseException) -> str:
    text = str(exc)
    for needle in ("CERTIFICATE_VERIFY_FAILED", "certificate verify failed", "hostname mismatch",
                   "WRONG_VERSION_NUMBER", "HANDSHAKE_FAILURE"):
        if needle in text:
            return needle.lower().replace("_", " ")
    return "handshake failed"


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
