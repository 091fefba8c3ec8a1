"""Fetcher against a real threaded HTTP server on 127.0.0.1, with real image bytes.

Every socket connect in this module is checked to be on loopback (the ``loopback_only`` fixture):
the SSRF tests must refuse before connecting, and they do.
"""

from __future__ import annotations

import gzip
import io
import ipaddress
import shutil
import socket
import ssl
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

import numpy as np
import pytest
import requests
from PIL import Image

from autodetect.images.decode import decode_image, normalize, perceptual_hash
from autodetect.images.address_guard import AllowList, classify_address
from autodetect.images.errors import FetchError, PermanentFetchError, TransientFetchError
from autodetect.images.fetch import Fetched, Fetcher
from autodetect.images.pinning import DNS_THREADS
from autodetect.images.retry_policy import parse_retry_after
from autodetect.images.sniff import sniff_image_type
from autodetect.settings import Settings

pytestmark = pytest.mark.timeout(30)

MAX_BYTES = 1 << 20  # 1 MiB in the tests, so the byte cap is reached fast


# --- image bytes -----------------------------------------------------------------------------------


def _photo(size=(384, 288), seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)
    return Image.fromarray(arr).resize(size, Image.Resampling.BILINEAR)


def _save(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


JPEG = _save(_photo(), "JPEG", quality=85)
PNG = _save(_photo((64, 48)), "PNG")


def _cmyk() -> bytes:
    return _save(Image.new("RGB", (64, 48), (220, 20, 20)).convert("CMYK"), "JPEG")


def _png16() -> bytes:
    ramp = np.tile(np.linspace(0, 65535, 64, dtype=np.uint16), (48, 1))
    return _save(Image.fromarray(ramp), "PNG")


def _palette_transparent() -> bytes:
    img = Image.new("P", (64, 48), 0)
    img.putpalette([0, 0, 0, 200, 30, 30] + [0] * 762)
    img.paste(1, (0, 0, 32, 48))
    return _save(img, "PNG", transparency=0)


def _animated(fmt: str) -> bytes:
    frames = [Image.new("RGB", (64, 48), c) for c in ((230, 10, 10), (10, 230, 10), (10, 10, 230))]
    return _save(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)


def _exif6() -> bytes:
    img = Image.new("RGB", (80, 40), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 40, 40))  # stored: left half red, right half blue
    exif = Image.Exif()
    exif[0x0112] = 6
    return _save(img, "JPEG", exif=exif)


PHOTOS = {
    "cmyk.jpg": _cmyk(),
    "gray16.png": _png16(),
    "palette.png": _palette_transparent(),
    "anim.gif": _animated("GIF"),
    "anim.webp": _animated("WEBP"),
    "exif6.jpg": _exif6(),
}


# --- the server --------------------------------------------------------------------------------

Route = Callable[[BaseHTTPRequestHandler], None]


def send(h, status=200, body=b"", ctype="image/jpeg", headers=None, length=True):
    h.send_response(status)
    if ctype:
        h.send_header("Content-Type", ctype)
    for k, v in (headers or {}).items():
        h.send_header(k, v)
    if length:
        h.send_header("Content-Length", str(len(body)))
    else:
        h.send_header("Connection", "close")
        h.close_connection = True
    h.end_headers()
    h.wfile.write(body)


def _endless_chunked(h):
    h.send_response(200)
    h.send_header("Content-Type", "image/jpeg")
    h.send_header("Transfer-Encoding", "chunked")
    h.end_headers()
    block = b"\x00" * 65536
    h.wfile.write(b"%x\r\n%s\r\n" % (len(JPEG[:64]), JPEG[:64]))
    try:
        for _ in range(10_000):
            h.wfile.write(b"%x\r\n%s\r\n" % (len(block), block))
    except OSError:
        pass
    h.close_connection = True


def _huge_length(h):
    h.send_response(200)
    h.send_header("Content-Type", "image/jpeg")
    h.send_header("Content-Length", str(1 << 30))
    h.end_headers()
    try:
        h.wfile.write(JPEG[:100])
        h.server.stop.wait(5)
    except OSError:
        pass
    h.close_connection = True


def _one_byte_a_second(h):
    h.send_response(200)
    h.send_header("Content-Type", "image/jpeg")
    h.send_header("Content-Length", "100")
    h.end_headers()
    try:
        for i in range(100):
            h.wfile.write(JPEG[i : i + 1])
            if h.server.stop.wait(1.0):
                break
    except OSError:
        pass
    h.close_connection = True


def _slow_headers(h):
    head = b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: 10\r\n\r\n"
    try:
        for i in range(len(head)):
            h.wfile.write(head[i : i + 1])
            if h.server.stop.wait(0.3):
                break
    except OSError:
        pass
    h.close_connection = True


def _redirect(to: str, status: int = 302) -> Route:
    return lambda h: send(h, status, b"", None, {"Location": to.format(port=h.server.server_port)})


def _raw(response: bytes) -> Route:
    """Answers with these bytes as they are (status line, headers, body: whatever a server may send)."""
    def route(h):
        h.wfile.write(response)
        h.wfile.flush()
        h.close_connection = True
    return route


def _raw_redirect(location: bytes) -> Route:
    return _raw(b"HTTP/1.1 302 Found\r\nLocation: " + location + b"\r\nContent-Length: 0\r\n\r\n")


def _gzip_bomb() -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=6) as gz:
        gz.write(JPEG[:64])
        zeros = b"\x00" * (1 << 20)
        for _ in range(20):
            gz.write(zeros)
    return buf.getvalue()


def _routes() -> dict[str, Route]:
    bomb = _gzip_bomb()
    routes: dict[str, Route] = {
        "/ok.jpg": lambda h: send(h, 200, JPEG),
        "/ok.png": lambda h: send(h, 200, PNG, "image/png; charset=binary"),
        "/octet": lambda h: send(h, 200, JPEG, "application/octet-stream"),
        "/no-type": lambda h: send(h, 200, JPEG, None),
        "/close-delimited": lambda h: send(h, 200, JPEG, length=False),
        "/empty": lambda h: send(h, 200, b""),
        "/empty-close": lambda h: send(h, 200, b"", length=False),
        "/html-as-jpeg": lambda h: send(h, 200, b"<!DOCTYPE html><html><body>Sorry</body></html>"),
        "/html": lambda h: send(h, 200, b"<html></html>", "text/html; charset=utf-8"),
        "/huge": _huge_length,
        "/endless": _endless_chunked,
        "/slow": _one_byte_a_second,
        "/slow-headers": _slow_headers,
        "/gzip-bomb": lambda h: send(h, 200, bomb, "image/jpeg", {"Content-Encoding": "gzip"}),
        "/loop/a": _redirect("/loop/b"),
        "/loop/b": _redirect("http://127.0.0.1:{port}/loop/a", 301),
        "/hop/1": _redirect("/hop/2"),
        "/hop/2": _redirect("/hop/3", 307),
        "/hop/3": _redirect("/hop/4", 308),
        "/hop/4": _redirect("/hop/5"),
        "/hop/5": _redirect("/ok.jpg"),
        "/to-ok": _redirect("ok.jpg", 303),
        "/to-metadata": _redirect("http://169.254.169.254/latest/meta-data/"),
        "/to-private": _redirect("http://10.0.0.1/x.jpg"),
        "/to-file": _redirect("file:///etc/passwd"),
        "/no-location": lambda h: send(h, 302, b"", None),
        "/s/404": lambda h: send(h, 404, b"not found", "text/plain"),
        "/s/410": lambda h: send(h, 410, b"gone", "text/plain"),
        "/s/403": lambda h: send(h, 403, b"", "text/plain"),
        "/s/500": lambda h: send(h, 500, b"", "text/plain"),
        "/s/503": lambda h: send(h, 503, b"", "text/plain", {"Retry-After": "7"}),
        "/s/429": lambda h: send(h, 429, b"", "text/plain", {"Retry-After": "3"}),
        "/s/429-date": lambda h: send(h, 429, b"", "text/plain",
                                      {"Retry-After": "Fri, 31 Dec 2100 23:59:59 GMT"}),
    }
    for name, data in PHOTOS.items():
        routes[f"/photo/{name}"] = (lambda d: lambda h: send(h, 200, d, "image/whatever"))(data)
    return routes


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # no 40 ms Nagle/delayed-ACK stall between headers and body

    def log_message(self, *args):  # quiet
        pass

    def do_GET(self):
        self.server.hosts.append(self.headers.get("Host"))
        route = self.server.routes.get(self.path.split("?")[0])
        if route is None:
            send(self, 404, b"no route", "text/plain")
        else:
            route(self)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def _start(handler=Handler, wrap: ssl.SSLContext | None = None) -> Server:
    server = Server(("127.0.0.1", 0), handler)
    if wrap is not None:
        server.socket = wrap.wrap_socket(server.socket, server_side=True)
    server.routes = _routes()
    server.hosts = []
    server.stop = threading.Event()
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def server():
    s = _start()
    yield s
    s.stop.set()
    s.shutdown()
    s.server_close()


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    """Fail the test if anything connects to a non-loopback address."""
    real = socket.socket.connect

    def guarded(self, address):
        if isinstance(address, tuple):
            ip = ipaddress.ip_address(address[0].split("%")[0])
            if not ip.is_loopback:
                raise AssertionError(f"test tried to connect to {address}")
        return real(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)


def settings(port: int, **kw) -> Settings:
    values = dict(
        download_connect_timeout_s=2.0,
        download_read_timeout_s=5.0,
        download_total_timeout_s=10.0,
        download_max_bytes=MAX_BYTES,
        download_max_pixels=40_000_000,
        download_max_redirects=3,
        download_retries=3,
        download_allow_hosts=[f"127.0.0.1:{port}"],
    )
    values.update(kw)
    return Settings(**values)


@pytest.fixture(scope="module")
def fetcher(server):
    f = Fetcher(settings(server.server_port))
    yield f
    f.close()


def url(server, path: str) -> str:
    return f"http://127.0.0.1:{server.server_port}{path}"


def permanent(fetcher, target) -> str:
    with pytest.raises(PermanentFetchError) as err:
        fetcher.fetch(target)
    return err.value.reason


def transient(fetcher, target) -> TransientFetchError:
    with pytest.raises(TransientFetchError) as err:
        fetcher.fetch(target)
    return err.value


def timed_transient(fetcher, target) -> tuple[TransientFetchError, float]:
    """The TransientFetchError of fetching ``target``, and the seconds it took to come."""
    t0 = time.monotonic()
    err = transient(fetcher, target)
    return err, time.monotonic() - t0


# --- the happy paths ---------------------------------------------------------------------------


def test_fetch_jpeg(server, fetcher):
    got = fetcher.fetch(url(server, "/ok.jpg"))
    assert isinstance(got, Fetched)
    assert got.data == JPEG
    assert (got.content_type, got.kind, got.ext) == ("image/jpeg", "jpeg", "jpg")
    assert got.final_url == url(server, "/ok.jpg")
    assert server.hosts[-1] == f"127.0.0.1:{server.server_port}"


@pytest.mark.parametrize("path", ["/ok.png", "/octet", "/no-type", "/close-delimited"])
def test_content_types_accepted(server, fetcher, path):
    got = fetcher.fetch(url(server, path))
    assert got.data in (JPEG, PNG)
    assert got.content_type == ("image/png" if got.data == PNG else "image/jpeg")


def test_redirects_followed_relative_and_absolute(server, fetcher):
    got = fetcher.fetch(url(server, "/to-ok"))
    assert got.final_url == url(server, "/ok.jpg")
    got = fetcher.fetch(url(server, "/hop/3"))  # 3 -> 4 -> 5 -> ok: exactly the limit of 3
    assert got.data == JPEG


@pytest.mark.parametrize("name", sorted(PHOTOS))
def test_photo_kinds_fetched_decoded_normalized(server, fetcher, name):
    got = fetcher.fetch(url(server, f"/photo/{name}"))
    img = normalize(decode_image(got.data, 40_000_000), 32)
    assert img.mode == "RGB"
    assert max(img.size) == 32
    assert isinstance(perceptual_hash(img), int)
    if name == "exif6.jpg":  # stored 80x40 left red/right blue; upright 40x80 top red/bottom blue
        assert img.size == (16, 32)
        r, g, b = img.getpixel((8, 4))
        assert r > 200 and b < 60
        r, g, b = img.getpixel((8, 28))
        assert b > 200 and r < 60


def test_shared_fetcher_many_threads(server, fetcher):
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda i: fetcher.fetch(url(server, "/ok.jpg")), range(64)))
    assert all(r.data == JPEG for r in results)


# --- what is not an image ----------------------------------------------------------------------


def test_zero_bytes(server, fetcher):
    assert permanent(fetcher, url(server, "/empty")) == "empty response (0 bytes)"
    assert permanent(fetcher, url(server, "/empty-close")) == "empty response (0 bytes)"


def test_html_served_as_jpeg(server, fetcher):
    assert permanent(fetcher, url(server, "/html-as-jpeg")) == "not an image: content is HTML"


def test_html_content_type(server, fetcher):
    assert permanent(fetcher, url(server, "/html")) == "not an image: text/html"


# --- size and time limits -----------------------------------------------------------------------


def test_content_length_1gb_refused_before_reading(server, fetcher):
    t0 = time.monotonic()
    reason = permanent(fetcher, url(server, "/huge"))
    assert reason == f"too large: {1 << 30} bytes (limit {MAX_BYTES})"
    assert time.monotonic() - t0 < 1.0  # the server holds the body open for 5 s


def test_endless_chunked_body_cut_at_cap(server, fetcher):
    assert permanent(fetcher, url(server, "/endless")) == f"too large: more than {MAX_BYTES} bytes"


def test_gzip_bomb_cut_at_cap(server, fetcher):
    assert permanent(fetcher, url(server, "/gzip-bomb")) == f"too large: more than {MAX_BYTES} bytes"


@pytest.mark.parametrize("path", ["/slow", "/slow-headers"])
def test_trickling_server_cut_at_total_deadline(server, path):
    f = Fetcher(settings(server.server_port, download_total_timeout_s=1.5))
    err, elapsed = timed_transient(f, url(server, path))
    assert err.reason == "timed out after 1.5 s"
    assert 1.4 <= elapsed < 2.5
    f.close()


def test_connection_refused_is_transient(server):
    with socket.socket() as s:  # a free port with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    f = Fetcher(settings(port))
    assert transient(f, f"http://127.0.0.1:{port}/x.jpg").reason == "connection refused"


# --- status codes ---------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [404, 410, 403])
def test_client_errors_are_permanent(server, fetcher, code):
    assert permanent(fetcher, url(server, f"/s/{code}")) == f"http {code}"


@pytest.mark.parametrize("path,retry_after", [("/s/500", None), ("/s/503", 7.0), ("/s/429", 3.0)])
def test_server_errors_and_429_are_transient(server, fetcher, path, retry_after):
    err = transient(fetcher, url(server, path))
    assert err.reason == f"http {path.rsplit('/', 1)[1]}"
    assert err.retry_after == retry_after


def test_retry_after_http_date(server, fetcher):
    err = transient(fetcher, url(server, "/s/429-date"))
    assert err.retry_after is not None and err.retry_after > 365 * 86400


# --- redirects and the SSRF guard ------------------------------------------------------------------


def test_redirect_loop(server, fetcher):
    assert permanent(fetcher, url(server, "/loop/a")) == f"redirect loop: {url(server, '/loop/a')}"


def test_too_many_redirects(server, fetcher):
    assert permanent(fetcher, url(server, "/hop/1")) == "too many redirects (more than 3)"


def test_redirect_without_location(server, fetcher):
    assert permanent(fetcher, url(server, "/no-location")) == "http 302 without Location"


@pytest.fixture
def silent_listener():
    """A loopback port that listens but must never see a connection."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    s.setblocking(False)
    yield s
    try:
        conn, _ = s.accept()
    except BlockingIOError:
        pass
    else:
        conn.close()
        raise AssertionError("the refused address was connected to")
    finally:
        s.close()


def test_redirect_to_other_loopback_port_refused(server, fetcher, silent_listener):
    port = silent_listener.getsockname()[1]
    server.routes["/to-loopback"] = _redirect(f"http://127.0.0.1:{port}/admin")
    assert permanent(fetcher, url(server, "/to-loopback")) == "refused address 127.0.0.1 (loopback)"
    server.routes["/to-localhost"] = _redirect(f"http://localhost:{port}/admin")
    reason = permanent(fetcher, url(server, "/to-localhost"))
    assert reason.startswith("refused address ") and reason.endswith("(loopback)")


def test_redirect_to_metadata_and_private_refused(server, fetcher):
    assert permanent(fetcher, url(server, "/to-metadata")) == "refused address 169.254.169.254 (link-local)"
    assert permanent(fetcher, url(server, "/to-private")) == "refused address 10.0.0.1 (private)"


@pytest.mark.parametrize(
    "target,reason",
    [
        ("file:///etc/passwd", "bad scheme: file"),
        ("ftp://127.0.0.1/x.jpg", "bad scheme: ftp"),
        ("gopher://127.0.0.1/", "bad scheme: gopher"),
        ("//127.0.0.1/x.jpg", "bad scheme: none"),
        ("http://user:pw@127.0.0.1/x.jpg", "bad url: credentials in url"),
        ("http://169.254.169.254/latest/meta-data/", "refused address 169.254.169.254 (link-local)"),
        ("http://[::ffff:169.254.169.254]/", "refused address 169.254.169.254 (link-local)"),
        ("http://[::1]:8080/", "refused address ::1 (loopback)"),
        ("http://0.0.0.0/", "refused address 0.0.0.0 (unspecified)"),
        ("http://192.168.1.1/", "refused address 192.168.1.1 (private)"),
        ("http://2130706433/", "refused address 127.0.0.1 (loopback)"),  # decimal 127.0.0.1
    ],
)
def test_refused_before_connecting(fetcher, target, reason):
    assert permanent(fetcher, target) == reason


def test_redirect_to_file_refused(server, fetcher):
    assert permanent(fetcher, url(server, "/to-file")) == "bad scheme: file"


def test_allow_list_entry_port_is_respected(server, silent_listener):
    port = silent_listener.getsockname()[1]
    f = Fetcher(settings(server.server_port))  # allows 127.0.0.1:{server port} only
    assert permanent(f, f"http://127.0.0.1:{port}/x.jpg") == "refused address 127.0.0.1 (loopback)"
    g = Fetcher(settings(server.server_port, download_allow_hosts=["127.0.0.0/8"]))
    assert g.fetch(url(server, "/ok.jpg")).data == JPEG
    h = Fetcher(settings(server.server_port, download_allow_hosts=[f"LocalHost:{server.server_port}"]))
    # localhost may resolve to ::1 first; the server listens on 127.0.0.1 only: the next
    # checked address is tried.
    assert h.fetch(f"http://localhost:{server.server_port}/ok.jpg").data == JPEG


def test_dns_rebinding_connects_only_to_the_checked_address(server, monkeypatch):
    """The name is resolved once, checked, and the connection made to that IP: a second lookup
    (which would give the attacker's answer) never happens."""
    real = socket.getaddrinfo
    calls = []

    def rebinding(host, *args, **kwargs):
        if host == "images.rebind.test":
            calls.append(host)
            if len(calls) > 1:
                raise AssertionError("resolved twice: the connection did not use the pinned IP")
            return real("127.0.0.1", *args, **kwargs)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    f = Fetcher(settings(server.server_port))
    got = f.fetch(f"http://images.rebind.test:{server.server_port}/ok.jpg")
    assert got.data == JPEG
    assert calls == ["images.rebind.test"]
    assert server.hosts[-1] == f"images.rebind.test:{server.server_port}"  # Host header kept


def test_every_resolved_address_is_checked(server):
    # A public answer next to a private one is refused as a whole (never "try the public one").
    # (Nothing here is connected to: the loopback_only fixture would fail the test.)
    answers = {"mixed.test": ["93.184.216.34", "10.0.0.7"], "meta.test": ["169.254.169.254"],
               "loop.test": ["93.184.216.34", "127.0.0.1"]}
    f = Fetcher(settings(server.server_port), resolver=lambda host, port: answers[host])
    assert permanent(f, "http://mixed.test/ok.jpg") == "refused address 10.0.0.7 (private)"
    assert permanent(f, "http://loop.test:8080/ok.jpg") == "refused address 127.0.0.1 (loopback)"
    assert permanent(f, "http://meta.test/") == "refused address 169.254.169.254 (link-local)"


def test_unknown_host_refused_without_network(server):
    def nxdomain(host, port):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    f = Fetcher(settings(server.server_port), resolver=nxdomain)
    assert permanent(f, "http://nowhere.test/x.jpg") == "dns: unknown host nowhere.test"


# --- the address checker ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "ip,why",
    [
        ("93.184.216.34", None),
        ("2606:4700:4700::1111", None),
        ("::ffff:8.8.8.8", None),
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("::1", "loopback"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.0.1", "private"),
        ("fd00::1", "private"),
        ("100.64.0.1", "shared"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped
        ("::ffff:169.254.169.254", "link-local"),
        ("64:ff9b::a9fe:a9fe", "link-local"),  # NAT64 of 169.254.169.254
        ("2002:a00:1::1", "private"),  # 6to4 of 10.0.0.1
        ("240.0.0.1", "private"),
    ],
)
def test_classify_address(ip, why):
    assert classify_address(ip) == why


def test_allow_list_cidr_host_and_port():
    allow = AllowList(["10.0.0.0/8", "sandbox:8765", "127.0.0.1:8765", "[::1]:9000", "fd00::/8", "[fc00::/8]:80"])
    assert allow.allows("anything", "10.200.3.4", 1)
    assert allow.allows("anything", "::ffff:10.200.3.4", 1)
    assert not allow.allows("anything", "11.0.0.1", 1)
    assert allow.allows("SandBox.", "192.168.5.5", 8765)
    assert not allow.allows("sandbox", "192.168.5.5", 8766)
    assert allow.allows("x", "127.0.0.1", 8765)
    assert not allow.allows("x", "127.0.0.1", 6379)  # redis on loopback stays refused
    assert not allow.allows("x", "127.0.0.2", 8765)
    assert allow.allows("x", "::1", 9000) and not allow.allows("x", "::1", 9001)
    assert allow.allows("x", "fd12::5", 443)
    assert allow.allows("x", "fc00::5", 80) and not allow.allows("x", "fc00::5", 81)


def test_allow_list_check_all_addresses():
    allow = AllowList(["127.0.0.1:8765"])
    assert allow.check("h", 8765, ["127.0.0.1", "93.184.216.34", "127.0.0.1"]) == ["127.0.0.1", "93.184.216.34"]
    with pytest.raises(PermanentFetchError, match=r"refused address 10\.0\.0\.1 \(private\)"):
        allow.check("h", 8765, ["127.0.0.1", "10.0.0.1"])
    with pytest.raises(PermanentFetchError, match="loopback"):
        allow.check("h", 8766, ["127.0.0.1"])


@pytest.mark.parametrize("entry", ["10.0.0.0/33", "host:0", "host:99999", "host:x", "[::1", "[::1]x", "", "a/b"])
def test_allow_list_rejects_bad_entries(entry):
    with pytest.raises(ValueError):
        AllowList([entry])


def test_unpinned_request_is_refused_by_the_adapter(fetcher):
    req = requests.Request("GET", "http://127.0.0.1:9/").prepare()
    with pytest.raises(requests.exceptions.InvalidURL):
        fetcher._adapter.send(req, timeout=1)


# --- HTTPS through the pinned IP (SNI and certificate check keep the host name) --------------------


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("openssl not available")
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "2", "-subj", "/CN=images.test", "-addext", "subjectAltName=DNS:images.test",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    s = _start(wrap=ctx)
    yield s, str(cert)
    s.stop.set()
    s.shutdown()
    s.server_close()


def test_https_with_pinned_ip_verifies_the_host_name(tls_server):
    s, ca = tls_server
    port = s.server_port
    session = requests.Session()
    session.verify = ca
    f = Fetcher(settings(port), session=session, resolver=lambda host, p: ["127.0.0.1"])
    assert f.fetch(f"https://images.test:{port}/ok.jpg").data == JPEG
    assert s.hosts[-1] == f"images.test:{port}"
    reason = permanent(f, f"https://other.test:{port}/ok.jpg")  # certificate is for images.test
    assert reason.startswith("tls error")


# --- signatures and backoff -------------------------------------------------------------------------


def test_sniff_image_type():
    small = Image.new("RGB", (8, 8))
    assert sniff_image_type(JPEG) == "jpeg"
    assert sniff_image_type(PNG) == "png"
    assert sniff_image_type(PHOTOS["anim.gif"]) == "gif"
    assert sniff_image_type(PHOTOS["anim.webp"]) == "webp"
    assert sniff_image_type(_save(small, "BMP")) == "bmp"
    assert sniff_image_type(_save(small, "TIFF")) == "tiff"
    assert sniff_image_type(_save(small, "AVIF")) == "avif"
    assert sniff_image_type(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic") == "heic"
    assert sniff_image_type(b"<!DOCTYPE html>") is None
    assert sniff_image_type(b"") is None


def test_parse_retry_after():
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("Thu, 01 Jan 1970 00:01:40 GMT", now=40.0) == 60.0
    assert parse_retry_after("Thu, 01 Jan 1970 00:00:10 GMT", now=40.0) == 0.0


# --- poison URLs: every malformed URL is a permanent failure with a short reason ------------------

LONG_PATH = "/" + "a" * 8200


@pytest.mark.parametrize(
    "location,reason",
    [
        (b"http://[::1", "malformed redirect URL: Invalid IPv6 URL"),
        (b"http://[::1/x.jpg", "malformed redirect URL: Invalid IPv6 URL"),
        (b"http://[zz]/x.jpg", "malformed redirect URL: bad address in brackets"),
        (b"http://[1.2.3.4]/x.jpg", "malformed redirect URL: bad address in brackets"),
        (b"http://[::1]]/x.jpg", "malformed redirect URL: bad host or port"),
        (b"http://127.0.0.1:99999/x.jpg", "malformed redirect URL: bad port"),
        (b"http://127.0.0.1:abc/x.jpg", "malformed redirect URL: bad port"),
        (b"http://127.0.0.1:0/x.jpg", "malformed redirect URL: bad port"),
        (b"http://127.0.0.1/\x01x.jpg", "malformed redirect URL: control character"),
        (b"/ok.jpg\x7f", "malformed redirect URL: control character"),
        (b"http://exa\x00mple.test/", "malformed redirect URL: control character"),
        (b"http://exa mple.test/x.jpg", "malformed redirect URL: invalid character in the host"),
        ("http://\u2100.test/x.jpg".encode(), "malformed redirect URL: invalid characters in the host"),
        (b"http://a..b.test/x.jpg", "malformed redirect URL: bad host name"),
        (b"http://" + b"a" * 64 + b".test/x.jpg", "malformed redirect URL: bad host name"),
        (b"http://" + b"ab." * 90 + b"test/x.jpg", "malformed redirect URL: bad host name"),
        (LONG_PATH.encode(), "malformed redirect URL: too long (8201 characters, limit 8192)"),
        (b"gopher://127.0.0.1/", "bad scheme: gopher"),
        (b"data:image/png;base64,iVBORw0KGgo=", "bad scheme: data"),
        (b"http://user:pw@127.0.0.1/x.jpg", "bad url: credentials in url"),
    ],
)
def test_redirect_to_malformed_url_is_permanent(server, fetcher, location, reason):
    """A photo host's redirect to a URL that does not parse (the poison of issue 11: ``302 Location:
    http://[::1`` raised a bare ValueError) ends the fetch as a PermanentFetchError."""
    server.routes["/poison"] = _raw_redirect(location)
    assert permanent(fetcher, url(server, "/poison")) == reason


@pytest.mark.parametrize(
    "target,reason",
    [
        ("http://[::1", "malformed URL: Invalid IPv6 URL"),
        ("https://[fe80::1/x.jpg", "malformed URL: Invalid IPv6 URL"),
        ("http://127.0.0.1:65536/x.jpg", "malformed URL: bad port"),
        ("http://127.0.0.1:-1/x.jpg", "malformed URL: bad port"),
        ("http://127.0.0.1:{port}/x\x00.jpg", "malformed URL: control character"),
        ("http://127.0.0.1:{port}/ok.jpg\r\nX-Injected: 1", "malformed URL: control character"),
        ("http://photos\x85.test/x.jpg", "malformed URL: control character"),
        ("http://%zz/x.jpg", "malformed URL: bad host or port"),
        ("http:///x.jpg", "malformed URL: no host"),
        ("http://a..b/x.jpg", "malformed URL: bad host name"),
        ("http://photos.test" + LONG_PATH, "malformed URL: too long (8219 characters, limit 8192)"),
        # ...also when percent-encoding makes it long: 2,000 characters, 3 bytes each, 3 characters a byte
        ("http://photos.test/" + "\u20ac" * 2000, "malformed URL: too long (18019 characters, limit 8192)"),
        ("   ", "malformed URL: empty"),
        (None, "malformed URL: not text but NoneType"),
        (b"http://127.0.0.1/x.jpg", "malformed URL: not text but bytes"),
    ],
)
def test_malformed_photo_url_is_permanent(server, fetcher, target, reason):
    if isinstance(target, str):
        target = target.replace("{port}", str(server.server_port))
    before = len(server.hosts)
    assert permanent(fetcher, target) == reason
    assert len(server.hosts) == before  # refused before any request


def test_redirect_loop_reason_stays_short(server, fetcher):
    long_loop = "/" + "b" * 2000
    server.routes[long_loop] = _redirect(long_loop)
    reason = permanent(fetcher, url(server, long_loop))
    assert reason.startswith("redirect loop: http://127.0.0.1:") and len(reason) <= 140


# --- whatever the server answers, nothing but a FetchError comes out ---------------------------

_JPEG_LENGTH = b"Content-Length: %d\r\n" % len(JPEG)


@pytest.mark.parametrize(
    "response,error,reason",
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n" + JPEG, PermanentFetchError,
         "invalid http response: Content-Length contained multiple unmatching values (5, 6)"),
        (b"HTTP/1.1 abc OK\r\n\r\n", TransientFetchError, "invalid http response"),
        (b"\x00\x01\x02 garbage\r\n\r\n", TransientFetchError, "invalid http response"),
        (b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-%d: a\r\n" % i for i in range(150)) + b"\r\n",
         TransientFetchError, "invalid http response"),
        (b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * 70_000 + b"\r\n\r\n", TransientFetchError, "invalid http response"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n", TransientFetchError,
         "invalid http response while reading the body"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 99999\r\n\r\n" + JPEG, TransientFetchError,
         "invalid http response while reading the body"),
        (b"HTTP/1.1 200 OK\r\nContent-Encoding: deflate\r\n" + _JPEG_LENGTH + b"\r\n" + JPEG, PermanentFetchError,
         "bad content encoding"),
        (b"HTTP/1.1 999 Whatever\r\nContent-Length: 0\r\n\r\n", TransientFetchError, "http 999"),
        (b"HTTP/1.1 101 Switching\r\n\r\n", PermanentFetchError, "http 101"),
        (b"HTTP/1.1 200 OK\r\nContent-Type: \xff\xfe\r\n" + _JPEG_LENGTH + b"\r\n" + JPEG, PermanentFetchError,
         "not an image: \xff\xfe"),
        (b"HTTP/1.1 302 Found\r\nLocation:    \r\nContent-Length: 0\r\n\r\n", PermanentFetchError,
         "http 302 without Location"),
    ],
)
def test_bad_responses_are_fetch_errors(server, fetcher, response, error, reason):
    server.routes["/bad"] = _raw(response)
    with pytest.raises(FetchError) as err:
        fetcher.fetch(url(server, "/bad"))
    assert (type(err.value), err.value.reason) == (error, reason)


def test_unicode_digits_in_headers_are_not_numbers(server, fetcher):
    """``"\xb2".isdigit()`` is true and ``int("\xb2")`` raises: such a Content-Length is ignored
    and such a Retry-After is no delay (both raised a bare ValueError)."""
    server.routes["/sup-length"] = _raw(b"HTTP/1.1 200 OK\r\nContent-Length: \xb2\r\nConnection: close\r\n\r\n" + JPEG)
    assert fetcher.fetch(url(server, "/sup-length")).data == JPEG
    server.routes["/sup-retry"] = _raw(b"HTTP/1.1 503 Busy\r\nRetry-After: \xb2\r\nContent-Length: 0\r\n\r\n")
    err = transient(fetcher, url(server, "/sup-retry"))
    assert (err.reason, err.retry_after) == ("http 503", None)
    server.routes["/huge-retry"] = _raw(
        b"HTTP/1.1 503 Busy\r\nRetry-After: " + b"9" * 400 + b"\r\nContent-Length: 0\r\n\r\n")
    assert transient(fetcher, url(server, "/huge-retry")).retry_after == 1e9


def test_tls_to_a_plain_http_server_is_a_fetch_error(server):
    f = Fetcher(settings(server.server_port), resolver=lambda host, port: ["127.0.0.1"])
    assert permanent(f, f"https://images.test:{server.server_port}/ok.jpg") == "tls error: wrong version number"


def test_an_error_no_step_foresaw_is_transient_with_its_type(server):
    """The last net: a resolver answering something that is no address (a ValueError deep in the
    guard) comes out as a TransientFetchError that names it."""
    f = Fetcher(settings(server.server_port), resolver=lambda host, port: ["not-an-address"])
    err = transient(f, f"http://odd.test:{server.server_port}/ok.jpg")
    assert err.reason.startswith("unexpected error: ValueError: 'not-an-address' does not appear")
    assert isinstance(err.__cause__, ValueError)


# --- every blocking call has a deadline: DNS, and a server that never answers ---------------------


@pytest.fixture
def hung_dns():
    """A resolver that never answers (until the test ends), and the number of lookups it got."""
    release = threading.Event()
    calls = []

    def resolver(host, port):
        calls.append(host)
        release.wait(60)
        return ["127.0.0.1"]

    yield resolver, calls, release
    release.set()  # the lookup threads are shared by the whole process: give them back


def test_dns_that_never_answers_fails_within_the_deadline(server, hung_dns):
    resolver, calls, _release = hung_dns
    f = Fetcher(settings(server.server_port, download_total_timeout_s=1.5), resolver=resolver)
    err, elapsed = timed_transient(f, f"http://never.test:{server.server_port}/ok.jpg")
    print(f"DNS that never answers: TransientFetchError after {elapsed:.3f} s (deadline 1.5 s)")
    assert err.reason == "DNS lookup timed out after 1.5 s: never.test"
    assert 1.45 <= elapsed < 2.0
    assert calls == ["never.test"]


def test_dns_deadline_is_the_fetch_deadline_redirects_included(server, hung_dns):
    resolver, _calls, _release = hung_dns
    server.routes["/slow-then-hung-dns"] = lambda h: (
        time.sleep(0.5), send(h, 302, b"", None, {"Location": f"http://never.test:{h.server.server_port}/ok.jpg"}))
    f = Fetcher(settings(server.server_port, download_total_timeout_s=1.5), resolver=resolver)
    err, elapsed = timed_transient(f, url(server, "/slow-then-hung-dns"))
    assert err.reason.startswith("DNS lookup timed out after ") and err.reason.endswith(" s: never.test")
    assert 1.45 <= elapsed < 2.0


def test_more_hung_lookups_than_lookup_threads_all_end_at_their_deadline(server, hung_dns):
    """Twice as many fetches as lookup threads, all on a resolver that never answers: the ones queued
    behind the hung lookups end at their deadline too, and none holds its thread longer."""
    resolver, calls, _release = hung_dns
    f = Fetcher(settings(server.server_port, download_total_timeout_s=1.0), resolver=resolver)

    with ThreadPoolExecutor(2 * DNS_THREADS) as pool:
        results = list(pool.map(lambda i: timed_transient(f, f"http://never{i}.test/x.jpg"), range(2 * DNS_THREADS)))
    assert all(err.reason.startswith("DNS lookup timed out after 1 s") for err, _ in results)
    assert max(elapsed for _, elapsed in results) < 1.5
    assert len(calls) <= DNS_THREADS  # the queued lookups were cancelled, never run


def test_lookup_threads_recover_when_the_resolver_answers(server, hung_dns):
    resolver, _calls, release = hung_dns
    hung = Fetcher(settings(server.server_port, download_total_timeout_s=0.3), resolver=resolver)
    for i in range(DNS_THREADS):  # each holds a lookup thread
        transient(hung, f"http://never{i}.test/x.jpg")
    quick = Fetcher(settings(server.server_port, download_total_timeout_s=0.3),
                    resolver=lambda host, port: ["127.0.0.1"])
    target = f"http://images.test:{server.server_port}/ok.jpg"
    assert transient(quick, target).reason == "DNS lookup timed out after 0.3 s: images.test"  # queued
    release.set()
    assert quick.fetch(target).data == JPEG


def test_server_that_accepts_and_never_answers_is_cut_at_the_deadline():
    with socket.socket() as listener:  # connections complete in the backlog; nothing ever answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        err, elapsed = timed_transient(Fetcher(settings(port, download_total_timeout_s=1.5)),
                                       f"http://127.0.0.1:{port}/hung.jpg")
    print(f"server that never answers: TransientFetchError after {elapsed:.3f} s (deadline 1.5 s)")
    assert err.reason == "timed out after 1.5 s"
    assert 1.45 <= elapsed < 2.0
