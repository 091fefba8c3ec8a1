"""Latency of ``POST /identify`` under load, beside the model's own time per photo.

Starts the app with uvicorn on 127.0.0.1 (a separate process, one worker), sends phone-sized sandbox photos
from N concurrent clients (default 20) for a bounded time and count, and prints p50/p95/p99 latency and
requests/s; in the same run it loads the same model version in this process and times it alone on the same
photos (decode + model, and the model call only).

    python benchmarks/api_latency.py                      # a tiny model and catalogue, made here (~30 s)
    python benchmarks/api_latency.py --data-dir autodetect-data   # an existing install (e.g. after `autodetect demo`)

The tiny setup reuses the API tests' helpers (``tests/unit/test_api_support.py``): a compact CNN at 40 px
trained for a few seconds on sandbox photos, and ~100 listings.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def tiny_setup(workdir: Path) -> Path:
    sys.path.insert(0, str(ROOT / "tests" / "unit"))
    import test_api_support as sup

    from autodetect.db import upgrade
    from autodetect.settings import Settings

    data_dir = workdir / "data"
    data_dir.mkdir(parents=True)
    t0 = time.perf_counter()
    sup.make_training_photos(workdir / "photos")
    info = sup.train_bundle(workdir / "photos", workdir / "bundle")
    settings = Settings(data_dir=data_dir, database_url="")
    upgrade(settings)
    sup.build_catalogue(settings, sup.catalogue_specs(), workdir / "bundle")
    print(f"tiny setup: model trained in {info['seconds']} s, catalogue built; {time.perf_counter() - t0:.1f} s in all")
    return data_dir


def phone_photos(n: int, size: tuple[int, int]) -> list[bytes]:
    """Sandbox photos rendered at a phone-like size, as JPEG uploads."""
    from autodetect.sandbox.cars import CARS
    from autodetect.sandbox.render import render_car

    out = []
    for i in range(n):
        img = render_car(CARS[i % 10], np.random.default_rng(90_000 + i), size=size)
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def model_alone(data_dir: Path, photos: list[bytes], repeat: int) -> dict[str, float]:
    """The active version loaded as the API loads it; per-photo ms for decode+model and the model call alone."""
    from autodetect.serving.routes.identify import decode_for_model as _decode_for_model
    from autodetect.db import session_scope
    from autodetect.serving.identify import rank
    from autodetect.model.provider import ModelProvider
    from autodetect.model.runtime import load_image
    from autodetect.settings import Settings

    settings = Settings(data_dir=data_dir)
    with session_scope(settings) as s:
        model = ModelProvider(settings).get(s)
    if model is None:
        raise SystemExit(f"no active model version in {data_dir}")
    jpegs = [_decode_for_model(settings, p) for p in photos]
    arrays = [load_image(j, model.image_size)[None] for j in jpegs]
    model.predict(arrays[0])  # warm up
    full, only = [], []
    for _ in range(repeat):
        for raw, arr in zip(photos, arrays):
            t0 = time.perf_counter()
            rank(model, [_decode_for_model(settings, raw)], 3)
            full.append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            model.predict(arr)
            only.append((time.perf_counter() - t0) * 1000)
    return {"model": model.name, "image_size": model.image_size, "decode_and_model_ms": statistics.median(full),
            "model_only_ms": statistics.median(only)}


def start_server(data_dir: Path, port: int) -> subprocess.Popen:
    env = {**os.environ, "AUTODETECT_DATA_DIR": str(data_dir), "AUTODETECT_DATABASE_URL": "",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "autodetect.serving.app:app", "--host", "127.0.0.1", "--port", str(port),
         "--log-level", "warning", "--no-access-log"], env=env, cwd=ROOT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"uvicorn exited with {proc.returncode}")
        try:
            if requests.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except requests.RequestException:
            time.sleep(0.2)
    proc.terminate()
    raise SystemExit("uvicorn did not answer /health within 60 s")


def load(url: str, photos: list[bytes], clients: int, seconds: float, max_requests: int, form: dict) -> dict:
    latencies: list[float] = []
    server_model: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    counter = iter(range(max_requests))
    deadline = time.monotonic() + seconds

    def client(k: int) -> None:
        session = requests.Session()
        while time.monotonic() < deadline:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            photo = photos[(i + k) % len(photos)]
            t0 = time.perf_counter()
            try:
                r = session.post(f"{url}/identify", files={"photo": ("car.jpg", photo, "image/jpeg")}, data=form,
                                 timeout=60)
                ms = (time.perf_counter() - t0) * 1000
                with lock:
                    if r.status_code == 200:
                        latencies.append(ms)
                        server_model.append(r.json()["timing_ms"]["model"])
                    else:
                        errors.append(f"{r.status_code} {r.text[:100]}")
            except requests.RequestException as exc:
                with lock:
                    errors.append(str(exc)[:100])

    # warm up: the server loads the model on its first identification
    requests.post(f"{url}/identify", files={"photo": ("car.jpg", photos[0], "image/jpeg")}, data=form, timeout=60)
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {
        "requests": len(latencies), "errors": len(errors), "first_errors": errors[:3], "seconds": round(wall, 2),
        "requests_per_s": round(len(latencies) / wall, 2) if wall else 0.0,
        "p50_ms": round(percentile(latencies, 50), 1), "p95_ms": round(percentile(latencies, 95), 1),
        "p99_ms": round(percentile(latencies, 99), 1), "max_ms": round(max(latencies, default=float("nan")), 1),
        "server_model_p50_ms": round(percentile(server_model, 50), 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, help="an install with an active model (default: a tiny one made here)")
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=20.0, help="stop after this long...")
    ap.add_argument("--requests", type=int, default=1000, help="...or after this many requests")
    ap.add_argument("--photos", type=int, default=20)
    ap.add_argument("--photo-size", default="1600x1200", help="width x height of the uploads")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--no-location", action="store_true", help="identify without a location")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()

    width, height = (int(v) for v in args.photo_size.lower().split("x"))
    with tempfile.TemporaryDirectory(prefix="autodetect-bench-") as tmp:
        data_dir = args.data_dir.resolve() if args.data_dir else tiny_setup(Path(tmp))
        photos = phone_photos(args.photos, (width, height))
        alone = model_alone(data_dir, photos, repeat=3)
        port = args.port or _free_port()
        form = {} if args.no_location else {"lat": "40.7128", "lon": "-74.0060", "radius_km": "250"}
        server = start_server(data_dir, port)
        try:
            result = load(f"http://127.0.0.1:{port}", photos, args.clients, args.seconds, args.requests, form)
        finally:
            server.terminate()
            server.wait(10)

    mean_kb = sum(map(len, photos)) / len(photos) / 1024
    print()
    print(f"POST /identify: {args.clients} concurrent clients, {result['requests']} requests in "
          f"{result['seconds']} s, {result['errors']} errors; uploads {width}x{height} JPEG, {mean_kb:.0f} kB mean; "
          f"{'no location' if args.no_location else 'with a location (250 km)'}; {os.cpu_count()} CPUs")
    rows = [
        ("latency p50", f"{result['p50_ms']:.1f} ms"),
        ("latency p95", f"{result['p95_ms']:.1f} ms"),
        ("latency p99", f"{result['p99_ms']:.1f} ms"),
        ("throughput", f"{result['requests_per_s']:.1f} requests/s"),
        (f"model {alone['model']} alone ({alone['image_size']} px), per photo", f"{alone['model_only_ms']:.2f} ms"),
        ("upload decode + normalize + rank alone, per photo", f"{alone['decode_and_model_ms']:.2f} ms"),
        ("rank step (JPEG -> model input -> model) in the server under load, p50",
         f"{result['server_model_p50_ms']:.2f} ms"),
    ]
    width_col = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"  {k:<{width_col}}  {v:>16}")
    if result["first_errors"]:
        print("  first errors:", result["first_errors"])
    if args.json:
        args.json.write_text(json.dumps({"clients": args.clients, "photo_size": [width, height], **result, **alone},
                                        indent=2))


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


if __name__ == "__main__":
    main()
