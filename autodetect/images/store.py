"""Content-addressed image storage on a file system.

Objects live at ``{root}/{kind}/{sha[:2]}/{sha[2:4]}/{sha}.{ext}`` where ``sha`` is the SHA-256 of
the bytes. Writes are atomic (a temporary file in the same directory, then ``os.replace``), so a
reader never sees half an object, and idempotent (an existing object is left untouched), so a task
delivered twice, or two workers storing the same photo, are harmless.
"""

from __future__ import annotations

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
    whose key was committed to the database survives a power loss."""

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

    def put(self, data: bytes, kind: str = "original", ext: str = "jpg") -> StoredObject:
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
                if self.fsync:
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
        if self.fsync:
            _fsync_dir(path.parent)
        return StoredObject(sha, key, len(data))

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
