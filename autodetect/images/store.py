"""Content-addressed image storage on a file system.

Objects live at ``{root}/{kind}/{sha[:2]}/{sha[2:4]}/{sha}.{ext}`` where ``sha`` is the SHA-256 of
the bytes. Writes are atomic (a temporary file in the same directory, then ``os.replace``), so a
reader never sees half an object, and idempotent (an existing object is left untouched), so a task
delivered twice, or two workers storing the same photo, are harmless.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

__all__ = ["ImageStore", "StoredObject", "KINDS"]

KINDS = ("original", "normalized")
_EXT = re.compile(r"^[a-z0-9]{1,8}$")
_KEY = re.compile(r"^(original|normalized)/([0-9a-f]{2})/([0-9a-f]{2})/([0-9a-f]{64})\.([a-z0-9]{1,8})$")


@dataclass(frozen=True)
class StoredObject:
    sha256: str
    key: str
    size: int


class ImageStore:
    """``put`` bytes, get back their key; ``path``/``exists``/``open``/``read`` by key.

    ``fsync=True`` (the default) flushes the file and its directory before returning, so an object
    whose key was committed to the database survives a power loss; a batch can instead put its objects
    with ``sync=False`` and call ``sync()`` once before committing their keys."""

    def __init__(self, root: Path | str, *, fsync: bool = True):
        self.root = Path(root)
        self.fsync = fsync

    @staticmethod
    def key_for(sha256: str, kind: str = "original", ext: str = "jpg") -> str:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
        ext = ext.lower().lstrip(".")
        if not _EXT.match(ext):
            raise ValueError(f"bad extension {ext!r}")
        if not re.fullmatch(r"[0-9a-f]{64}", sha256):
            raise ValueError("sha256 must be 64 lowercase hex digits")
        return f"{kind}/{sha256[:2]}/{sha256[2:4]}/{sha256}.{ext}"

    def put(self, data: bytes, kind: str = "original", ext: str = "jpg", *, sync: bool = True) -> StoredObject:
        """Store ``data``; ``sync=False`` leaves making it durable to a later ``sync()`` (one flush for a
        whole batch of objects instead of two per object)."""
        sync = sync and self.fsync
        sha = hashlib.sha256(data).hexdigest()
        key = self.key_for(sha, kind, ext)
        path = self.root / key
        try:
            if path.stat().st_size == len(data):
                return StoredObject(sha, key, len(data))  # already there: leave it alone
        except FileNotFoundError:
            pass
        # Absent, or (after a crash without fsync) a wrong size: write it, atomically.
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=f".{ext.lstrip('.')}")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                if sync:
                    fh.flush()
                    os.fsync(fh.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        if sync:
            _fsync_dir(path.parent)
        return StoredObject(sha, key, len(data))

    def sync(self) -> None:
        """Make every object put with ``sync=False`` durable: one ``syncfs`` of the store's file system
        (``os.sync`` where there is no ``syncfs``). Nothing to do when the store was made with
        ``fsync=False``."""
        if not self.fsync:
            return
        if _SYNCFS is None:
            os.sync()
            return
        fd = os.open(self.root, os.O_RDONLY)
        try:
            if _SYNCFS(fd) != 0:
                err = ctypes.get_errno()
                raise OSError(err, os.strerror(err), str(self.root))
        finally:
            os.close(fd)

    def path(self, key: str) -> Path:
        """The file of ``key``; ValueError for anything that is not a key this store makes (no
        ``..``, no absolute paths)."""
        if not isinstance(key, str) or not _KEY.match(key):
            raise ValueError(f"not an image store key: {key!r}")
        m = _KEY.match(key)
        assert m is not None
        if m.group(4)[:2] != m.group(2) or m.group(4)[2:4] != m.group(3):
            raise ValueError(f"not an image store key: {key!r}")
        return self.root / key

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def open(self, key: str) -> BinaryIO:
        """The object opened for reading in binary mode (FileNotFoundError when absent)."""
        return open(self.path(key), "rb")

    def read(self, key: str) -> bytes:
        return self.path(key).read_bytes()


def _load_syncfs():  # type: ignore[no-untyped-def]
    try:
        fn = ctypes.CDLL(None, use_errno=True).syncfs  # Linux
    except (AttributeError, OSError):
        return None
    fn.argtypes = [ctypes.c_int]
    return fn


_SYNCFS = _load_syncfs()


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
