"""Connection pinning and the total deadline of a fetch.

``PinnedAdapter`` connects to the IP pinned on the request (an address the guard has checked), never to
what the host name resolves to now, while the Host header, TLS SNI and certificate check keep the host
name: DNS rebinding between check and connect is impossible. Its connections register their socket
with the current fetch's ``Deadline`` (``current_fetch.deadline``, per thread), and one watchdog thread
per process shuts down the sockets of fetches past their deadline, so a server trickling one byte a
second is cut at the deadline."""

from __future__ import annotations

import heapq
import itertools
import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import Iterable

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

__all__ = ["Deadline", "Pin", "PinnedAdapter", "current_fetch", "system_resolver"]


def system_resolver(host: str, port: int) -> list[str]:
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
current_fetch = threading.local()


class Deadline:
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
        ctx: Deadline | None = getattr(current_fetch, "deadline", None)
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
class Pin:
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
        pin: Pin | None = getattr(request, "autodetect_pin", None)
        if pin is None:
            raise requests.exceptions.InvalidURL("refused: request without a checked address")
        host_params, pool_kwargs = self.build_connection_pool_key_attributes(request, verify, cert)
        host_params["host"] = pin.ip
        if host_params["scheme"] == "https" and pin.host != pin.ip:
            pool_kwargs["server_hostname"] = pin.host
            pool_kwargs["assert_hostname"] = pin.host
        return self.poolmanager.connection_from_host(**host_params, pool_kwargs=pool_kwargs)
