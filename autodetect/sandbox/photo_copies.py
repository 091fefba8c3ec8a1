"""How the sandbox encodes photos, and how a relist copies an earlier listing's photo (Pillow only)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageEnhance

TRANSFORMS = ("exact", "reencode", "resize", "crop", "brighten")  # how a relist copies a photo
JPEG_QUALITY = 88


def jpeg_bytes(img: Image.Image, quality: int = JPEG_QUALITY) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def copy_photo(data: bytes, transform: str, rng: np.random.Generator) -> bytes:
    """A relist's copy of a photo: the same bytes, or re-encoded at another quality, resized to
    50-90%, cropped by at most 6% per edge, or 10-20% brighter or darker."""
    if transform == "exact":
        return data
    img = Image.open(io.BytesIO(data))
    w, h = img.size
    if transform == "reencode":
        return jpeg_bytes(img, quality=int(rng.integers(55, 76)))
    if transform == "resize":
        f = rng.uniform(0.5, 0.9)
        return jpeg_bytes(img.resize((round(w * f), round(h * f)), Image.BILINEAR))
    if transform == "crop":
        left, top, right, bottom = rng.uniform(0.01, 0.06, 4)
        return jpeg_bytes(img.crop((round(w * left), round(h * top), round(w * (1 - right)), round(h * (1 - bottom)))))
    if transform == "brighten":
        return jpeg_bytes(ImageEnhance.Brightness(img).enhance(1 + rng.choice((-1, 1)) * rng.uniform(0.1, 0.2)))
    raise ValueError(f"unknown transform {transform!r}")
