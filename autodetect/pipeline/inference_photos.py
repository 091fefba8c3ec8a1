"""The photos of an inference batch, read from the store and decoded at the model's input size, on
two low-priority threads: a photo that cannot be read becomes a ``Failure`` of its own."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from autodetect.pipeline.fates import Failure, failure_of
from autodetect.settings import Settings


def background_priority() -> None:
    """Lower this helper thread's scheduling priority (Linux: per thread), so that claiming, decoding
    and writing fill the gaps around the model's threads instead of stalling one of them (a parallel
    operator waits for its slowest thread). They need a few percent of the time the model takes."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    except (AttributeError, OSError):  # not Linux, or not allowed: no harm
        pass


def _load_one(store, key: str | None, size: int) -> np.ndarray | Failure:
    """The photo as the model's input, or why not (id 0: the caller knows the photo)."""
    from autodetect.model.runtime import load_image

    if not key:
        return Failure(0, "no normalized photo recorded for this image", permanent=True)
    try:
        path = store.path(key)
    except ValueError as exc:
        return Failure(0, f"bad store key: {exc}", permanent=True)
    if not path.is_file():
        return Failure(0, f"photo file missing from the store: {key}", permanent=True)
    try:
        return load_image(path, size)
    except (OSError, ValueError, TypeError) as exc:
        return Failure(0, f"photo unreadable from the store: {exc}"[:300], permanent=True)
    except Exception as exc:  # noqa: BLE001 - a poison photo: counted, retried, bounded
        return failure_of(0, exc)


_decoders: ThreadPoolExecutor | None = None


def load_photos(settings: Settings, keys: Sequence[str | None], size: int) -> list[np.ndarray | Failure]:
    """Decode the photos (Pillow releases the GIL: two threads), an error string for each that fails."""
    from autodetect.images.store import ImageStore

    global _decoders
    store = ImageStore(settings.data_dir / "images")
    if len(keys) < 4:
        return [_load_one(store, k, size) for k in keys]
    if _decoders is None:  # created lazily: after fork, in the process that uses it
        _decoders = ThreadPoolExecutor(max_workers=2, thread_name_prefix="decode", initializer=background_priority)
    return list(_decoders.map(lambda k: _load_one(store, k, size), keys))
