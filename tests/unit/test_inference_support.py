"""Helpers (no tests) for the inference and tagging tests: tiny model bundles without TensorFlow,
registered versions, and catalogue rows inserted in bulk with photos in the image store."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image as PILImage
from sqlalchemy import insert, select

from autodetect.db import session_scope
from autodetect.images.store import ImageStore
from autodetect.model.bundle import save_labels
from autodetect.model.registry import promote
from autodetect.storage import CarClass, Image, Listing, ModelVersion, VersionStatus

ROOT = Path(__file__).resolve().parents[2]
SIZE = 16
#: The colour of each sandbox-free test photo -> the channel that dominates it.
COLOURS = {"red": 0, "green": 1, "blue": 2}


def colour_onnx(path: Path, classes: list[str], size: int = SIZE, *, sharpness: float = 0.2) -> Path:
    """A classifier without TensorFlow: image (N, S, S, 3) -> mean colour -> MatMul -> Softmax.
    Class ``name`` scores the channel ``COLOURS[name]`` (a class with another name scores nothing)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = np.zeros((3, len(classes)), np.float32)
    for j, name in enumerate(classes):
        if name in COLOURS:
            weights[COLOURS[name], j] = sharpness
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["image"], ["mean"], axes=[1, 2], keepdims=0),
            helper.make_node("MatMul", ["mean", "w"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probs"], axis=-1),
        ],
        "colour",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", size, size, 3])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", len(classes)])],
        [numpy_helper.from_array(weights, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())
    return path


def register_version(settings, name: str, classes: list[str], *, size: int = SIZE, active: bool = True,
                     bundle_from: Path | None = None, backbone: str = "test") -> int:
    """A bundle under ``data_dir/models/<name>`` (the colour model, or a copy of ``bundle_from``)
    and its registry row; promoted if ``active``. Returns the version id."""
    directory = settings.data_dir / "models" / name
    if bundle_from is not None:
        import shutil

        shutil.copytree(bundle_from, directory)
        info = json.loads((directory / "labels.json").read_text())
        classes, size, backbone = info["classes"], info["image_size"], info["backbone"]
    else:
        colour_onnx(directory / "model.onnx", classes, size)
        save_labels(directory, classes, backbone=backbone, image_size=size)
    with session_scope(settings) as s:
        version = ModelVersion(name=name, backbone=backbone, image_size=size, classes=list(classes),
                               metrics={"top1": 0.5}, artifacts={"dir": f"models/{name}"},
                               status=VersionStatus.candidate.value)
        s.add(version)
        s.flush()
        if active:
            promote(s, version)
        return version.id


def jpeg(colour: str | tuple[int, int, int], side: int = 24, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 60, (side, side, 3), dtype=np.uint8)
    if isinstance(colour, str):
        a[..., COLOURS[colour]] = rng.integers(200, 255, (side, side), dtype=np.uint8)
    else:
        a[...] = np.array(colour, np.uint8)
    buf = io.BytesIO()
    PILImage.fromarray(a).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def store_photos(settings, photos: dict[str, bytes]) -> dict[str, str]:
    """Put photos in the store as normalized JPEGs; returns name -> key."""
    store = ImageStore(settings.data_dir / "images", fsync=False)
    return {name: store.put(data, kind="normalized", ext="jpg").key for name, data in photos.items()}


def add_classes(settings, names: list[str]) -> dict[str, int]:
    with session_scope(settings) as s:
        for name in names:
            if s.scalar(select(CarClass.id).where(CarClass.name == name)) is None:
                s.add(CarClass(name=name, make=name.split()[0], model=name))
        s.flush()
        return dict(s.execute(select(CarClass.name, CarClass.id)).all())


def add_listings(settings, listings: list[dict], *, stage: str = "inference", state: str = "pending",
                 first_id: int = 1) -> list[int]:
    """Bulk-insert listings, each ``{"photos": [store key, ...], "label": class name or None}``, with
    their photos in ``stage``/``state``. Returns the image ids in insertion order."""
    class_ids = add_classes(settings, sorted({x["label"] for x in listings if x.get("label")}))
    listing_rows, image_rows = [], []
    for n, x in enumerate(listings):
        lid = first_id + n
        listing_rows.append({"id": lid, "source": "test", "external_id": f"t{lid}", "title": f"listing {lid}",
                             "class_id": class_ids.get(x.get("label")), "issues": [], "raw": {}})
        for pos, key in enumerate(x["photos"]):
            image_rows.append({"listing_id": lid, "position": pos, "url": f"http://test/{lid}/{pos}.jpg",
                               "stage": stage, "state": state, "normalized_key": key,
                               "duplicate_of_id": x.get("duplicate_of", [None] * len(x["photos"]))[pos]})
    with session_scope(settings) as s:
        s.execute(insert(Listing), listing_rows)
        s.execute(insert(Image), image_rows)
        return list(s.scalars(select(Image.id).where(Image.listing_id >= first_id).order_by(Image.id)))


def compact_cnn_bundle(directory: Path, classes: list[str], size: int = 32) -> Path:
    """A real (untrained) compact_cnn exported to int8 LiteRT, built in a subprocess so that the test
    process never imports TensorFlow."""
    code = f"""
import os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
from pathlib import Path
from autodetect.model.backbones import build_classifier
from autodetect.model.export import export_tflite
from autodetect.model.bundle import save_labels
d = Path({str(directory)!r}); d.mkdir(parents=True, exist_ok=True)
classes = {classes!r}
m = build_classifier("compact_cnn", len(classes), {size}, weights="none")
m.save(d / "model.keras")
export_tflite(d / "model.keras", d / "model.tflite")
(d / "model.keras").unlink()
save_labels(d, classes, backbone="compact_cnn", image_size={size})
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], check=False, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-3000:]
    return directory
