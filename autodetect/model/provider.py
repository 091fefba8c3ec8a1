"""The serving model: a version's bundle loaded for predictions (``load_serving_model``), and the one
a process serves, the active version's, swapped when another version is promoted (``ModelProvider``).

A serving model runs on LiteRT or ONNX Runtime (``runtime``, loaded from a bundle by ``bundle``),
never on TensorFlow, so this module is safe in the inference workers and the API. The format is the
one measured faster for the version's backbone (``MEASURED_FASTEST``) unless ``serving_format`` is set,
and each model gets its process's share of the cores (``serving_threads``). Like ``registry``, it reads
the registry through a session it is given and opens no database connection itself.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from autodetect.model.calibration import OpenSet
from autodetect.settings import Settings
from autodetect.storage import ModelVersion, VersionStatus

log = logging.getLogger(__name__)

#: The faster serving runtime per backbone, measured with ``benchmarks/inference_throughput.py``
#: (photos/s at batch 32, int8 dynamic-range LiteRT vs float32 ONNX Runtime; see benchmarks/RESULTS.md).
#: Used unless ``serving_format`` is set explicitly (environment or ``configure``). A backbone not
#: measured gets ``serving_format``'s default. Either way the other format is the fallback when the
#: bundle lacks the preferred file.
MEASURED_FASTEST: dict[str, str] = {
    "inception_v3": "tflite",
    "mobilenet_v3_small": "tflite",
    "compact_cnn": "tflite",
}
SERVING_FORMATS = ("tflite", "onnx")


@dataclass
class LoadedModel:
    version_id: int
    name: str
    classes: list[str]
    image_size: int
    predict: Callable[[np.ndarray], np.ndarray]
    format: str = ""
    backbone: str = ""
    threads: int = 0
    #: The version's calibration (temperature, OOD score, thresholds) from its bundle's labels.json.
    open_set: OpenSet = field(default_factory=OpenSet)


def serving_preference(settings: Settings, backbone: str) -> tuple[str, ...]:
    """The serving formats to try, best first, for a version of ``backbone``."""
    if "serving_format" in settings.model_fields_set:
        first = settings.serving_format
    else:
        first = MEASURED_FASTEST.get(backbone, settings.serving_format)
    return (first, *(f for f in SERVING_FORMATS if f != first))


def serving_threads(settings: Settings, share: int = 1) -> int:
    """Threads for one serving model: ``inference_threads``, or else this process's cores divided among
    the ``share`` processes that run models side by side (a prefork pool's size). LiteRT left to itself
    runs on ONE thread (measured: half the photos/s of two threads on two cores)."""
    if settings.inference_threads > 0:
        return settings.inference_threads
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return max(1, cpus // max(1, share))


def load_serving_model(settings: Settings, version: ModelVersion, *, threads: int | None = None) -> LoadedModel:
    """The serving model of ``version`` (LiteRT or ONNX Runtime, never TensorFlow), on ``threads``
    threads (default: ``serving_threads``). Raises ``ModelArtifactError`` (or ``ValueError``) with a
    clear message for a missing or corrupt bundle."""
    from autodetect.model.bundle import load_serving, read_bundle
    from autodetect.model.errors import ModelArtifactError

    artifacts = version.artifacts or {}
    if not artifacts.get("dir"):
        raise ModelArtifactError(f"model {version.name} has no artifact directory in the registry")
    directory = settings.data_dir / artifacts["dir"]
    info = read_bundle(directory)
    if list(info.classes) != list(version.classes):
        raise ModelArtifactError(f"{directory}: labels.json lists other classes than the registry's {version.name}")
    if info.image_size != version.image_size:
        raise ModelArtifactError(f"{directory}: labels.json says {info.image_size}px, the registry "
                                 f"{version.image_size}px for {version.name}")
    threads = threads or serving_threads(settings)
    serving = load_serving(directory, prefer=serving_preference(settings, version.backbone), num_threads=threads,
                           max_batch=max(64, settings.inference_batch_size))
    return LoadedModel(version.id, version.name, list(version.classes), version.image_size, serving.predict,
                       format=serving.format, backbone=version.backbone, threads=threads,
                       open_set=OpenSet.from_dict(info.extra.get("open_set")))


class ModelProvider:
    """Holds the active version's serving model, loaded lazily once per process (after fork).

    ``get`` is called before every batch: it looks up the active version (one indexed query) and,
    when a new one was promoted, loads it. If that fails it keeps serving the last good model, says
    why in ``last_error`` and the log, and tries the broken version again only after
    ``inference_model_retry_s``. ``for_version`` loads a given (possibly non-active) version for
    tagging with it, caching one such model besides the active one."""

    def __init__(self, settings: Settings, loader: Callable[[Settings, ModelVersion], LoadedModel] | None = None,
                 clock: Callable[[], float] = time.monotonic, *, threads: int | None = None):
        self.settings = settings
        self.loader = loader or functools.partial(load_serving_model, threads=threads)
        self.clock = clock
        self.current: LoadedModel | None = None
        #: The active version's id as ``get`` last saw it (``current`` may be a stand-in for it).
        self.active_id: int | None = None
        self.last_error: str | None = None
        self._failed: dict[int, tuple[float, str, int]] = {}  # version id -> (when, why, failed loads)
        self._other: LoadedModel | None = None
        self._lock = threading.Lock()

    def get(self, session: Session) -> LoadedModel | None:
        active = session.execute(
            select(ModelVersion).where(ModelVersion.status == VersionStatus.active.value)
        ).scalar_one_or_none()
        self.active_id = active.id if active is not None else None
        if active is None:
            return None
        with self._lock:
            if self.current is not None and self.current.version_id == active.id:
                return self.current
            model = self._load(active)
            if model is not None:
                self.current = model
                log.info("serving model %s (%s, %s on %d threads, %d classes)", model.name, model.backbone,
                         model.format, model.threads, len(model.classes))
            return self.current

    def for_version(self, session: Session, version_id: int) -> LoadedModel:
        """The serving model of ``version_id``; raises ``ModelUnavailable`` when it cannot be loaded."""
        with self._lock:
            for model in (self.current, self._other):
                if model is not None and model.version_id == version_id:
                    return model
        version = session.get(ModelVersion, version_id)
        if version is None:
            raise ModelUnavailable(f"no model version {version_id}")
        if version.status == VersionStatus.active.value:
            model = self.get(session)
            if model is not None and model.version_id == version_id:
                return model
            raise ModelUnavailable(self.last_error or f"cannot load model {version.name}")
        with self._lock:
            model = self._load(version)
            if model is None:
                raise ModelUnavailable(self._failed[version.id][1])
            self._other = model
            return model

    def load_failures(self, version_id: int) -> int:
        """Failed loads of ``version_id`` in a row, in this process."""
        failed = self._failed.get(version_id)
        return failed[2] if failed else 0

    def is_broken(self, version_id: int) -> bool:
        """Whether loading ``version_id`` failed recently (so the last good model stands in for it)."""
        failed = self._failed.get(version_id)
        return failed is not None and self.clock() - failed[0] < self.settings.inference_model_retry_s

    def _load(self, version: ModelVersion) -> LoadedModel | None:
        if self.is_broken(version.id):
            return None
        try:
            model = self.loader(self.settings, version)
        except Exception as exc:  # noqa: BLE001 - any broken artifact: keep the last good model
            why = f"cannot load model {version.name}: {exc}"
            self._failed[version.id] = (self.clock(), why, self.load_failures(version.id) + 1)
            self.last_error = why
            log.error("%s; still serving %s", why, self.current.name if self.current else "nothing")
            return None
        self._failed.pop(version.id, None)
        self.last_error = None
        return model


class ModelUnavailable(Exception):
    pass
