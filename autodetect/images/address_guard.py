"""The address guard against server-side request forgery (SSRF): which URLs are well-formed enough to
fetch, which IP addresses are public, and the allow-list that lets chosen non-public hosts, IPs and
networks through.

A URL (a photo's own or a redirect's target) is refused, as ``PermanentFetchError("malformed URL:
why")`` (``malformed redirect URL: why``), when it is not text, longer than ``MAX_URL_LENGTH``, holds a
control character, does not parse (a bad IPv6 literal, a bad port...) or names a host that no DNS
name can be (an empty or over-long label, a character DNS does not carry); ``bad scheme: S`` when it
is not ``http``/``https``, ``bad url: credentials in url`` when it carries a user or password.

Every address a host resolves to is checked: private, loopback, link-local, multicast, reserved,
unspecified and other non-global addresses (also when embedded in IPv6: IPv4-mapped, 6to4, Teredo,
NAT64) are refused unless the allow-list lets them through.

Allow-list entries (``Settings.download_allow_hosts``), each optionally restricted to one port:

* a host name: ``sandbox``, ``sandbox:8765`` (matches the URL's host name, case-insensitive);
* an IP address: ``127.0.0.1``, ``127.0.0.1:8765``, ``::1``, ``[::1]:8765``;
* a network: ``10.0.0.0/8``, ``10.0.0.0/8:8080``, ``fd00::/8``, ``[fd00::/8]:8080``.

An entry with a port allows only that port, so allowing the sandbox marketplace on loopback does not
open every service listening on loopback.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Iterable
from urllib.parse import SplitResult, urlsplit

from autodetect.images.errors import PermanentFetchError, TransientFetchError

__all__ = [
    "MAX_URL_LENGTH",
    "AllowList",
    "IPAddress",
    "IPNetwork",
    "check_host_name",
    "check_text",
    "check_url",
    "classify_address",
    "malformed",
    "normalize_host",
    "parse_problem",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


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


def normalize_host(host: str) -> str:
    return host.strip().lower().rstrip(".")


# --- malformed URLs ---------------------------------------------------------------------------------

#: Longer URLs are refused: servers answer 414 (nginx's default limit is 8 KiB) and reasons stay short.
MAX_URL_LENGTH = 8192
SCHEMES = ("http", "https")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_LABEL = re.compile(r"[a-z0-9_-]{1,63}")
#: The messages of ``urlsplit`` and of requests' URL parser, in a few words of ours: they quote the
#: URL, which may be long or hold anything, so only their fixed parts are matched, never echoed.
_PARSE_ERRORS = tuple((re.compile(pattern, re.S), why) for pattern, why in (
    (r"Invalid IPv6 URL\Z", "Invalid IPv6 URL"),
    (r".* does not appear to be an IPv4 or IPv6 address\Z", "bad address in brackets"),
    (r"An IPv4 address cannot be in brackets\Z", "bad address in brackets"),
    (r"netloc .* contains invalid characters under NFKC normalization\Z", "invalid characters in the host"),
    (r"Port (could not be cast to integer|out of range)", "bad port"),
    (r"Failed to parse: .* is not a valid host or port\Z", "bad host or port"),
    (r"Failed to parse: Host .* contains invalid character", "invalid character in the host"),
    (r"URL has an invalid label", "bad host name"),
    (r"Invalid URL .*: No host supplied\Z", "no host"),
))


def malformed(what: str, why: str) -> PermanentFetchError:
    """``malformed URL: why`` (``what`` is ``URL`` or ``redirect URL``)."""
    return PermanentFetchError(f"malformed {what}: {why}")


def parse_problem(exc: BaseException) -> str:
    """A few words for why a URL did not parse (never the URL itself: it may be long)."""
    if isinstance(exc, UnicodeError):
        return "bad host name"
    text = str(exc)
    return next((why for pattern, why in _PARSE_ERRORS if pattern.match(text)), "cannot parse")


def check_text(url: object, what: str = "URL") -> str:
    """The URL (absolute or relative) without surrounding white space, if it is text of at most
    ``MAX_URL_LENGTH`` characters without control characters; else ``malformed URL: why``."""
    if not isinstance(url, str):
        raise malformed(what, f"not text but {type(url).__name__}")
    url = url.strip()
    if not url:
        raise malformed(what, "empty")
    if len(url) > MAX_URL_LENGTH:
        raise malformed(what, f"too long ({len(url)} characters, limit {MAX_URL_LENGTH})")
    if _CONTROL.search(url):
        raise malformed(what, "control character")
    return url


def check_url(url: object, what: str = "URL") -> SplitResult:
    """The parts of a URL we may fetch (scheme lower-cased), or PermanentFetchError with the reason:
    ``malformed URL: ...``, ``bad scheme: S``, ``bad url: credentials in url``."""
    try:
        parts = urlsplit(check_text(url, what))
        port = parts.port
    except ValueError as exc:
        raise malformed(what, parse_problem(exc)) from None
    if port == 0:
        raise malformed(what, "bad port")
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise PermanentFetchError(f"bad scheme: {scheme or 'none'}")
    if parts.username is not None or parts.password is not None:
        raise PermanentFetchError("bad url: credentials in url")
    return parts._replace(scheme=scheme)


def check_host_name(host: str, what: str = "URL") -> None:
    """Nothing for an IP address or a name DNS can carry (ASCII, after IDNA; labels of 1 to 63
    letters, digits, ``-`` or ``_``; 253 characters in all); else ``malformed URL: bad host name``."""
    try:
        ipaddress.ip_address(host)
        return
    except ValueError:
        pass
    if not host or len(host) > 253 or not all(_LABEL.fullmatch(label) for label in host.split(".")):
        raise malformed(what, "bad host name")


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
        return _AllowEntry(host=normalize_host(text), port=port)
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
        host = normalize_host(host)
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
