"""Connection pinning, DNS lookups and the total deadline of a fetch.

``PinnedAdapter`` connects to the IP pinned on the request (an address the guard has checked), never to
what the host name resolves to now, while the Host header, TLS SNI and certificate check keep the host
name: DNS rebinding between check and connect is impossible. Its connections register their socket
with the current fetch's ``Deadline`` (``current_fetch.deadline``, per thread), and one watchdog thread
per process shuts down the sockets of fetches past their deadline, so a server trickling one byte a
second is cut at the deadline.

DNS lookups (``socket.getaddrinfo``, or a resolver passed in) run on a few shared daemon threads
(``resolve_within``): the fetch waits for the answer until its deadline and then gives up with a
``TransientFetchError``, so a resolver that never answers (a dead DNS server, a hung NSS module) holds
a lookup thread, never a download thread. The lookups that hang hold at most ``DNS_THREADS`` threads;
others queue behind them, and each waits only until its own deadline."""

from __future__ import annotations

import heapq
import itertools
import os
import queue
import socket
import threading
import time
from concurrent.futures import Future, wait
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from autodetect.images.errors import TransientFetchError

__all__ = ["DNS_THREADS", "Deadline", "Pin", "PinnedAdapter", "Resolver", "current_fetch", "resolve_within",
           "system_resolver"]

Resolver = Callable[[str, int], Sequence[str]]

#: Threads that run DNS lookups, shared by all the fetches of a process.
DNS_THREADS = 8


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [info[4][0] for info in infos if info[0] in (socket.AF_INET, socket.AF_INET6)]


# --- DNS lookups under a deadline -----------------------------------------------------------------


class _LookupThreads:
    """Up to ``size`` daemon threads (started as needed) that run lookups from one queue. Daemon
    threads: one stuck in ``getaddrinfo`` never holds up the process's exit."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._reinit()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._reinit)

    def _reinit(self) -> None:
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._started = 0

    def submit(self, fn: Callable, *args: object) -> Future:
        future: Future = Future()
        self._jobs.put((future, fn, args))
        with self._lock:
            if self._started < self._size:
                self._started += 1
                threading.Thread(target=self._work, name=f"dns-{self._started}", daemon=True).start()
        return future

    def _work(self) -> None:
        while True:
            future, fn, args = self._jobs.get()
            if not future.set_running_or_notify_cancel():
                continue  # its caller gave up before the lookup began
            try:
                future.set_result(fn(*args))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller, whatever it is
                future.set_exception(exc)


_lookups = _LookupThreads(DNS_THREADS)


def resolve_within(resolver: Resolver, host: str, port: int, timeout: float) -> Sequence[str]:
    """``resolver(host, port)``, run on a lookup thread and waited for at most ``timeout`` seconds:
    then ``TransientFetchError("DNS lookup timed out after N s: host")``. The resolver's own errors
    are raised as they are."""
    timeout = max(0.0, timeout)
    future = _lookups.submit(resolver, host, port)
    if not wait((future,), timeout=timeout).done:
        future.cancel()  # still queued: it never runs; running: it ends on its own, unheard
        raise TransientFetchError(f"DNS lookup timed out after {round(timeout, 1):g} s: {host}")
    return future.result()


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
