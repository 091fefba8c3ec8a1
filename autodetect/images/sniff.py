"""Image formats recognised by their signature (magic number), whatever the server's header says:
JPEG, PNG, GIF, WebP, BMP, TIFF, HEIC, AVIF; and a short reason for bytes that are none of them."""

from __future__ import annotations

__all__ = ["EXTENSIONS", "MIME_TYPES", "describe_unknown", "sniff_image_type"]

#: File extension and MIME type of each format ``sniff_image_type`` names.
EXTENSIONS = {
    "jpeg": "jpg", "png": "png", "gif": "gif", "webp": "webp",
    "bmp": "bmp", "tiff": "tif", "heic": "heic", "avif": "avif",
}
MIME_TYPES = {
    "jpeg": "image/jpeg", "png": "image/png", "gif": "image/gif", "webp": "image/webp",
    "bmp": "image/bmp", "tiff": "image/tiff", "heic": "image/heic", "avif": "image/avif",
}

_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"mif1", b"msf1"}
_AVIF_BRANDS = {b"avif", b"avis"}


def sniff_image_type(head: bytes) -> str | None:
    """The image format of bytes from their magic number: ``jpeg``, ``png``, ``gif``, ``webp``,
    ``bmp``, ``tiff``, ``heic``, ``avif``; None when none matches. 32 bytes are enough."""
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:2] == b"BM" and len(head) >= 26:
        return "bmp"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if head[4:8] == b"ftyp":
        box_size = int.from_bytes(head[:4], "big")
        brands = {head[8:12]} | {
            head[i : i + 4] for i in range(16, min(box_size, len(head)) - 3, 4)
        }
        if brands & _AVIF_BRANDS:
            return "avif"
        if brands & _HEIF_BRANDS:
            return "heic"
    return None


def describe_unknown(head: bytes) -> str:
    text = head.lstrip()[:16].lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")):
        return "not an image: content is HTML"
    if text.startswith(b"<"):
        return "not an image: content is XML/HTML"
    if text.startswith((b"{", b"[")):
        return "not an image: content is JSON"
    return f"not an image: unknown signature {head[:8].hex()}"
