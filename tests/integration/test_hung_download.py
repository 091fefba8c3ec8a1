"""A hung download frees its worker slot within the configured deadline.

Real stack: PostgreSQL (a fresh database), Redis (a database of its own), one
``celery -A workers worker -Q download -P threads -c 1`` process: one slot, on the ``threads`` pool,
where Celery enforces no ``time_limit``. Two messages of one photo each (``download_batch_size`` 1):
first a photo on a loopback server that accepts the connection and never answers, then a normal
photo. The fetch's total deadline (``download_total_timeout_s``, 3 s here) is all that frees the
slot: the normal photo must be downloaded within the deadline plus a few seconds of the hung
connection's start, and the hung photo's row must not stay ``running`` (pending again with a timeout
reason, or failed). The DNS that never answers is the unit tests' (``test_images_fetch``)."""

from __future__ import annotations

import socket
import threading
import time

import pytest
import redis
from sqlalchemy import insert, select

from autodetect.db import session_scope
from autodetect.storage import Image, Listing
from tests.integration.conftest import REDIS_URL, client_app, make_stack, wait_for
from tests.unit.test_images_fetch import _start

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

BROKER = REDIS_URL.rsplit("/", 1)[0] + "/13"  # a database of its own: other suites may share db 7
DEADLINE_S = 3.0
SLACK_S = 4.0  # the second message's claim, download, decode, store and record


class SilentServer:
    """Accepts connections on a loopback port and never answers; remembers when each came."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[float] = []
        self._held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(time.monotonic())
            self._held.append(conn)  # open, unread, unanswered

    def close(self) -> None:
        self.sock.close()
        for conn in self._held:
            conn.close()


def _add_photos(settings, urls: list[str]) -> list[int]:
    with session_scope(settings) as s:
        s.execute(insert(Listing), [{"id": 1, "source": "test", "external_id": "t1", "title": "hung",
                                     "issues": [], "raw": {}}])
        s.execute(insert(Image), [{"listing_id": 1, "position": i, "url": u, "stage": "download",
                                   "state": "pending"} for i, u in enumerate(urls)])
        return list(s.scalars(select(Image.id).order_by(Image.position)))


def _row(settings, image_id: int):
    with session_scope(settings) as s:
        return s.execute(select(Image.stage, Image.state, Image.error, Image.attempts)
                         .where(Image.id == image_id)).one()


def test_hung_download_frees_its_slot_within_the_deadline(tmp_path, pg_url):
    redis.Redis.from_url(BROKER).flushdb()
    silent, photos = SilentServer(), _start()
    ok_host = f"127.0.0.1:{photos.server_port}"
    stack = make_stack(tmp_path, pg_url, BROKER, f"http://{ok_host}",
                       download_allow_hosts=[f"127.0.0.1:{silent.port}", ok_host],
                       download_total_timeout_s=str(DEADLINE_S), download_batch_size="1")
    settings = stack.settings
    hung_id, ok_id = _add_photos(settings, [f"http://127.0.0.1:{silent.port}/hung.jpg", f"http://{ok_host}/ok.jpg"])
    app = client_app(settings)
    try:
        app.send_task("download.fetch", args=([hung_id],))  # first in the queue: it takes the one slot
        app.send_task("download.fetch", args=([ok_id],))
        stack.spawn("download", ["celery", "-A", "workers", "worker", "-Q", "download", "-P", "threads", "-c", "1",
                                 "--prefetch-multiplier", "1", "-n", "download@hung", "-l", "INFO",
                                 "--without-gossip", "--without-mingle", "--without-heartbeat"])
        wait_for(lambda: silent.accepted, 90, stack, "the worker to connect to the silent server", poll=0.05)
        hung_at = silent.accepted[0]
        wait_for(lambda: _row(settings, ok_id).stage == "dedup", DEADLINE_S + SLACK_S + 30, stack,
                 "the normal photo to be downloaded", poll=0.05)
        ok_after = time.monotonic() - hung_at
        hung = _row(settings, hung_id)
        print(f"\nhung connection at t=0; normal photo downloaded at {ok_after:.2f} s "
              f"(deadline {DEADLINE_S:g} s); hung row {tuple(hung)}")
        assert DEADLINE_S - 0.5 <= ok_after <= DEADLINE_S + SLACK_S, "the slot was not freed at the deadline"
        assert hung.stage == "download" and hung.state in ("pending", "failed"), hung
        assert hung.attempts == 1 and "timed out" in (hung.error or ""), hung
        ok = _row(settings, ok_id)
        assert (ok.state, ok.error, ok.attempts) == ("pending", None, 0)  # waiting in dedup, no reason
        assert len(silent.accepted) == 1  # tried once: its retry waits for its backoff
    finally:
        stack.stop()
        silent.close()
        photos.stop.set()
        photos.shutdown()
        photos.server_close()
