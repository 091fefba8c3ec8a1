"""The address guard against server-side request forgery (SSRF): which IP addresses are public,
and the allow-list that lets chosen non-public hosts, IPs and networks through.

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
from dataclasses import dataclass
from typing import Iterable

from autodetect.images.errors import PermanentFetchError, TransientFetchError

__all__ = ["AllowList", "IPAddress", "IPNetwork", "classify_address", "normalize_host"]

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
