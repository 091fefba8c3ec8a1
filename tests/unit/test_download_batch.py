"""``download_images``: one batch, every photo ending in its own recorded state, one dedup dispatch for
the batch, files flushed once before the rows commit; delivered again, nothing changes."""

from __future__ import annotations

import io
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image as PILImage
from sqlalchemy import insert, select

from autodetect.db import session_scope
from autodetect.pipeline.download import download_images
from autodetect.images.fetch import Fetcher
from autodetect.images.store import ImageStore
from autodetect.settings import configure
from autodetect.storage import Image, Listing, utcnow


def _jpeg(width: int, height: int, colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    PILImage.new("RGB", (width, height), colour).save(buf, "JPEG", quality=90)
    return buf.getvalue()


ROUTES = {
    "/small.jpg": (200, _jpeg(320, 240, (200, 30, 30))),
    "/big.jpg": (200, _jpeg(1024, 768, (30, 30, 200))),
    "/gone.jpg": (404, b"not here"),
    "/busy.jpg": (503, b"try later"),
}


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        status, body = ROUTES.get(self.path, (404, b""))
        self.send_response(status)
        self.send_header("Content-Type", "image/jpeg" if status == 200 else "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _state(settings) -> dict[str, tuple]:
    with session_scope(settings) as s:
        rows = s.execute(select(Image.url, Image.stage, Image.state, Image.attempts, Image.error, Image.sha256,
                                Image.storage_key, Image.normalized_key, Image.width, Image.phash)).all()
    return {r.url.rsplit("/", 1)[-1]: tuple(r)[1:] for r in rows}


def test_a_batch_records_every_photo_and_a_second_delivery_changes_nothing(tmp_path, template_db, server):
    shutil.copy(template_db, tmp_path / "autodetect.db")
    settings = configure(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path}/autodetect.db",
                         download_allow_hosts=[server], max_attempts=2,
                         retry_backoff_s=[60, 300], retry_jitter=0.1)
    with session_scope(settings) as s:
        listing = s.execute(insert(Listing).values(source="test", external_id="1", title="t").returning(Listing.id)).scalar()
        names = ["small.jpg", "big.jpg", "gone.jpg", "busy.jpg", "done-before.jpg"]
        ids = s.execute(insert(Image).returning(Image.id), [
            {"listing_id": listing, "position": k, "url": f"http://{server}/{name}",
             **({"stage": "dedup"} if name == "done-before.jpg" else {})} for k, name in enumerate(names)]).scalars().all()
    by_name = dict(zip(names, ids))
    sent: list[tuple[str, list[int]]] = []
    store = ImageStore(tmp_path / "images")
    fetcher = Fetcher(settings)

    out = download_images(settings, [*ids, 999_999], fetcher, store, lambda stage, got: sent.append((stage.value, list(got))))

    assert out.done == [by_name["small.jpg"], by_name["big.jpg"]]
    assert out.failed == {by_name["gone.jpg"]: "http 404"}
    assert out.retry == {by_name["busy.jpg"]: "http 503"}
    assert out.skipped == [by_name["done-before.jpg"], 999_999]
    assert sent == [("dedup", [by_name["small.jpg"], by_name["big.jpg"]])], "one dispatch for the batch"
    state = _state(settings)
    small, big = state["small.jpg"], state["big.jpg"]
    assert small[:3] == ("dedup", "pending", 0) and small[3] is None and small[4] and small[7] == 320
    assert small[6] == small[5], "a small upright RGB JPEG is its own normalized copy"
    assert big[6].startswith("normalized/") and big[7] == 1024
    assert PILImage.open(store.path(big[6])).size == (512, 384)
    assert store.read(big[5]) == ROUTES["/big.jpg"][1]
    assert state["gone.jpg"][:4] == ("download", "failed", 1, "http 404")
    assert state["busy.jpg"][:4] == ("download", "pending", 1, "http 503")
    with session_scope(settings) as s:
        due = s.scalar(select(Image.next_attempt_at).where(Image.id == by_name["busy.jpg"]))
    assert 54 <= (due - utcnow()).total_seconds() <= 66, "due after the first backoff (60 s +- 10%)"

    # The same message again: done rows are left alone; the photo that was busy (a retry the sweeper
    # would send when due) fails for good now, at its second attempt.
    again = download_images(settings, ids, fetcher, store, lambda stage, got: sent.append((stage.value, list(got))))
    assert again.done == [] and again.failed == {by_name["busy.jpg"]: "http 503"} and again.retry == {}
    after = _state(settings)
    assert after["busy.jpg"][:4] == ("download", "failed", 2, "http 503")
    assert {k: v for k, v in after.items() if k != "busy.jpg"} == {k: v for k, v in state.items() if k != "busy.jpg"}
    assert len(sent) == 1
    fetcher.close()
