"""Photos people bring themselves: ``DIR/<class name>/<photo>`` as a training set.

Every photo goes through the same decoding and normalization as a downloaded one and lands in the
content-addressed store, so training and evaluation see exactly what the pipeline would. Exact copies
(same bytes) share a group, so they never straddle the split. Nothing unreadable is trained on."""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from autodetect.images.decode import UndecodableImage, decode_image, encode_jpeg, normalize
from autodetect.images.store import ImageStore
from autodetect.model.split import Sample
from autodetect.settings import Settings

PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff", ".heic", ".avif"}


class FolderError(Exception):
    """The folder cannot be trained on; the message says why."""


@dataclass
class FolderScan:
    samples: list[Sample] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)
    empty_classes: list[str] = field(default_factory=list)
    nested: int = 0  # photos found in sub-folders of a class folder (counted for that class)
    loose: list[str] = field(default_factory=list)  # files directly in DIR, outside any class folder

    def counts(self) -> Counter:
        return Counter(s.label for s in self.samples)

    def messages(self) -> list[str]:
        out = [f"skipped {path}: {reason}" for path, reason in self.skipped]
        out += [f"class folder {name!r} has no usable photo; ignored" for name in self.empty_classes]
        if self.nested:
            out.append(f"{self.nested} photos were in nested folders; each counts for its top-level class folder")
        if self.loose:
            out.append(f"{len(self.loose)} files directly in the folder belong to no class; ignored")
        return out


def scan_folder(settings: Settings, root: Path) -> FolderScan:
    root = Path(root)
    if not root.is_dir():
        raise FolderError(f"{root} is not a folder of DIR/<class name>/<photo>")
    store = ImageStore(settings.data_dir / "images")
    scan = FolderScan()
    scan.loose = sorted(p.name for p in root.iterdir() if p.is_file())
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        found = 0
        for path in sorted(p for p in class_dir.rglob("*") if p.is_file()):
            if path.suffix.lower() not in PHOTO_SUFFIXES:
                scan.skipped.append((str(path), f"not a photo ({path.suffix or 'no extension'})"))
                continue
            try:
                data = path.read_bytes()
                picture = decode_image(data, settings.download_max_pixels, draft_side=settings.normalized_max_side)
            except (OSError, UndecodableImage) as exc:
                scan.skipped.append((str(path), str(exc)))
                continue
            stored = store.put(encode_jpeg(normalize(picture, settings.normalized_max_side)), kind="normalized", ext="jpg")
            digest = hashlib.sha256(data).hexdigest()[:16]
            scan.samples.append(Sample(path=str(store.path(stored.key)), label=class_dir.name,
                                       group=f"sha:{digest}", listing=f"file:{path.relative_to(root)}"))
            scan.nested += path.parent != class_dir
            found += 1
        if not found:
            scan.empty_classes.append(class_dir.name)
    if not scan.samples:
        raise FolderError(f"no usable photos under {root} (expected DIR/<class name>/<photo>)")
    return scan
