"""Throwaway services for the fault suite (``test_faults.py``), so that the machine's shared services
(PostgreSQL on 5432, Redis on 6379, RabbitMQ on 5672, which other tests use) are never restarted:

- ``PostgresCluster``: its own cluster (``initdb`` + ``pg_ctl``) in a temporary directory, on a free
  port; run as the ``postgres`` user when we are root (PostgreSQL refuses to run as root);
- ``RedisServer``: ``redis-server`` on a free port, nothing persisted (a restart starts empty, so
  the broker's messages are gone);
- ``RabbitNode``: a RabbitMQ node of its own (node name, AMQP and distribution ports, Mnesia and log
  directories, Erlang cookie, no plugins), on the machine's shared ``epmd``;
- ``PhotoHost``: the sandbox's photos on a loopback port of their own, with poison answers per path,
  that can be taken down (connection refused, open connections cut) and brought back on the same port;
- ``FaultMarketplace``: the sandbox marketplace's API whose photo URLs point at a ``PhotoHost``;
- ``TmpfsMount``: a small tmpfs over a directory (the image store), grown or filled at will.

Each has ``start``/``stop`` (and ``restart`` where the suite needs it), is a context manager, and
cleans up on ``close()`` even after a failure: the processes run in sessions of their own and are
killed by process group as a last resort. Also: the child processes of a prefork worker (``/proc``),
to SIGKILL one of them."""

from __future__ import annotations

import atexit
import glob
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _wait(predicate: Callable[[], bool], timeout: float, what: str, poll: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(poll)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def _kill_group(proc: subprocess.Popen | None, sig: int = signal.SIGKILL, wait: float = 10.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=wait)
    except subprocess.TimeoutExpired:
        if sig != signal.SIGKILL:
            _kill_group(proc, signal.SIGKILL, wait)


class _Live:
    """Every service (and anything else with ``close()``) this process started and has not closed,
    closed at exit, newest first, if a fixture's finalizer never ran (an interrupted session, a
    SIGTERM turned into ``KeyboardInterrupt`` by ``terminate_on_sigterm``): nothing is left running."""

    def __init__(self):
        self._items: list[Any] = []
        self._lock = threading.Lock()

    def add(self, item: Any) -> None:
        with self._lock:
            if all(x is not item for x in self._items):
                self._items.append(item)

    def discard(self, item: Any) -> None:
        with self._lock:
            self._items = [x for x in self._items if x is not item]

    def close_all(self) -> None:
        with self._lock:
            items = self._items[::-1]
        for item in items:
            try:
                item.close()
            except Exception:  # noqa: BLE001 - best effort at exit
                pass


_LIVE = _Live()
register_cleanup = _LIVE.add
forget_cleanup = _LIVE.discard
atexit.register(_LIVE.close_all)


def terminate_on_sigterm() -> Callable[[], None]:
    """Turn SIGTERM (a CI timeout, ``kill``) into ``KeyboardInterrupt`` so that pytest stops and the
    cleanup above runs; returns the function that restores the previous handler."""
    try:
        previous = signal.getsignal(signal.SIGTERM)

        def _interrupt(signum, frame):
            raise KeyboardInterrupt(f"signal {signum}")

        signal.signal(signal.SIGTERM, _interrupt)
    except ValueError:  # not the main thread: leave it
        return lambda: None
    return lambda: signal.signal(signal.SIGTERM, previous)


class _Service:
    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def restart(self, down_s: float = 3.0) -> None:
        """Stopped, ``down_s`` seconds down, started again."""
        self.stop()
        time.sleep(down_s)
        self.start()

    def close(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


# --- PostgreSQL ----------------------------------------------------------------------------------
def _pg_bindir() -> Path:
    """The directory of ``pg_ctl``/``initdb``: Debian's newest /usr/lib/postgresql/*/bin, else PATH."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
                        key=lambda p: int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0)
    if candidates:
        return Path(candidates[-1]).parent
    found = shutil.which("pg_ctl")
    if found:
        return Path(os.path.realpath(found)).parent
    raise FileNotFoundError("pg_ctl not found on PATH or under /usr/lib/postgresql/*/bin")


class PostgresCluster(_Service):
    """A PostgreSQL cluster of its own: ``initdb`` in a temporary directory, ``pg_ctl`` to start and
    stop it on ``port`` (127.0.0.1, trust authentication). As root, every command runs as ``user``."""

    def __init__(self, port: int | None = None, user: str = "postgres"):
        self.port = port or free_port()
        self.bindir = _pg_bindir()
        self.root = Path(tempfile.mkdtemp(prefix="autodetect-faults-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self._as = None
        if os.geteuid() == 0:
            self._as = user
            pw = pwd.getpwnam(user)
            os.chmod(self.root, 0o755)
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
        self._initialized = False
        _LIVE.add(self)

    def _run(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self._as:
            cmd = ["runuser", "-u", self._as, "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=check,
                              cwd=self.root, start_new_session=True)

    def _init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write("\n# autodetect fault suite: a throwaway cluster, speed over durability\n"
                       f"port = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                       f"unix_socket_directories = '{self.root}'\n"
                       "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                       "max_connections = 300\nshared_buffers = 64MB\n")
        self._initialized = True

    @property
    def admin_url(self) -> str:
        return self.url("postgres")

    def url(self, database: str) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{database}"

    def running(self) -> bool:
        return self._run("pg_ctl", "-D", str(self.data), "status", check=False).returncode == 0

    def start(self) -> "PostgresCluster":
        if not self._initialized:
            self._init()
        result = self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start",
                           check=False)
        if result.returncode != 0:
            raise RuntimeError(f"PostgreSQL did not start: {result.stdout}{result.stderr}\n{self.log_tail()}")
        _wait(lambda: port_open(self.port), 30, "PostgreSQL to listen")
        return self

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: every connection is cut, as in a restart)."""
        if not self._initialized or not (self.data / "postmaster.pid").exists():
            return
        result = self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop", check=False)
        if result.returncode != 0 and (self.data / "postmaster.pid").exists():
            result = self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "-t", "30", "stop",
                               check=False)
        if (self.data / "postmaster.pid").exists():
            self._kill_postmaster()

    def _kill_postmaster(self) -> None:
        try:
            pid = int((self.data / "postmaster.pid").read_text().split()[0])
            os.kill(pid, signal.SIGKILL)
        except (OSError, ValueError, IndexError):
            pass

    def restart(self, down_s: float = 20.0) -> None:
        self.stop("fast")
        time.sleep(down_s)
        self.start()

    def create_database(self, name: str) -> str:
        self._admin(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def _admin(self, statement: str) -> None:
        """One statement outside a transaction, as the cluster's superuser."""
        from sqlalchemy import create_engine, text

        admin = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                conn.execute(text(statement))
        finally:
            admin.dispose()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def close(self) -> None:
        try:
            self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
            _LIVE.discard(self)


# --- Redis ---------------------------------------------------------------------------------------
class RedisServer(_Service):
    """``redis-server`` on a free loopback port with nothing persisted: a restart starts empty."""

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.root = Path(tempfile.mkdtemp(prefix="autodetect-faults-redis-"))
        self.proc: subprocess.Popen | None = None
        _LIVE.add(self)

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> "RedisServer":
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        log = open(self.root / "redis.log", "ab")  # noqa: SIM115 - handed to the process
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.root), "--daemonize", "no", "--protected-mode", "no"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        _wait(self._ping, 30, "Redis to answer PING")
        return self

    def _ping(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"redis-server exited with {self.proc.returncode}: "
                               f"{(self.root / 'redis.log').read_text(errors='replace')[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        """Gone at once, as in a crash (nothing was persisted anyway)."""
        _kill_group(self.proc, signal.SIGKILL)
        self.proc = None
        _wait(lambda: not port_open(self.port), 10, "Redis's port to close")

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join((self.root / "redis.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def flushall(self) -> None:
        import redis

        redis.Redis(port=self.port).flushall()

    def close(self) -> None:
        try:
            _kill_group(self.proc, signal.SIGKILL)
        finally:
            self.proc = None
            shutil.rmtree(self.root, ignore_errors=True)
            _LIVE.discard(self)


# --- RabbitMQ ------------------------------------------------------------------------------------
def _rabbit_script(name: str) -> str:
    for candidate in (f"/usr/lib/rabbitmq/bin/{name}",
                      *sorted(glob.glob(f"/usr/lib/rabbitmq/lib/rabbitmq_server-*/sbin/{name}"))[::-1]):
        if os.path.exists(candidate):
            return candidate
    found = shutil.which(name)
    if found:
        return found
    raise FileNotFoundError(f"{name} not found (RabbitMQ is not installed)")


class RabbitNode(_Service):
    """A RabbitMQ node of its own: own node name, AMQP and distribution ports, Mnesia and log
    directories, Erlang cookie (``HOME``), config file (``/etc/rabbitmq`` is not read) and no
    plugins. It registers with the machine's ``epmd`` (Erlang starts one if none runs).
    Durable queues and persistent messages survive ``restart`` as in a real broker restart."""

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.dist_port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="autodetect-faults-rabbit-"))
        self.node = f"autodetect_faults_{os.getpid()}_{self.port}@localhost"
        self.proc: subprocess.Popen | None = None
        for d in ("mnesia", "log", "home"):
            (self.root / d).mkdir()
        (self.root / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\n"
            "loopback_users.guest = true\n"
            # above the longest task (the issue: the 30 min default is below a training run's limit)
            "consumer_timeout = 7200000\n"
            "log.console = false\nlog.file.level = info\n")
        (self.root / "rabbitmq-env.conf").write_text("")
        (self.root / "enabled_plugins").write_text("[].\n")
        _LIVE.add(self)

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    @property
    def env(self) -> dict[str, str]:
        keep = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        return {**keep, "HOME": str(self.root / "home"), "RABBITMQ_NODENAME": self.node,
                "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1", "RABBITMQ_NODE_PORT": str(self.port),
                "RABBITMQ_DIST_PORT": str(self.dist_port), "RABBITMQ_MNESIA_BASE": str(self.root / "mnesia"),
                "RABBITMQ_LOG_BASE": str(self.root / "log"), "RABBITMQ_CONFIG_FILE": str(self.root / "rabbitmq.conf"),
                "RABBITMQ_CONF_ENV_FILE": str(self.root / "rabbitmq-env.conf"),
                "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.root / "enabled_plugins"),
                "RABBITMQ_PID_FILE": str(self.root / "rabbit.pid"), "ERL_EPMD_ADDRESS": "127.0.0.1"}

    def ctl(self, *args: str, timeout: float = 90) -> subprocess.CompletedProcess:
        return subprocess.run([_rabbit_script("rabbitmqctl"), "-n", self.node, *args], env=self.env,
                              capture_output=True, text=True, timeout=timeout, start_new_session=True)

    def start(self, timeout: float = 90) -> "RabbitNode":
        (self.root / "rabbit.pid").unlink(missing_ok=True)
        out = open(self.root / "server.out", "ab")  # noqa: SIM115 - handed to the process
        self.proc = subprocess.Popen([_rabbit_script("rabbitmq-server")], env=self.env, cwd=self.root,
                                     stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        out.close()
        result = self.ctl("wait", "--timeout", str(int(timeout)), str(self.root / "rabbit.pid"), timeout=timeout + 10)
        if result.returncode != 0 or not port_open(self.port):
            tail = (self.root / "server.out").read_text(errors="replace")[-3000:]
            self.stop()
            raise RuntimeError(f"RabbitMQ node {self.node} did not start: {result.stdout}{result.stderr}\n{tail}")
        return self

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                self.ctl("stop", str(self.root / "rabbit.pid"), timeout=60)
            except subprocess.TimeoutExpired:
                pass
        _kill_group(self.proc, signal.SIGTERM, wait=15)
        self.proc = None
        _wait(lambda: not port_open(self.port), 15, "RabbitMQ's port to close")

    def close(self) -> None:
        try:
            try:
                self.stop()
            except Exception:  # noqa: BLE001 - killed below in any case
                pass
            _kill_group(self.proc, signal.SIGKILL)
            # the node's Erlang helpers (erl_child_setup, inet_gethost) live in its process group
        finally:
            self.proc = None
            shutil.rmtree(self.root, ignore_errors=True)
            _LIVE.discard(self)


# --- the photo host ------------------------------------------------------------------------------
#: Poison answers a ``PhotoHost`` can give for a path.
REDIRECT_MALFORMED = "redirect_malformed"  # 302 Location: http://[::1
CORRUPT_JPEG = "corrupt_jpeg"  # a JPEG's header, then garbage: raises inside decode


def corrupt_jpeg(data: bytes) -> bytes:
    """A JPEG whose header parses and whose scan data is garbage (decoding it raises)."""
    sos = data.find(b"\xff\xda")
    head = data[: sos + 20] if sos > 0 else data[:600]
    return head + bytes((i * 37 + 11) % 256 for i in range(2000))


class _TrackingServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, *args, **kwargs):
        self.connections: set[socket.socket] = set()
        self.conn_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def process_request(self, request, client_address):
        with self.conn_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self.conn_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request, client_address) -> None:
        import sys

        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)):
            return  # a client that went away (a killed worker, a cut connection)
        super().handle_error(request, client_address)

    def cut_connections(self) -> None:
        with self.conn_lock:
            conns = list(self.connections)
            self.connections.clear()
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                conn.close()
            except OSError:
                pass


class _PhotoHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 30
    server: _TrackingServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802
        host: PhotoHost = self.server.host  # type: ignore[attr-defined]
        path = self.path.split("?", 1)[0]
        poison = host.poison.get(path)
        host.record(path, poison)
        if host.delay_s > 0:
            time.sleep(host.delay_s)
        if poison == REDIRECT_MALFORMED:
            self._send(HTTPStatus.FOUND, b"", "text/plain", {"Location": "http://[::1"})
            return
        data = host.marketplace.photo_bytes(path) if path.startswith("/photos/") else None
        if data is None:
            self._send(HTTPStatus.NOT_FOUND, b"Not Found", "text/plain")
        elif poison == CORRUPT_JPEG:
            self._send(HTTPStatus.OK, corrupt_jpeg(data), "image/jpeg")
        else:
            self._send(HTTPStatus.OK, data, "image/jpeg")


class PhotoHost(_Service):
    """The marketplace's photos (``/photos/<item>/<n>.jpg``) on a loopback port of their own.
    ``poison`` maps a path to ``REDIRECT_MALFORMED`` or ``CORRUPT_JPEG``. ``stop`` closes the
    listening socket and cuts every open connection (new ones are refused); ``start`` binds the
    same port again. ``requests`` logs ``(wall time, path)`` of every request; ``delay_s`` slows
    every answer (a slow host: a batch of downloads takes a while, to be killed in the middle)."""

    def __init__(self, marketplace, port: int | None = None, poison: dict[str, str] | None = None):
        self.marketplace = marketplace
        self.port = port or free_port()
        self.poison = dict(poison or {})
        self.delay_s = 0.0
        self.requests: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._httpd: _TrackingServer | None = None
        self._thread: threading.Thread | None = None
        _LIVE.add(self)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def record(self, path: str, poison: str | None) -> None:
        with self._lock:
            self.requests.append((time.time(), path))

    def first_request(self) -> dict[str, float]:
        with self._lock:
            out: dict[str, float] = {}
            for t, path in self.requests:
                out.setdefault(path, t)
            return out

    def start(self) -> "PhotoHost":
        deadline = time.monotonic() + 30
        while True:
            try:
                self._httpd = _TrackingServer(("127.0.0.1", self.port), _PhotoHandler)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        self._httpd.host = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fault-photo-host", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()  # new connections: refused
        self._httpd.cut_connections()  # kept-alive ones: cut
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._httpd = None
        self._thread = None

    def close(self) -> None:
        self.stop()
        _LIVE.discard(self)


class FaultMarketplace(_Service):
    """The sandbox marketplace's API (``SandboxServer``) whose photo URLs point at ``photos``, a
    ``PhotoHost`` on another port: the API stays up while the photo host is down or poisoned."""

    def __init__(self, marketplace, poison: dict[str, str] | None = None):
        from autodetect.sandbox.server import SandboxServer, _Handler

        class _Rewriting(_Handler):
            def _json(self, status: int, payload: dict[str, Any]) -> None:
                body = json.dumps(payload).replace(f'"{self._base()}/photos/', f'"{self.server.photo_base}/photos/')
                self._send(status, body.encode(), "application/json")

        self.marketplace = marketplace
        self.photos = PhotoHost(marketplace, poison=poison)
        self.api = SandboxServer(marketplace)
        self.api._httpd.RequestHandlerClass = _Rewriting
        self.api._httpd.photo_base = self.photos.url
        _LIVE.add(self)

    @property
    def url(self) -> str:
        return self.api.url

    @property
    def allow_hosts(self) -> list[str]:
        """The SSRF guard's allow-list entries for the API and the photo host (loopback, those ports)."""
        return [self.api.url.split("//", 1)[1], self.photos.url.split("//", 1)[1]]

    def start(self) -> "FaultMarketplace":
        self.photos.start()
        self.api.start()
        return self

    def close(self) -> None:
        try:
            self.api.stop()
        except Exception:  # noqa: BLE001 - closed already
            pass
        self.photos.close()
        _LIVE.discard(self)


# --- a small file system -------------------------------------------------------------------------
class TmpfsMount(_Service):
    """A tmpfs of ``size_mb`` mounted over ``path`` (needs root). ``fill()`` writes a filler file
    until the file system is full; ``free()`` deletes it; ``resize()`` remounts with another size."""

    def __init__(self, path: Path, size_mb: int):
        self.path = Path(path)
        self.size_mb = size_mb
        self.mounted = False
        _LIVE.add(self)

    @staticmethod
    def available() -> bool:
        return os.geteuid() == 0 and shutil.which("mount") is not None

    def start(self) -> "TmpfsMount":
        self.path.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={self.size_mb}m,mode=0755", "tmpfs", str(self.path)],
                       check=True, capture_output=True, text=True, timeout=30)
        self.mounted = True
        return self

    @property
    def filler(self) -> Path:
        return self.path / ".filler"

    def free_bytes(self) -> int:
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize

    def fill(self, leave_bytes: int = 0) -> None:
        """Write the filler until fewer than ``leave_bytes`` are free (0: until ENOSPC)."""
        chunk = b"\0" * (1 << 20)
        with open(self.filler, "ab") as fh:
            while True:
                free = self.free_bytes()
                if free <= leave_bytes:
                    break
                try:
                    fh.write(chunk[: max(4096, min(len(chunk), free - leave_bytes))])
                    fh.flush()
                except OSError:
                    break

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)

    def resize(self, size_mb: int) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size_mb}m", str(self.path)], check=True,
                       capture_output=True, text=True, timeout=30)
        self.size_mb = size_mb

    def close(self) -> None:
        if self.mounted:
            result = subprocess.run(["umount", str(self.path)], capture_output=True, timeout=30)
            if result.returncode != 0:
                subprocess.run(["umount", "-l", str(self.path)], capture_output=True, timeout=30)
            self.mounted = False
        _LIVE.discard(self)


# --- processes -----------------------------------------------------------------------------------
def children(pid: int) -> list[int]:
    """The direct child processes of ``pid`` (from /proc)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
        return [int(x) for x in text.split()]
    except OSError:
        pass
    out = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            fields = Path(stat).read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(Path(stat).parent.name))
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def group_members(pgid: int) -> list[int]:
    """Live processes in process group ``pgid`` (a worker's parent and its pool)."""
    out = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            fields = Path(stat).read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            out.append(int(Path(stat).parent.name))
    return out
