"""Helpers for the API tests and the web page test (no tests here): a tiny real model trained on sandbox
photos, a catalogue of listings written straight into SQLite, and uvicorn on loopback in a thread.

The model is a ``compact_cnn`` at 40 px trained for a fixed number of epochs in a subprocess (TensorFlow
stays out of the test process, as it stays out of the API), exported to LiteRT and registered as the
active ``ModelVersion``. Run as a script it trains: ``python test_api_support.py PHOTOS_DIR BUNDLE_DIR``.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import random
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import numpy as np

#: Five bodies that look different (pickup, hatchback, coupe, sedan, SUV): top-3 of five means something.
CLASSES = sorted(["Ford F-150", "Volkswagen Golf", "Audi TT", "Toyota Camry", "Jeep Wrangler"])
#: A class in the catalogue that no listing offers.
EMPTY_CLASS = "Porsche 911"
IMAGE_SIZE = 40
PHOTOS_PER_CLASS = 36
EPOCHS = 12

#: Where the person stands in the tests: New York.
HOME = (40.7128, -74.0060)
#: lat, lon of sandbox cities (autodetect/sandbox/locations.py) used for listings.
CITIES = {
    "New York": ("10001", 40.7128, -74.0060),
    "Philadelphia": ("19107", 39.9526, -75.1652),
    "Baltimore": ("21202", 39.2904, -76.6122),
    "Boston": ("02108", 42.3601, -71.0589),
    "Chicago": ("60601", 41.8781, -87.6298),
    "Los Angeles": ("90012", 34.0522, -118.2437),
}


def sandbox_photo(class_name: str, seed: int):
    """One synthetic listing photo of ``class_name`` (a PIL image), as the sandbox marketplace draws them."""
    from autodetect.sandbox.cars import spec_for
    from autodetect.sandbox.render import render_car

    return render_car(spec_for(class_name), np.random.default_rng(seed))


def make_training_photos(root: Path) -> list[tuple[str, str]]:
    """JPEG files of sandbox photos, normalized like the pipeline stores them; ``[(path, class)]``."""
    from autodetect.images.decode import encode_jpeg, normalize

    root.mkdir(parents=True, exist_ok=True)
    out = []
    for c, name in enumerate(CLASSES):
        for i in range(PHOTOS_PER_CLASS):
            path = root / f"{c}-{i}.jpg"
            path.write_bytes(encode_jpeg(normalize(sandbox_photo(name, 1000 * c + i), 512)))
            out.append((str(path), name))
    return out


def train_bundle(photos_dir: Path, bundle_dir: Path) -> dict:
    """Train in a subprocess; returns what it printed (seconds, final accuracy)."""
    import os

    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, __file__, str(photos_dir), str(bundle_dir)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=root)
    if done.returncode != 0:
        raise RuntimeError(f"training the test model failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _train_main(photos_dir: str, bundle_dir: str) -> None:
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    t0 = time.monotonic()
    from autodetect.model.export import export_bundle
    from autodetect.model.split import Sample
    from autodetect.model.train import TrainConfig, train

    samples = [Sample(str(p), name, p.stem, p.stem)
               for p in sorted(Path(photos_dir).glob("*.jpg"))
               for name in [CLASSES[int(p.stem.split("-")[0])]]]
    config = TrainConfig(backbone="compact_cnn", image_size=IMAGE_SIZE, weights="none", epochs_head=EPOCHS,
                         epochs_finetune=0, batch_size=20, lr_head=3e-3, seed=3, augment=False, patience=EPOCHS)
    result = train(samples, [], CLASSES, config, Path(bundle_dir) / "run")
    export_bundle(result.keras_path, bundle_dir, CLASSES, "compact_cnn", formats=("tflite",))
    last = result.history[-1] if result.history else {}
    print(json.dumps({"seconds": round(time.monotonic() - t0, 1), "epochs": result.epochs_run,
                      "accuracy": last.get("accuracy")}))


_model_lock = threading.Lock()
_model_root: list[Path] = []


def tiny_model(tmp_path_factory) -> Path:
    """A directory with ``photos/`` (the training photos, ``{class index}-{i}.jpg``) and ``bundle/``
    (the trained model); made once per test process, shared by the API and web page tests."""
    with _model_lock:
        if not _model_root:
            root = tmp_path_factory.mktemp("api-model")
            make_training_photos(root / "photos")
            train_bundle(root / "photos", root / "bundle")
            _model_root.append(root)
        return _model_root[0]


def training_photo_path(root: Path, class_name: str, i: int = 0) -> Path:
    return root / "photos" / f"{CLASSES.index(class_name)}-{i}.jpg"


# --- the catalogue --------------------------------------------------------------------------------------
@dataclass
class Spec:
    """One listing as the tests write it, and as they compute expectations from it (not from the app)."""

    title: str
    label: str | None  # class name of the seller's label; None: unlabelled
    predicted: str | None  # listing-level prediction of the active version (for unlabelled listings)
    price: float | None
    currency: str | None
    year: int
    city: str | None  # None: no place at all
    coords: bool  # True: the listing has lat/lon; False: only its postal code
    status: str = "active"
    photo_seed: int | None = None
    id: int = 0

    def point(self) -> tuple[float, float] | None:
        if self.city is None:
            return None
        _, lat, lon = CITIES[self.city]
        return lat, lon


def haversine(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Written again here so the tests don't check offers.py against itself."""
    r = 6371.0088
    la1, lo1, la2, lo2 = map(math.radians, (*a, *b))
    h = math.sin((la2 - la1) / 2) ** 2 + math.cos(la1) * math.cos(la2) * math.sin((lo2 - lo1) / 2) ** 2
    return 2 * r * math.asin(math.sqrt(h))


def catalogue_specs(seed: int = 5) -> list[Spec]:
    """Per class: labelled listings in six cities, USD prices, a few EUR ones, one without a price,
    one ended, one unlabelled but predicted as the class, one with only a postal code, one without any place."""
    rng = random.Random(seed)
    specs: list[Spec] = []
    for c, name in enumerate(CLASSES):
        base = 12000 + 4000 * c
        for i in range(14):
            city = list(CITIES)[i % len(CITIES)]
            specs.append(Spec(f"{2012 + i % 4} {name} #{i}", name, None, float(base + rng.randrange(0, 9000, 50)),
                              "USD", 2012 + i % 4, city, coords=True, photo_seed=5000 + 100 * c + i))
        specs += [
            Spec(f"{name} in euros A", name, None, float(base + 111), "EUR", 2014, "New York", True),
            Spec(f"{name} in euros B", name, None, float(base + 222), "EUR", 2015, "Philadelphia", True),
            Spec(f"{name} price on request", name, None, None, None, 2013, "New York", True),
            Spec(f"{name} sold", name, None, float(base), "USD", 2013, "New York", True, status="ended"),
            Spec(f"{name} unlabelled", None, name, float(base + 1500), "USD", 2012, "Baltimore", True),
            Spec(f"{name} by postal code", name, None, float(base + 2500), "USD", 2014, "Philadelphia", False),
            Spec(f"{name} nowhere", name, None, float(base + 3500), "USD", 2015, None, False),
        ]
    return specs


def build_catalogue(settings, specs: list[Spec], bundle_dir: Path | None) -> None:
    """Car classes, the active model version (``bundle_dir`` copied under ``data_dir/models/v1``),
    listings, listing predictions and photos (normalized JPEGs in the image store)."""
    import shutil

    from autodetect.db import session_scope
    from autodetect.images.decode import encode_jpeg, normalize
    from autodetect.images.store import ImageStore
    from autodetect.serving.places import place_columns
    from autodetect.storage import CarClass, Image, Listing, ListingPrediction, ModelVersion

    store = ImageStore(settings.data_dir / "images", fsync=False)
    with session_scope(settings) as s:
        classes = {}
        for name in [*CLASSES, EMPTY_CLASS]:
            make, model = name.split(" ", 1)
            classes[name] = CarClass(name=name, make=make, model=model)
            s.add(classes[name])
        version = None
        if bundle_dir is not None:
            target = settings.data_dir / "models" / "v1"
            shutil.copytree(bundle_dir, target, ignore=shutil.ignore_patterns("run"))
            version = ModelVersion(name="v1", backbone="compact_cnn", image_size=IMAGE_SIZE, classes=list(CLASSES),
                                   artifacts={"dir": "models/v1"}, status="active")
            s.add(version)
        s.flush()
        for n, spec in enumerate(specs):
            postal, lat, lon = CITIES[spec.city] if spec.city else (None, None, None)
            listing = Listing(
                source="test", external_id=f"t{n}", url=f"https://cars.example/item/{n}", title=spec.title,
                year=spec.year, price=Decimal(str(spec.price)) if spec.price is not None else None,
                currency=spec.currency, city=spec.city, postal_code=postal, country="US" if postal else None,
                latitude=lat if spec.coords else None, longitude=lon if spec.coords else None,
                class_id=classes[spec.label].id if spec.label else None, status=spec.status,
                **place_columns(lat if spec.coords else None, lon if spec.coords else None, postal,
                                "US" if postal else None),
            )
            s.add(listing)
            s.flush()
            spec.id = listing.id
            if spec.predicted and version is not None:
                s.add(ListingPrediction(listing_id=listing.id, model_version_id=version.id, top_class=spec.predicted,
                                        top_probability=0.9, topk=[[spec.predicted, 0.9]], photos=1))
            if spec.photo_seed is not None and spec.label:
                obj = store.put(encode_jpeg(normalize(sandbox_photo(spec.label, spec.photo_seed), 512)),
                                kind="normalized")
                s.add(Image(listing_id=listing.id, position=0, url=f"https://cars.example/p/{n}.jpg",
                            stage="done", state="done", normalized_key=obj.key, sha256=obj.sha256))


# --- uploads --------------------------------------------------------------------------------------------
def jpeg_bytes(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def png_bomb(side: int = 20000) -> bytes:
    """A valid 1-bit PNG of side x side pixels (400 MP by default) that compresses to some 50 kB."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\x00" * (1 + (side + 7) // 8)
    comp = zlib.compressobj(9)
    parts = [comp.compress(row) for _ in range(side)]
    parts.append(comp.flush())
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b"")


# --- uvicorn on loopback ----------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(app, port: int | None = None):
    """``app`` served by uvicorn on 127.0.0.1 in a thread; yields its base URL."""
    import uvicorn

    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


if __name__ == "__main__":
    _train_main(sys.argv[1], sys.argv[2])


class Client:
    """``requests`` against a base URL: ``client.get("/health")``."""

    def __init__(self, base_url: str):
        import requests

        self.base_url = base_url
        self.session = requests.Session()

    def request(self, method: str, path: str, **kwargs):
        kwargs.setdefault("timeout", 60)
        return self.session.request(method, self.base_url + path, **kwargs)

    def get(self, path: str, **kwargs):
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs):
        return self.request("POST", path, **kwargs)


@contextlib.contextmanager
def client_for(app):
    with serve(app) as url:
        c = Client(url)
        try:
            yield c
        finally:
            c.session.close()


def raw_exchange(base_url: str, head: bytes, chunks: list[bytes] = (), timeout: float = 10) -> str:
    """Send ``head`` and ``chunks`` over one socket; return what the server answered (decoded)."""
    host, port = base_url.split("//", 1)[1].split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(head)
        for chunk in chunks:
            try:
                sock.sendall(chunk)
            except OSError:  # the server answered and closed: stop sending
                break
        data = b""
        try:
            while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
                part = sock.recv(65536)
                if not part:
                    break
                data += part
        except OSError:
            pass
    return data.decode("latin-1")
