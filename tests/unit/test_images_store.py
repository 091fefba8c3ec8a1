"""ImageStore: content-addressed, atomic, idempotent."""

from __future__ import annotations

import hashlib
import os
import threading

import pytest

from autodetect.images.store import ImageStore, StoredObject

pytestmark = pytest.mark.timeout(30)

DATA = b"\xff\xd8\xff\xe0 not really a jpeg but bytes are bytes"
SHA = hashlib.sha256(DATA).hexdigest()


@pytest.fixture
def store(tmp_path):
    return ImageStore(tmp_path / "images")


def test_put_is_content_addressed(store):
    obj = store.put(DATA, kind="original", ext="jpg")
    assert obj == StoredObject(sha256=SHA, key=f"original/{SHA[:2]}/{SHA[2:4]}/{SHA}.jpg", size=len(DATA))
    assert store.path(obj.key) == store.root / obj.key
    assert store.path(obj.key).read_bytes() == DATA
    assert store.exists(obj.key)
    with store.open(obj.key) as fh:
        assert fh.read() == DATA
    assert store.read(obj.key) == DATA


def test_kinds_and_extensions(store):
    a = store.put(DATA, kind="normalized", ext=".JPG")
    assert a.key.startswith("normalized/") and a.key.endswith(".jpg")
    with pytest.raises(ValueError):
        store.put(DATA, kind="thumbnail")
    with pytest.raises(ValueError):
        store.put(DATA, ext="../x")
    with pytest.raises(ValueError):
        store.put(DATA, ext="")


def test_put_is_idempotent_and_leaves_existing_object_untouched(store):
    first = store.put(DATA)
    st = os.stat(store.path(first.key))
    second = store.put(DATA)
    assert second == first
    st2 = os.stat(store.path(first.key))
    assert (st2.st_ino, st2.st_mtime_ns) == (st.st_ino, st.st_mtime_ns)


def test_put_repairs_a_wrong_size_object(store):
    obj = store.put(DATA)
    store.path(obj.key).write_bytes(b"")  # what a crash without fsync can leave
    assert store.put(DATA) == obj
    assert store.read(obj.key) == DATA


def test_no_temp_files_left(store):
    obj = store.put(DATA)
    assert os.listdir(store.path(obj.key).parent) == [f"{SHA}.jpg"]


def test_failed_write_leaves_nothing(store, monkeypatch):
    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        store.put(DATA)
    key = ImageStore.key_for(SHA)
    assert not store.exists(key)
    assert os.listdir(store.path(key).parent) == []


def test_concurrent_puts_of_the_same_bytes(tmp_path):
    store = ImageStore(tmp_path, fsync=False)
    payload = os.urandom(256 * 1024)
    results, errors = [], []

    def put():
        try:
            results.append(store.put(payload, ext="png"))
        except Exception as exc:  # pragma: no cover
            errors.append(exc)

    threads = [threading.Thread(target=put) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(results)) == 1
    assert store.read(results[0].key) == payload
    assert os.listdir(store.path(results[0].key).parent) == [os.path.basename(results[0].key)]


@pytest.mark.parametrize(
    "key",
    [
        "../etc/passwd",
        "/etc/passwd",
        f"original/../../{SHA}.jpg",
        f"original/{SHA[:2]}/{SHA[2:4]}/../{SHA}.jpg",
        f"original/00/00/{SHA}.jpg",  # prefix does not match the hash
        f"other/{SHA[:2]}/{SHA[2:4]}/{SHA}.jpg",
        f"original/{SHA[:2]}/{SHA[2:4]}/{SHA}",
        "",
    ],
)
def test_path_refuses_what_is_not_a_key(store, key):
    with pytest.raises(ValueError):
        store.path(key)


def test_missing_object(store):
    key = ImageStore.key_for(SHA, "original", "jpg")
    assert not store.exists(key)
    with pytest.raises(FileNotFoundError):
        store.open(key)


def test_batch_put_defers_flushing_to_one_sync(store, monkeypatch):
    import autodetect.images.store as store_module

    fsyncs, syncfs = [], []
    real_fsync = os.fsync
    monkeypatch.setattr(store_module.os, "fsync", lambda fd: (fsyncs.append(fd), real_fsync(fd)))
    monkeypatch.setattr(store_module, "_SYNCFS", lambda fd: (syncfs.append(fd), 0)[1])
    keys = [store.put(DATA + bytes([i]), kind="original", ext="jpg", sync=False).key for i in range(5)]
    assert fsyncs == [] and syncfs == []
    assert all(store.read(k) == DATA + bytes([i]) for i, k in enumerate(keys))
    store.sync()
    assert fsyncs == [] and len(syncfs) == 1
    store.put(b"single", kind="original", ext="jpg")  # the default: file and directory flushed at once
    assert len(fsyncs) == 2 and len(syncfs) == 1
    ImageStore(store.root, fsync=False).sync()  # a store made without fsync never flushes
    assert len(syncfs) == 1
