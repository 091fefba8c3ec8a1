"""Decode, verify and normalize photos; perceptual hashes.

``decode_image`` turns downloaded bytes into an upright RGB ``PIL.Image``, refusing what is not a
photo we can trust: unknown formats, images with more pixels than allowed (checked from the header,
before any pixel is decoded, so a decompression bomb costs nothing), truncated or corrupt files.
``normalize`` shrinks to the stored size, ``encode_jpeg`` writes it, ``perceptual_hash`` gives the
64-bit pHash as a signed integer (a PostgreSQL BIGINT), ``hamming`` compares two of them.
"""

from __future__ import annotations

import io
import re

import imagehash
import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

__all__ = [
    "UndecodableImage",
    "decode_image",
    "encode_jpeg",
    "hamming",
    "normalize",
    "perceptual_hash",
    "to_signed64",
    "to_unsigned64",
]

try:  # HEIC (and AVIF for old Pillow) through pillow-heif, when installed
    import pillow_heif

    pillow_heif.register_heif_opener()
    _HEIF = ["HEIF"]
except Exception:  # pragma: no cover - optional
    _HEIF = []

#: The only parsers run on downloaded bytes (no EPS, PSD, ICO, ... attack surface).
FORMATS = ["JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF", "AVIF", *_HEIF]

_WHITE = (255, 255, 255)
_ORIENTATION = 0x0112


class UndecodableImage(ValueError):
    """The bytes are not a usable photo; ``reason`` is short and stored as the photo's error. Trying
    again cannot help (``permanent``)."""

    permanent = True

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def decode_image(data: bytes, max_pixels: int, *, draft_side: int | None = None,
                 min_side: int = 1) -> Image.Image:
    """Upright RGB image from ``data``.

    Dimensions are read from the header and checked against ``max_pixels`` before decoding; then the
    whole image is loaded (a truncated file is refused), the EXIF orientation applied, and the mode
    converted to RGB: CMYK (through its ICC profile when present), 16-bit and 32-bit grey (scaled,
    not clipped), palette, grey/RGB with transparency (composited on white), first frame of an
    animation. ``draft_side`` lets JPEG decoding scale down by 1/2, 1/4 or 1/8 as long as both
    sides stay at least that big (much faster for big photos that are normalized afterwards); wide
    grey images are reduced the same way before they become RGB, so their cost stays near the
    decoded frame itself.
    Images with a side below ``min_side`` are refused (tracking pixels, placeholders).
    ``result.info["original_size"]`` is the photo's full upright size (even after ``draft_side``);
    ``result.info["plain_jpeg"]`` says whether ``data`` itself is these pixels (an RGB JPEG needing
    no turn, decoded at full size), so it can serve as the normalized copy when small enough."""
    if not data:
        raise UndecodableImage("empty (0 bytes)")
    try:
        img = Image.open(io.BytesIO(data), formats=FORMATS)
    except Image.DecompressionBombError as exc:
        raise UndecodableImage(_bomb_reason(exc, max_pixels)) from None
    except UnidentifiedImageError:
        raise UndecodableImage("unknown image format") from None
    except Exception as exc:  # corrupt headers raise all sorts of things
        raise UndecodableImage(f"corrupt header: {_short(exc)}") from None

    width, height = img.size
    if width * height > max_pixels:
        raise UndecodableImage(f"too many pixels: {width}x{height} (limit {max_pixels})")
    if width < min_side or height < min_side:
        raise UndecodableImage(f"too small: {width}x{height}")

    try:
        if draft_side and img.format == "JPEG":
            img.draft("RGB", (draft_side, draft_side))
        img.load()
    except Image.DecompressionBombError as exc:
        raise UndecodableImage(_bomb_reason(exc, max_pixels)) from None
    except Exception as exc:
        msg = str(exc)
        if "truncated" in msg or "broken data stream" in msg or isinstance(exc, EOFError):
            raise UndecodableImage("truncated image") from None
        raise UndecodableImage(f"corrupt image: {_short(exc)}") from None

    try:
        turned, swapped = _upright(img)
        out = _to_rgb(turned, reduce_to=draft_side)
    except Exception as exc:
        raise UndecodableImage(f"cannot convert {img.mode} image: {_short(exc)}") from None
    # The photo's real size, upright, also when ``draft_side`` decoded it smaller.
    out.info["original_size"] = (height, width) if swapped else (width, height)
    # The bytes themselves are these pixels: an RGB JPEG, already upright, decoded at full size.
    out.info["plain_jpeg"] = img.format == "JPEG" and out is img and img.size == (width, height)
    return out


def _short(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= 80 else text[:77] + "..."


def _bomb_reason(exc: BaseException, max_pixels: int) -> str:
    m = re.search(r"\((\d+) pixels\)", str(exc))
    count = m.group(1) if m else "too many"
    return f"too many pixels: {count} (limit {max_pixels})"


def _upright(img: Image.Image) -> tuple[Image.Image, bool]:
    """The image turned as its EXIF orientation says, and whether width and height swapped."""
    try:
        orientation = img.getexif().get(_ORIENTATION, 1)
    except Exception:  # a broken EXIF block must not cost the photo
        return img, False
    if orientation in (2, 3, 4, 5, 6, 7, 8):
        return ImageOps.exif_transpose(img), orientation >= 5
    return img, False


_SRGB = None


def _srgb():  # type: ignore[no-untyped-def]
    global _SRGB
    if _SRGB is None:
        _SRGB = ImageCms.createProfile("sRGB")
    return _SRGB


def _to_rgb(img: Image.Image, reduce_to: int | None = None) -> Image.Image:
    mode = img.mode
    if mode == "RGB":
        return img
    if mode == "CMYK":
        icc = img.info.get("icc_profile")
        if icc:
            try:
                src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
                return ImageCms.profileToProfile(img, src, _srgb(), outputMode="RGB")
            except Exception:
                pass  # a broken profile: fall back to the plain conversion
        return img.convert("RGB")
    if mode.startswith("I;16") or mode in ("I", "F"):
        grey = _wide_grey_to_l(img)
        factor = _reduce_factor(grey.size, reduce_to)
        return (grey.reduce(factor) if factor > 1 else grey).convert("RGB")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or img.has_transparency_data:
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, _WHITE)
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return img.convert("RGB")


#: Rows converted at a time from wide grey to 8 bits: bounds the temporary arrays to a few MiB.
_STRIP_ROWS = 256


def _wide_grey_to_l(img: Image.Image) -> Image.Image:
    """16-bit ("I;16*"), 32-bit integer ("I") or float ("F") grey to 8-bit grey, scaled, not clipped
    (Pillow's own convert clips 16-bit values at 255, which turns most photos white). Converted in
    strips of rows: no full-frame wide copy is ever made (a 6000x6600 16-bit PNG would otherwise
    cost ~760 MiB in int64 temporaries)."""
    width, height = img.size
    out = np.empty((height, width), dtype=np.uint8)
    scale = None
    if img.mode == "F":
        top = img.getextrema()[1] if width and height else 1.0
        scale = 255.0 if top <= 1.0 else (255.0 / 65535.0 if top > 255.0 else 1.0)
    for y in range(0, height, _STRIP_ROWS):
        strip = np.asarray(img.crop((0, y, width, min(height, y + _STRIP_ROWS))))
        if scale is not None:
            out[y:y + len(strip)] = np.clip(np.nan_to_num(strip) * scale, 0, 255).astype(np.uint8)
        else:
            out[y:y + len(strip)] = (np.clip(strip, 0, 65535) >> 8).astype(np.uint8)
    return Image.fromarray(out, "L")


def _reduce_factor(size: tuple[int, int], keep_side: int | None) -> int:
    """The largest of 1, 2, 4, 8 that keeps both sides at least ``keep_side`` (JPEG draft's rule)."""
    factor = 1
    while keep_side and factor < 8 and min(size) // (factor * 2) >= keep_side:
        factor *= 2
    return factor


def normalize(img: Image.Image, max_side: int = 512) -> Image.Image:
    """The image shrunk so that its longer side is ``max_side`` (aspect ratio kept, never enlarged);
    the image itself when already small enough."""
    width, height = img.size
    longest = max(width, height)
    if longest <= max_side:
        return img
    scale = max_side / longest
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return img.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def encode_jpeg(img: Image.Image, quality: int = 90) -> bytes:
    """Baseline JPEG bytes (no metadata: the pixels are already upright)."""
    if img.mode != "RGB":
        img = _to_rgb(img)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


_MASK64 = (1 << 64) - 1


def to_signed64(value: int) -> int:
    """An unsigned 64-bit value as a signed one (two's complement): fits a BIGINT column."""
    value &= _MASK64
    return value - (1 << 64) if value >> 63 else value


def to_unsigned64(value: int) -> int:
    return value & _MASK64


def perceptual_hash(img: Image.Image) -> int:
    """The 64-bit pHash (imagehash.phash) as a signed 64-bit integer. Its unsigned form, printed as
    16 hex digits, equals ``str(imagehash.phash(img))``. Hash the normalized image: the result is the
    same to a bit or two and much cheaper than on a full-size photo."""
    bits = imagehash.phash(img).hash.flatten()
    value = 0
    for bit in bits:
        value = (value << 1) | int(bit)
    return to_signed64(value)


def hamming(a: int, b: int) -> int:
    """Number of differing bits between two 64-bit hashes (signed or unsigned)."""
    return ((a ^ b) & _MASK64).bit_count()
