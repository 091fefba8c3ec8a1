"""A model bundle: one directory per model version (no TensorFlow).

```
<bundle>/
  labels.json    {"classes": [...], "backbone": "...", "image_size": 224, "created": "...Z", ...}
  model.keras    the trained Keras model (training, re-export)
  model.tflite   dynamic-range int8, for LiteRT          } at least one of these
  model.onnx     for ONNX Runtime                        } for serving
  model.mlpackage (optional, for iOS)
```
``classes[i]`` is the name of output ``i`` of every file in the bundle.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from autodetect.model.errors import ModelArtifactError
from autodetect.model.runtime import ServingModel

LABELS_FILE = "labels.json"
FILES = {"keras": "model.keras", "tflite": "model.tflite", "onnx": "model.onnx", "coreml": "model.mlpackage"}
SERVING_FORMATS = ("tflite", "onnx")


@dataclass
class BundleInfo:
    path: Path
    classes: list[str]
    backbone: str
    image_size: int
    created: str
    files: dict[str, Path] = field(default_factory=dict)  # format -> path, only those present
    extra: dict = field(default_factory=dict)  # any other keys of labels.json

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def save_labels(
    bundle_dir: str | os.PathLike,
    classes: list[str],
    *,
    backbone: str,
    image_size: int,
    created: str | None = None,
    **extra,
) -> Path:
    """Write ``labels.json`` (atomically). ``extra`` keys (e.g. metrics, version) are stored alongside."""
    if len(set(classes)) != len(classes) or not classes:
        raise ValueError("classes must be a non-empty list of distinct names")
    bundle_dir = Path(bundle_dir)
    bundle_dir.mkdir(parents=True, exist_ok=True)
    data = {
        "classes": list(classes),
        "backbone": backbone,
        "image_size": int(image_size),
        "created": created or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        **extra,
    }
    path = bundle_dir / LABELS_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False))
    os.replace(tmp, path)
    return path


def read_bundle(bundle_dir: str | os.PathLike) -> BundleInfo:
    """Read and check ``labels.json``; list the model files present. Raises ``ModelArtifactError``."""
    bundle_dir = Path(bundle_dir)
    path = bundle_dir / LABELS_FILE
    if not bundle_dir.is_dir():
        raise ModelArtifactError(f"model bundle not found: {bundle_dir}")
    if not path.is_file():
        raise ModelArtifactError(f"{path} is missing: not a model bundle")
    try:
        data = json.loads(path.read_text())
        classes = data.pop("classes")
        backbone = data.pop("backbone")
        image_size = int(data.pop("image_size"))
        created = str(data.pop("created", ""))
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ModelArtifactError(f"{path} is corrupt: {type(e).__name__}: {e}") from e
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise ModelArtifactError(f"{path}: 'classes' must be a non-empty list of strings")
    if len(set(classes)) != len(classes):
        raise ModelArtifactError(f"{path}: 'classes' has duplicates")
    files = {fmt: bundle_dir / name for fmt, name in FILES.items() if (bundle_dir / name).exists()}
    return BundleInfo(bundle_dir, classes, str(backbone), image_size, created, files, data)


def load_serving(
    bundle_dir: str | os.PathLike,
    prefer: tuple[str, ...] = SERVING_FORMATS,
    *,
    num_threads: int | None = None,
    max_batch: int = 64,
) -> ServingModel:
    """The first loadable serving file of the bundle in ``prefer`` order, with ``classes`` attached.

    Raises ``ModelArtifactError`` when no preferred file is present, when one is corrupt (the error
    names it; a corrupt preferred file is an error, not a silent fallback), or when the model's input
    size or class count disagrees with ``labels.json``.
    """
    info = read_bundle(bundle_dir)
    unknown = [f for f in prefer if f not in SERVING_FORMATS]
    if unknown:
        raise ValueError(f"unknown serving formats {unknown}; choose from {SERVING_FORMATS}")
    for fmt in prefer:
        if fmt in info.files:
            model = ServingModel.load(info.files[fmt], num_threads=num_threads, max_batch=max_batch)
            if model.num_classes != info.num_classes:
                raise ModelArtifactError(
                    f"{info.files[fmt]} has {model.num_classes} outputs but labels.json lists {info.num_classes} classes"
                )
            if model.image_size != info.image_size:
                raise ModelArtifactError(
                    f"{info.files[fmt]} takes {model.image_size}px images but labels.json says {info.image_size}"
                )
            model.classes = list(info.classes)
            return model
    wanted = ", ".join(FILES[f] for f in prefer)
    raise ModelArtifactError(f"{info.path} has no serving model file ({wanted}); export one first")
