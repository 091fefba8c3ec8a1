"""Inference throughput: the serving model alone, the inference queue, Keras, memory, end to end.

    .venv/bin/python benchmarks/inference_throughput.py                      # everything, ~6-10 min
    .venv/bin/python benchmarks/inference_throughput.py --no-formats --e2e-listings 0   # the core numbers

In ONE run on this machine:

1. **raw**: the serving model's photos/s at batch ``--batch`` in one process (``ServingModel.predict`` on
   images in memory), loaded exactly as the worker loads it (``provider.load_serving_model``: the
   measured-faster format, one thread per core). InceptionV3 at 224 px with RANDOM weights (no ImageNet
   download here; speed does not depend on the weights), 100 classes, exported to int8 dynamic-range
   LiteRT.
2. **queue**: steady-state photos/s through real Celery: a separate ``celery -A workers worker -Q
   inference -P prefork -c 1`` process, Redis, PostgreSQL (a scratch database, dropped afterwards),
   pre-normalized JPEGs on disk (at the model's input size, ``--photo-side``), one message per batch of
   ``--batch``. In tranches of ``--tranche`` batches (after a one-batch warm-up that loads the model):
   each tranche's pending rows are inserted in bulk (3 photos per listing), its messages sent, and
   after it drained the raw model runs for as long in the benchmark process. A tranche's steady state
   is the photos of its batches 2..n over the time from its first batch's commit to its last (the
   worker stamps each batch). The machine is shared and its load changes by the minute, so the goal is
   judged on the median over tranches of (tranche / mean of the raw windows just before and after it);
   the all-tranches ratio is printed too.
3. **keras**: ``keras.Model.predict`` of the same InceptionV3 (float32) at the same batch, in four
   windows alternating with the serving model; the goal is judged on the median of the four ratios.
4. **memory**: peak RSS of the inference worker's process tree (parent + child, sampled every 50 ms,
   shared pages counted in each process, so an upper bound), and the child's own peak.
5. **e2e**: listings/s from ``discovery.crawl`` to every crawled listing with photos tagged, against the
   sandbox marketplace (``autodetect.sandbox``) on loopback, with all five queues as separate worker
   processes (as tests/integration/conftest.py starts them), the InceptionV3 version active. Beside it,
   the model-only limit: raw photos/s divided by the unique photos predicted per listing.
6. **formats** (``--formats``, default on): LiteRT int8 vs ONNX Runtime (float32, tf2onnx) photos/s at
   the batch size, on the same threads, for inception_v3, mobilenet_v3_small and compact_cnn: the basis
   of ``provider.MEASURED_FASTEST``.

Models are built and exported once into ``--work`` (reused by later runs). The machine is shared: read
the ratios, which are measured within one run. Exit status 1 when a goal is missed.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
from sqlalchemy import func, insert, select

from scratch import scratch_postgres, worker_env  # noqa: E402
from autodetect.storage import utcnow

GOALS = {"queue_ratio": 0.90, "keras_speedup": 3.0, "worker_rss_mb": 500.0}
NUM_CLASSES = 100


# --- models --------------------------------------------------------------------------------------
def ensure_bundle(work: Path, backbone: str, size: int, formats: tuple[str, ...]) -> Path:
    """``work/models/<backbone>-<size>``: model.keras + the requested serving files + labels.json."""
    from autodetect.model.bundle import FILES, save_labels

    directory = work / "models" / f"{backbone}-{size}"
    directory.mkdir(parents=True, exist_ok=True)
    keras_path = directory / FILES["keras"]
    if not keras_path.exists():
        from autodetect.model.backbones import build_classifier

        print(f"building {backbone} at {size} px (random weights) ...", flush=True)
        build_classifier(backbone, NUM_CLASSES, size, weights="none").save(keras_path)
    for fmt in formats:
        if not (directory / FILES[fmt]).exists():
            from autodetect.model.export import export_onnx, export_tflite

            print(f"exporting {backbone} to {fmt} ...", flush=True)
            t = time.perf_counter()
            if fmt == "tflite":
                export_tflite(keras_path, directory / FILES[fmt], quantize="dynamic")
            else:
                _quiet(export_onnx, keras_path, directory / FILES[fmt])
            print(f"  {time.perf_counter() - t:.0f} s", flush=True)
    save_labels(directory, [f"class {i:03d}" for i in range(NUM_CLASSES)], backbone=backbone, image_size=size)
    return directory


def _quiet(fn, *args):
    """tf2onnx's optimizer prints recoverable tracebacks; keep them out of the report."""
    import logging

    level = logging.getLogger("tf2onnx").level
    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    try:
        return fn(*args)
    finally:
        logging.getLogger("tf2onnx").setLevel(level)


def throughput(predict, batch: np.ndarray, seconds: float) -> float:
    """photos/s of ``predict(batch)`` over about ``seconds`` (after one warm-up call)."""
    predict(batch)
    n, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds or n == 0:
        predict(batch)
        n += len(batch)
    return n / (time.perf_counter() - started)


def random_batch(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def version_row(bundle: Path, name: str = "v1", directory: str | None = None):
    from autodetect.storage import ModelVersion

    info = json.loads((bundle / "labels.json").read_text())
    return ModelVersion(name=name, backbone=info["backbone"], image_size=info["image_size"], classes=info["classes"],
                        metrics={}, artifacts={"dir": directory or f"models/{name}"}, status="active",
                        promoted_at=utcnow())


def install_version(settings, bundle: Path) -> None:
    """The bundle's serving files as the active version ``v1`` of ``settings``' database."""
    from autodetect.db import session_scope

    target = settings.data_dir / "models" / "v1"
    target.mkdir(parents=True, exist_ok=True)
    for name in ("labels.json", "model.tflite", "model.onnx"):
        if (bundle / name).exists():
            shutil.copyfile(bundle / name, target / name)
    with session_scope(settings) as s:
        s.add(version_row(bundle))


def serving_model(settings, bundle: Path):
    """The serving model exactly as a worker loads it."""
    from autodetect.model.provider import load_serving_model

    return load_serving_model(settings, version_row(bundle, directory=str(bundle.relative_to(settings.data_dir))))


# --- infrastructure ------------------------------------------------------------------------------
def spawn_worker(queue: str, env: dict, logs: Path, *, pool: str, concurrency: int, prefetch: int = 1,
                 level: str = "WARNING"):
    log = open(logs / f"{queue}.log", "wb")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "workers", "worker", "-Q", queue, "-P", pool, "-c", str(concurrency),
         "--prefetch-multiplier", str(prefetch), "-n", f"{queue}@bench", "-l", level, "--without-gossip",
         "--without-mingle", "--without-heartbeat"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def stop(procs) -> None:
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            tree.setdefault(ppid, []).append(int(entry))
    return tree


def _status_kb(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class MemorySampler(threading.Thread):
    """Peak RSS of a process tree (sum) and of its largest process, sampled every ``interval`` s."""

    def __init__(self, pid: int, interval: float = 0.05):
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak_tree_kb = self.peak_proc_kb = self.processes = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            tree, pids, todo = _children(), [], [self.pid]
            while todo:
                pid = todo.pop()
                pids.append(pid)
                todo += tree.get(pid, [])
            rss = [_status_kb(p, "VmRSS") for p in pids]
            self.peak_tree_kb = max(self.peak_tree_kb, sum(rss))
            self.peak_proc_kb = max(self.peak_proc_kb, max(rss, default=0))
            self.processes = max(self.processes, len(pids))
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join()


def jpeg_photos(n: int, side: int, seed: int = 0) -> list[bytes]:
    """Smooth synthetic photos (upsampled noise plus grain), JPEG quality 90: compress like photos do."""
    from PIL import Image as PILImage

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        small = PILImage.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).resize((side, side),
                                                                                           PILImage.BICUBIC)
        a = np.clip(np.asarray(small, np.int16) + rng.integers(-12, 12, (side, side, 3)), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        PILImage.fromarray(a).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def wait_until(predicate, timeout: float, what: str, procs=(), poll: float = 0.25):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        for p in procs:
            if p.poll() is not None:
                raise RuntimeError(f"a worker exited ({p.returncode}) while waiting for {what}")
        time.sleep(poll)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


# --- the measurements ----------------------------------------------------------------------------
def measure_queue(args, bundle: Path, work: Path, served, x: np.ndarray) -> dict:
    """Tranches of ``--tranche`` batches: insert the tranche's pending rows in bulk, send one message per
    batch, wait until predicted; then measure the raw model for as long as the tranche took. The raw
    and queue windows alternate, so both see the same (shared) machine."""
    from autodetect.db import session_scope, upgrade
    from autodetect.images.store import ImageStore
    from autodetect.settings import configure
    from autodetect.storage import Image, Listing, Prediction

    with scratch_postgres(args.pg) as url:
        data = work / "queue-data"
        shutil.rmtree(data, ignore_errors=True)
        values = {"data_dir": str(data), "database_url": url, "broker_url": args.redis_queue,
                  "inference_batch_size": args.batch, "inference_batch_wait_s": 0.2, "stale_after_s": 3600,
                  "inference_threads": args.threads}
        settings = configure(**values)
        upgrade(settings)
        install_version(settings, bundle)
        store = ImageStore(data / "images", fsync=False)
        keys = [store.put(b, kind="normalized", ext="jpg").key for b in jpeg_photos(64, args.photo_side)]
        per_listing, per_tranche = 3, args.tranche * args.batch
        tranches = max(1, -(-args.photos // per_tranche))
        # Tranche 0 is one batch: it loads the model in the worker (the first message) and warms it up.
        sizes = [args.batch] + [per_tranche] * tranches
        import redis

        redis.Redis.from_url(args.redis_queue).flushdb()
        logs = work / "logs"
        logs.mkdir(exist_ok=True)
        worker = spawn_worker("inference", worker_env(values), logs, pool="prefork", concurrency=1, level="INFO")
        sampler = MemorySampler(worker.pid)
        sampler.start()
        from workers.app import make_app

        app = make_app()
        raw_photos, raw_seconds, sent, raw_windows = 0, 0.0, [], []
        try:
            wait_until(lambda: app.control.ping(timeout=0.5), 90, "the inference worker", [worker], poll=0.1)
            first = 0
            for t, size in enumerate(sizes):
                with session_scope(settings) as s:  # this tranche's rows, in bulk
                    s.execute(insert(Listing), [
                        {"id": i + 1, "source": "bench", "external_id": str(i), "title": f"car {i}", "issues": [],
                         "raw": {}} for i in range(-(-first // per_listing), -(-(first + size) // per_listing))])
                    s.execute(insert(Image), [
                        {"listing_id": i // per_listing + 1, "position": i % per_listing, "url": f"http://bench/{i}.jpg",
                         "stage": "inference", "state": "pending", "normalized_key": keys[i % len(keys)]}
                        for i in range(first, first + size)])
                    ids = list(s.scalars(select(Image.id).where(Image.state == "pending").order_by(Image.id)))
                sent.append(utcnow())
                with app.producer_or_acquire() as producer:
                    for i in ids[:: args.batch]:  # what workers.dispatch sends: one message per batch
                        app.send_task("inference.predict", args=(i,), producer=producer)

                first += size

                def finished(target=first):
                    with session_scope(settings) as s:
                        return s.scalar(select(func.count()).select_from(Prediction)) >= target
                window = time.perf_counter()
                wait_until(finished, 1800, "the queue to drain", [worker], poll=0.25)
                window = time.perf_counter() - window if t else args.seconds
                started, n = time.perf_counter(), 0
                while time.perf_counter() - started < window:  # the raw model, for as long
                    served.predict(x)
                    n += len(x)
                raw_windows.append(n / (time.perf_counter() - started))
                if t:
                    raw_photos += n
                    raw_seconds += time.perf_counter() - started
        finally:
            stop([worker])
            sampler.stop()
            app.close()
        with session_scope(settings) as s:
            batches = s.execute(select(Prediction.created_at, func.count()).group_by(Prediction.created_at)
                                .order_by(Prediction.created_at)).all()
            left = s.scalar(select(func.count()).select_from(Image).where(Image.state != "done"))
        from autodetect.db import engine_for

        engine_for(url).dispose()
    # Steady state per tranche: the photos of its batches 2..n over the time from its first batch's
    # commit to its last's (the first tranche's first batch also loads the model).
    # Each tranche is also paired with the raw windows just before and after it (the machine's load
    # changes by the minute): the median of those ratios is the robust figure.
    photos, seconds, pairs = 0, 0.0, []
    bounds = sent[1:] + [datetime.max]
    for i, (lo, hi) in enumerate(list(zip(sent, bounds))[1:], start=1):
        mine = [(t, n) for t, n in batches if lo <= t < hi]
        if len(mine) > 1:
            p, sec = sum(n for _, n in mine[1:]), (mine[-1][0] - mine[0][0]).total_seconds()
            photos, seconds = photos + p, seconds + sec
            pairs.append((p / sec, (raw_windows[i - 1] + raw_windows[i]) / 2))
    cold = (batches[0][0] - sent[0]).total_seconds()
    tasks = [r for r in _task_results(logs / "inference.log")[1:] if r.get("batches")]  # after the warm-up
    model_s = sum(r.get("seconds", {}).get("model", 0.0) for r in tasks)
    predicted = sum(r.get("predicted", 0) for r in tasks)
    ratios = sorted(q / r for q, r in pairs)
    return {"photos": tranches * per_tranche, "tranches": tranches, "batches": len(batches) - 1,
            "pairs": [(round(q, 1), round(r, 1)) for q, r in pairs],
            "median_ratio": (ratios[(len(ratios) - 1) // 2] + ratios[len(ratios) // 2]) / 2 if ratios else None,
            "batch_sizes": sorted({n for _, n in batches}), "steady": photos / seconds, "cold": cold,
            "raw": raw_photos / raw_seconds, "not_done": left, "tasks": len(tasks),
            "model_share": model_s / sum(r["_wall"] for r in tasks) if tasks else None,
            "in_worker_model_rate": predicted / model_s if model_s else None,
            "rss_tree_mb": sampler.peak_tree_kb / 1024, "rss_child_mb": sampler.peak_proc_kb / 1024,
            "processes": sampler.processes}


def _task_results(log: Path) -> list[dict]:
    """The return values of ``inference.predict`` tasks, from the worker's INFO log."""
    import ast
    import re

    out = []
    for m in re.finditer(r"Task inference\.predict\[[^\]]+\] succeeded in ([0-9.]+)s: (\{.*\})", log.read_text()):
        try:
            result = ast.literal_eval(m.group(2))
        except (ValueError, SyntaxError):
            continue
        result["_wall"] = float(m.group(1))
        out.append(result)
    return out


def measure_e2e(args, bundle: Path, work: Path) -> dict:
    from autodetect.db import engine_for, session_scope, upgrade
    from autodetect.sandbox.marketplace import Marketplace
    from autodetect.sandbox.server import SandboxServer
    from autodetect.settings import configure
    from autodetect.storage import Image, Listing, ListingPrediction, Prediction
    from workers.queues import QUEUE_NAMES, queue_specs

    market = Marketplace(listings=args.e2e_listings, models=10, seed=3)
    with SandboxServer(market) as server, scratch_postgres(args.pg) as url:
        data = work / "e2e-data"
        shutil.rmtree(data, ignore_errors=True)
        values = {"data_dir": str(data), "database_url": url, "broker_url": args.redis_e2e, "source": "sandbox",
                  "marketplace_url": server.url, "download_allow_hosts": [server.url.split("//")[1]],
                  "inference_batch_size": args.batch, "inference_batch_wait_s": 0.2, "inference_threads": args.threads,
                  "retrain_min_new_photos": 10**9, "retrain_min_new_share": 1000.0, "crawl_interval_s": 3600,
                  "stale_after_s": 120}
        settings = configure(**values)
        upgrade(settings)
        install_version(settings, bundle)
        import redis

        redis.Redis.from_url(args.redis_e2e).flushdb()
        logs = work / "logs-e2e"
        logs.mkdir(exist_ok=True)
        specs = queue_specs(settings)
        env = worker_env(values)
        procs = [spawn_worker(q, env, logs, pool=specs[q].pool, concurrency={"download": 8}.get(q, 1),
                              prefetch=specs[q].prefetch) for q in QUEUE_NAMES]
        from workers.app import make_app

        app = make_app()
        try:
            wait_until(lambda: len(app.control.ping(timeout=1.0)) >= len(QUEUE_NAMES), 120, "five workers", procs)
            started = utcnow()
            app.send_task("discovery.crawl")

            def settled():
                with session_scope(settings) as s:
                    listings = s.scalar(select(func.count()).select_from(Listing))
                    images = s.scalar(select(func.count()).select_from(Image))
                    busy = s.scalar(select(func.count()).select_from(Image).where(Image.state.in_(("pending", "running"))))
                    with_photos = s.scalar(select(func.count(func.distinct(Image.listing_id))).where(Image.state == "done"))
                    tagged = s.scalar(select(func.count()).select_from(ListingPrediction))
                return listings >= len(market) and images > 0 and busy == 0 and tagged == with_photos
            wait_until(settled, 1800, "the pipeline to settle", procs, poll=0.5)
        finally:
            stop(procs)
            app.close()
        with session_scope(settings) as s:
            end = s.scalar(select(func.max(ListingPrediction.updated_at)))
            tagged = s.scalar(select(func.count()).select_from(ListingPrediction))
            predictions = s.scalar(select(func.count()).select_from(Prediction))
            photos = s.scalar(select(func.count()).select_from(Image))
            failed = s.scalar(select(func.count()).select_from(Image).where(Image.state == "failed"))
        engine_for(url).dispose()
    seconds = (end - started).total_seconds()
    return {"listings": len(market), "tagged": tagged, "photos": photos, "predictions": predictions, "failed": failed,
            "seconds": seconds, "rate": tagged / seconds, "photos_per_listing": predictions / max(1, tagged)}


def compare_formats(args, work: Path) -> list[dict]:
    from autodetect.model.provider import serving_threads
    from autodetect.model.runtime import ServingModel
    from autodetect.settings import configure

    threads = serving_threads(configure(data_dir=work, inference_threads=args.threads))  # the same for both

    rows = []
    for backbone, size in (("inception_v3", 224), ("mobilenet_v3_small", 224), ("compact_cnn", 64)):
        bundle = ensure_bundle(work, backbone, size, ("tflite", "onnx"))
        x = random_batch(args.batch, size, seed=2)
        rates: dict[str, list[float]] = {"tflite": [], "onnx": []}
        for _ in range(2):  # alternate, so that both see the same machine
            for fmt in ("tflite", "onnx"):
                model = ServingModel.load(bundle / f"model.{fmt}", num_threads=threads)
                rates[fmt].append(throughput(model.predict, x, args.seconds / 2))
                del model
        lite, onnx = (sum(v) / len(v) for v in rates.values())
        rows.append({"backbone": backbone, "size": size, "tflite": lite, "onnx": onnx,
                     "faster": "tflite" if lite >= onnx else "onnx",
                     "tflite_mb": (bundle / "model.tflite").stat().st_size / 2**20,
                     "onnx_mb": (bundle / "model.onnx").stat().st_size / 2**20})
    return rows


def decode_cost(side: int, size: int, n: int = 64) -> float:
    """ms per photo for ``runtime.load_image`` of a ``side``-px JPEG to ``size`` px."""
    from autodetect.model.runtime import load_image

    photos = jpeg_photos(n, side, seed=5)
    load_image(photos[0], size)
    started = time.perf_counter()
    for p in photos:
        load_image(p, size)
    return (time.perf_counter() - started) / n * 1000


# --- main ----------------------------------------------------------------------------------------
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--photos", type=int, default=1536, help="pending rows for the queue run, in all")
    parser.add_argument("--tranche", type=int, default=6, help="batches per queue tranche")
    parser.add_argument("--photo-side", type=int, default=224, help="side of the pre-normalized JPEGs")
    parser.add_argument("--seconds", type=float, default=12.0, help="per raw/Keras measurement")
    parser.add_argument("--threads", type=int, default=0, help="inference_threads (0: the runtime's default)")
    parser.add_argument("--e2e-listings", type=int, default=150, help="0: skip the end-to-end run")
    parser.add_argument("--formats", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--pg", default="postgresql+psycopg2://postgres:postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--redis-queue", default="redis://127.0.0.1:6379/13")
    parser.add_argument("--redis-e2e", default="redis://127.0.0.1:6379/14")
    parser.add_argument("--work", type=Path, default=Path("/tmp/autodetect-bench-inference"))
    args = parser.parse_args()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    from autodetect.settings import configure

    started = time.perf_counter()
    bundle = ensure_bundle(work, "inception_v3", 224, ("tflite",))
    settings = configure(data_dir=work, inference_threads=args.threads, inference_batch_size=args.batch)
    served = serving_model(settings, bundle)
    x = random_batch(args.batch, 224)

    import keras

    kmodel = keras.models.load_model(bundle / "model.keras", compile=False)

    def keras_predict(b: np.ndarray) -> np.ndarray:
        return kmodel.predict(b.astype(np.float32), batch_size=args.batch, verbose=0)

    keras_rates, raw_rates = [], []
    for _ in range(4):  # alternate Keras and the serving runtime: both see the same machine
        keras_rates.append(throughput(keras_predict, x, args.seconds / 4))
        raw_rates.append(throughput(served.predict, x, args.seconds / 4))
    keras_rate = sum(keras_rates) / len(keras_rates)
    speedups = sorted(r / k for k, r in zip(keras_rates, raw_rates))
    speedup_median = (speedups[1] + speedups[2]) / 2
    print(f"keras {keras_rates}  serving {raw_rates}", flush=True)

    queue = measure_queue(args, bundle, work, served, x)
    raw = queue["raw"]
    print(f"queue {queue}", flush=True)
    e2e = measure_e2e(args, bundle, work) if args.e2e_listings else None
    formats = compare_formats(args, work) if args.formats else []
    decode = {side: decode_cost(side, 224) for side in (224, 512)}

    rows: list[tuple[str, str, str, bool | None]] = []
    ratio = queue["steady"] / raw
    raw_k = sum(raw_rates) / len(raw_rates)
    speedup = raw_k / keras_rate
    rows.append((f"raw: serving model, {served.format} int8, batch {args.batch}, one process",
                 f"{raw:.1f} photos/s (windows between the queue's tranches)", "reference", None))
    rows.append(("queue: steady state, Celery prefork -c 1 + Redis + PostgreSQL, all tranches",
                 f"{queue['steady']:.1f} photos/s = {ratio:.0%} of raw", "(see the next row)", None))
    rows.append(("queue vs raw, per tranche against the raw windows around it: median",
                 f"{queue['median_ratio']:.0%} (queue, raw photos/s: "
                 + ", ".join(f"{q:.0f}/{r:.0f}" for q, r in queue["pairs"]) + ")",
                 f">= {GOALS['queue_ratio']:.0%}", queue["median_ratio"] >= GOALS["queue_ratio"]))
    rows.append(("queue: first batch, from its message to its commit (the worker loads the model)",
                 f"{queue['cold']:.1f} s", "-", None))
    if queue["model_share"]:
        rows.append(("queue: the model's share of the worker's task time",
                     f"{queue['model_share']:.0%} ({queue['in_worker_model_rate']:.1f} photos/s while in the model)",
                     "-", None))
    rows.append(("Keras predict, float32, same batch, vs the serving model (4 alternating pairs of windows)",
                 f"{keras_rate:.1f} vs {raw_k:.1f} photos/s: {speedup:.1f}x; median of the pairs {speedup_median:.1f}x",
                 f">= {GOALS['keras_speedup']:.0f}x", speedup_median >= GOALS["keras_speedup"]))
    rows.append((f"inference worker peak RSS, process tree ({queue['processes']} processes)",
                 f"{queue['rss_tree_mb']:.0f} MB (largest process {queue['rss_child_mb']:.0f} MB)",
                 f"<= {GOALS['worker_rss_mb']:.0f} MB", queue["rss_tree_mb"] <= GOALS["worker_rss_mb"]))
    if e2e:
        limit = raw / e2e["photos_per_listing"]
        rows.append((f"end to end: {e2e['tagged']} sandbox listings, five queues",
                     f"{e2e['rate']:.2f} listings/s ({e2e['seconds']:.0f} s)",
                     f"model-only limit {limit:.2f} listings/s ({e2e['photos_per_listing']:.2f} photos/listing)", None))
    rows.append(("decode: runtime.load_image to 224 px, ms/photo",
                 f"{decode[224]:.2f} (224-px JPEG), {decode[512]:.2f} (512-px JPEG)", "-", None))

    print(f"\nInceptionV3 at 224 px, RANDOM weights (speed does not depend on them), {NUM_CLASSES} classes, "
          f"int8 dynamic-range LiteRT; {os.cpu_count()} CPUs (shared); {served.threads} model threads "
          f"(inference_threads={args.threads or 'default: the cores'}); "
          f"{queue['photos']} photos in {queue['batches']} batches (sizes {queue['batch_sizes']}, "
          f"{queue['tranches']} tranches after a warm-up batch; {queue['tasks']} of the messages found work, the "
          f"others none), "
          f"{args.photo_side}-px JPEGs; {queue['not_done']} rows not done\n")
    print("| measure | result | goal | |")
    print("|---|---|---|---|")
    ok = True
    for what, value, goal, met in rows:
        ok &= met is not False
        print(f"| {what} | {value} | {goal} | {'' if met is None else 'ok' if met else 'MISSED'} |")
    if e2e:
        print(f"\nend to end: {e2e['listings']} listings, {e2e['photos']} photos, {e2e['predictions']} predicted "
              f"(unique), {e2e['failed']} failed (the sandbox's bad input)")
    if formats:
        print(f"\nserving formats, photos/s at batch {args.batch} (LiteRT int8 dynamic-range vs ONNX Runtime float32)\n")
        print("| backbone | size | LiteRT | ONNX Runtime | faster | LiteRT MB | ONNX MB |")
        print("|---|---|---|---|---|---|---|")
        for r in formats:
            print(f"| {r['backbone']} | {r['size']} | {r['tflite']:.1f} | {r['onnx']:.1f} | {r['faster']} "
                  f"({max(r['tflite'], r['onnx']) / min(r['tflite'], r['onnx']):.1f}x) | {r['tflite_mb']:.1f} | "
                  f"{r['onnx_mb']:.1f} |")
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    (work / "results.json").write_text(json.dumps({"raw": raw, "raw_vs_keras": raw_rates,
                                                   "keras": keras_rate, "keras_windows": keras_rates, "speedup_median": speedup_median, "queue": queue, "e2e": e2e,
                                                   "formats": formats, "decode_ms": decode}, indent=2, default=str))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
