"""Download throughput: 5,000 photos from a loopback server through ONE real download worker.

    python benchmarks/download_throughput.py [--photos 5000] [--concurrency 32]
        [--pg postgresql+psycopg2://postgres:postgres@127.0.0.1:5432/postgres] [--redis redis://127.0.0.1:6379]

The stack is the production one, on loopback:

* PostgreSQL: a scratch database (the Alembic migrations), dropped afterwards; one listing with
  ``--photos`` image rows, inserted with ``COPY``.
* Redis: the broker, on an empty database number (picked at start, flushed at the end).
* The photo server: a ``ThreadingHTTPServer`` in this process, HTTP/1.1 keep-alive with
  ``disable_nagle_algorithm = True`` (otherwise headers and body in separate writes meet delayed ACKs:
  a 40 ms stall per photo). It serves ``--distinct`` sandbox car photos rendered beforehand, each URL
  made unique by a JPEG comment segment carrying its number, so every download has its own sha256 and
  is really written to the store (the pixels repeat; decoding, hashing and storing are all done).
* One worker process: ``celery -A workers worker -Q download -P threads -c N`` (the queue's declared
  prefetch), with the environment pointing at the above; the SSRF guard allows exactly the photo
  server's ``127.0.0.1:port``.

The 5,000 photos are queued first, through ``workers.dispatch.dispatch`` (the pipeline's own
dispatcher, from 8 threads: ``download_batch_size`` photos per message), and the worker is started
on that backlog; the clock starts when it logs ``ready``. Each batch sends its dedup messages as
usual; no dedup worker runs, so those just queue and only downloads are counted (rows out of stage
``download``, polled in the database every 50 ms). Then the same again with one photo per message
(``download_batch_size=1``), the reference, on a fresh database (``--no-reference`` skips it).

Printed per run: photos/s over the whole run (worker ready to last row done) and in the steady
state (10% to 90% done); the worker's peak memory, the largest RSS sum of its process tree sampled
every 50 ms from ``/proc``; its CPU time per photo (user + system, from ``/proc``: with the GIL one
threads worker cannot use more than about one core); the machine's load average (the development
machine is shared); then the batched/reference ratio. Exit status 1 if a photo failed or the goal
(>= 200 photos/s with the default batch) is missed.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from sqlalchemy import text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scratch import scratch_postgres  # noqa: E402
from autodetect.db import engine_for, upgrade
from autodetect.sandbox.marketplace import Marketplace
from autodetect.settings import Settings, configure

GOAL_PER_S = 200.0
_PHOTO = re.compile(r"^/p/(\d+)\.jpg$")


@contextmanager
def empty_redis_db(base: str) -> Iterator[str]:
    """A Redis database number that holds no key now (flushed afterwards)."""
    import redis

    for db in range(15, 0, -1):
        client = redis.Redis.from_url(f"{base.rstrip('/')}/{db}")
        if client.dbsize() == 0:
            try:
                yield f"{base.rstrip('/')}/{db}"
            finally:
                client.flushdb()
                client.close()
            return
        client.close()
    raise SystemExit("no empty Redis database to use")


def photo_set(distinct: int, seed: int) -> list[bytes]:
    """``distinct`` sandbox car photos (JPEG bytes), rendered once."""
    market = Marketplace(listings=max(12, 2 * distinct), models=10, seed=seed, bad_input=False)
    out = []
    for listing in market.listings():
        for photo in listing.photos:
            if photo.kind == "car" and photo.original is None:
                out.append(market.photo_bytes(photo.path))
                break
        if len(out) >= distinct:
            break
    return out


def unique_jpeg(base: bytes, n: int) -> bytes:
    """``base`` with a COM segment after SOI naming ``n``: other bytes, same pixels."""
    note = f"autodetect bench photo {n}".encode()
    return base[:2] + b"\xff\xfe" + (len(note) + 2).to_bytes(2, "big") + note + base[2:]


class PhotoServer:
    def __init__(self, photos: list[bytes]):
        self.photos = photos
        server_photos = photos

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body are separate writes: no delayed-ACK stall

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                m = _PHOTO.match(self.path)
                if not m:
                    self.send_error(404)
                    return
                n = int(m.group(1))
                body = unique_jpeg(server_photos[n % len(server_photos)], n)
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 256

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> PhotoServer:  # noqa: PYI034
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def tree_rss(pid: int) -> int:
    """RSS in bytes of ``pid`` and all its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    total, todo = 0, [pid]
    page = os.sysconf("SC_PAGE_SIZE")
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/statm") as fh:
                total += int(fh.read().split()[1]) * page
        except OSError:
            continue
        todo += children.get(p, [])
    return total


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by ``pid`` and its descendants that are still alive."""
    tick = os.sysconf("SC_CLK_TCK")
    total, todo, seen = 0.0, [pid], set()
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    children.setdefault(int(fh.read().rsplit(")", 1)[1].split()[1]), []).append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            with open(f"/proc/{p}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError, ValueError):
            continue
        todo += children.get(p, [])
    return total


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--photos", type=int, default=5000)
    p.add_argument("--concurrency", type=int, default=None, help="threads (default: the queue's declared)")
    p.add_argument("--distinct", type=int, default=200, help="distinct rendered photos behind the URLs")
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--timeout", type=float, default=300.0)
    p.add_argument("--no-reference", dest="reference", action="store_false",
                   help="skip the reference run with one photo per message")
    p.add_argument("--pg", default=os.environ.get("AUTODETECT_BENCH_PG",
                                                  "postgresql+psycopg2://postgres:postgres@127.0.0.1:5432/postgres"))
    p.add_argument("--redis", default=os.environ.get("AUTODETECT_BENCH_REDIS", "redis://127.0.0.1:6379"))
    args = p.parse_args()

    t0 = time.perf_counter()
    photos = photo_set(args.distinct, args.seed)
    sizes = sorted(len(b) for b in photos)
    print(f"rendered {len(photos)} distinct sandbox photos in {time.perf_counter() - t0:.1f}s "
          f"(median {sizes[len(sizes) // 2] / 1024:.1f} KiB)")
    default_batch = Settings().download_batch_size
    runs = [("batched", default_batch)] + ([("one per message", 1)] if args.reference else [])
    results = []
    with PhotoServer(photos) as server:
        for label, batch in runs:
            r = run_once(args, server, batch)
            results.append((label, batch, r))
            print(f"  {label}: {r['rate']:.0f} photos/s", flush=True)

    print()
    print(f"{args.photos} photos through one download worker ({results[0][2]['concurrency']} threads, "
          f"prefetch multiplier {results[0][2]['prefetch']}); machine load average before each run shown")
    print(f"{'messages':>22s} {'photos/msg':>10s} {'photos/s':>9s} {'steady':>7s} {'CPU ms/photo':>12s} "
          f"{'peak RSS MiB':>12s} {'failed':>6s} {'load':>5s}")
    for label, batch, r in results:
        print(f"{label:>22s} {batch:10d} {r['rate']:9.0f} {r['steady']:7.0f} {r['cpu_ms']:12.2f} "
              f"{r['peak_mib']:12.0f} {r['failed']:6d} {r['load']:5.1f}")
    if len(results) > 1:
        print(f"batched vs one photo per message: {results[0][2]['rate'] / results[1][2]['rate']:.2f}x photos/s, "
              f"{results[1][2]['cpu_ms'] / results[0][2]['cpu_ms']:.2f}x less CPU per photo")
    best = results[0][2]
    ok = best["failed"] == 0 and best["done"] == args.photos and best["rate"] >= GOAL_PER_S
    print(f"goal >= {GOAL_PER_S:.0f} photos/s (batched, the default): {best['rate']:.0f} -> {'MET' if ok else 'NOT MET'}")
    return 0 if ok else 1


def run_once(args, server: PhotoServer, batch: int) -> dict:
    """One measured run on a fresh database, Redis database and image store."""
    tmp = Path(tempfile.mkdtemp(prefix="autodetect-bench-dl-"))
    worker = None
    try:
        with scratch_postgres(args.pg) as db_url, empty_redis_db(args.redis) as broker:
            host = f"127.0.0.1:{server.port}"
            values = {"data_dir": str(tmp / "data"), "database_url": db_url, "broker_url": broker,
                      "download_allow_hosts": f'["{host}"]', "download_batch_size": str(batch)}
            settings = configure(**{**values, "download_allow_hosts": [host], "download_batch_size": batch})
            upgrade(settings)
            eng = engine_for(db_url)
            with eng.begin() as conn:
                conn.execute(text("INSERT INTO listings (id, source, external_id, title, status, issues, first_seen, "
                                  "last_seen, last_crawl, raw, label_method, label_confidence) VALUES (1, 'bench', "
                                  "'1', 'bench', 'active', '[]', now(), now(), 0, '{}', 'unknown', 0)"))
            raw = eng.raw_connection()
            try:
                buf = io.StringIO("".join(f"1\t{n}\thttp://{host}/p/{n}.jpg\tdownload\tpending\t0\t2025-01-01\tf\n"
                                          for n in range(args.photos)))
                raw.cursor().copy_expert("COPY images (listing_id, position, url, stage, state, attempts, "
                                         "updated_at, label_conflict) FROM STDIN", buf)
                raw.commit()
            finally:
                raw.close()
            with eng.connect() as conn:
                ids = conn.execute(text("SELECT id FROM images ORDER BY id")).scalars().all()

            from workers.dispatch import dispatch
            from workers.queues import queue_specs

            # The backlog first: the pipeline's own dispatcher, from 8 threads (each message is a round
            # trip to Redis, so one thread waits on the network most of the time).
            started = time.perf_counter()
            chunks = [ids[k::8] for k in range(8)]
            senders = [threading.Thread(target=dispatch, args=("download", chunk)) for chunk in chunks]
            for t in senders:
                t.start()
            for t in senders:
                t.join()
            sent = time.perf_counter() - started
            messages = sum(-(-len(chunk) // batch) for chunk in chunks)

            spec = queue_specs(settings)["download"]
            concurrency = args.concurrency or spec.concurrency
            env = {k: v for k, v in os.environ.items() if not k.startswith("AUTODETECT_")}
            env.update({f"AUTODETECT_{k.upper()}": v for k, v in values.items()})
            env["PYTHONPATH"] = str(ROOT)
            log = open(tmp / "worker.log", "wb")  # noqa: SIM115
            cmd = [sys.executable, "-m", "celery", "-A", "workers", "worker", "-Q", "download", "-P", "threads",
                   "-c", str(concurrency), "--prefetch-multiplier", str(spec.prefetch), "-n", "download@bench",
                   "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "INFO"]
            print("worker:", " ".join(cmd[2:]))
            worker = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                      start_new_session=True)
            peak = [0]
            stop = threading.Event()

            def sample() -> None:
                while not stop.is_set():
                    peak[0] = max(peak[0], tree_rss(worker.pid))
                    stop.wait(0.05)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            deadline = time.monotonic() + 120
            while b"ready." not in (tmp / "worker.log").read_bytes():  # the clock starts when it consumes
                if worker.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("worker did not start:\n" + (tmp / "worker.log").read_text()[-3000:])
                time.sleep(0.01)
            started = time.perf_counter()
            ready_rss = tree_rss(worker.pid)
            ready_cpu = tree_cpu(worker.pid)
            load_before = os.getloadavg()[0]
            marks: dict[float, float] = {}
            done = failed = 0
            count = text("SELECT count(*) FILTER (WHERE stage <> 'download'), count(*) FILTER (WHERE state = 'failed') "
                         "FROM images")
            while True:
                with eng.connect() as conn:
                    done, failed = conn.execute(count).one()
                now = time.perf_counter() - started
                for frac in (0.1, 0.9):
                    if frac not in marks and done >= frac * args.photos:
                        marks[frac] = now
                if done + failed >= args.photos or now > args.timeout:
                    break
                time.sleep(0.05)
            elapsed = time.perf_counter() - started
            worker_cpu = tree_cpu(worker.pid) - ready_cpu
            load_after = os.getloadavg()[0]
            stop.set()
            sampler.join()
            with eng.connect() as conn:
                queued_dedup = conn.execute(text("SELECT count(*) FROM images WHERE stage = 'dedup'")).scalar()
                errors = conn.execute(text("SELECT error, count(*) FROM images WHERE state = 'failed' GROUP BY error")).all()
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(timeout=30)
            worker = None
    finally:
        if worker is not None and worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
        shutil.rmtree(tmp, ignore_errors=True)

    steady = (0.8 * args.photos) / (marks[0.9] - marks[0.1]) if 0.1 in marks and 0.9 in marks else float("nan")
    if errors:
        print(f"  failures: {errors}")
    print(f"  {messages} messages dispatched in {sent:.2f}s; worker RSS {ready_rss / 2**20:.0f} MiB when ready; "
          f"{queued_dedup} rows waiting for dedup; load average {load_before:.1f} -> {load_after:.1f}")
    return {"rate": done / elapsed, "steady": steady, "done": done, "failed": failed, "elapsed": elapsed,
            "cpu_ms": worker_cpu / max(1, done) * 1000, "peak_mib": peak[0] / 2**20, "load": load_before,
            "concurrency": concurrency, "prefetch": spec.prefetch, "messages": messages}


if __name__ == "__main__":
    sys.exit(main())
