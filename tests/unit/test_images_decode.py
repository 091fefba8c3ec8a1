"""decode_image / normalize / encode_jpeg / perceptual_hash on real image bytes made with Pillow."""

from __future__ import annotations

import io
import resource
import struct
import time
import zlib

import imagehash
import numpy as np
import pytest
from PIL import Image

from autodetect.images.decode import (
    UndecodableImage,
    decode_image,
    encode_jpeg,
    hamming,
    normalize,
    perceptual_hash,
    to_signed64,
    to_unsigned64,
)

pytestmark = pytest.mark.timeout(30)

MAX = 40_000_000
RED, GREEN, BLUE = (230, 20, 20), (20, 230, 20), (20, 20, 230)


def save(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def photo(size=(384, 288), seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)
    return Image.fromarray(small).resize(size, Image.Resampling.BILINEAR)


def close(pixel, colour, tol=40) -> bool:
    return all(abs(int(a) - int(b)) <= tol for a, b in zip(pixel, colour))


def undecodable(data: bytes, max_pixels: int = MAX, **kw) -> str:
    with pytest.raises(UndecodableImage) as err:
        decode_image(data, max_pixels, **kw)
    return err.value.reason


# --- refusals ----------------------------------------------------------------------------------


def test_zero_bytes():
    assert undecodable(b"") == "empty (0 bytes)"


def test_not_an_image():
    assert undecodable(b"<!DOCTYPE html><html></html>") == "unknown image format"


def test_formats_outside_the_list_are_not_parsed():
    ico = save(Image.new("RGB", (32, 32), RED), "ICO")
    assert undecodable(ico) == "unknown image format"


def test_truncated_jpeg():
    data = save(photo((640, 480)), "JPEG", quality=90)
    assert undecodable(data[: len(data) // 2]) == "truncated image"


def test_truncated_png():
    data = save(photo((256, 256)), "PNG")
    assert undecodable(data[: len(data) * 2 // 3]) == "truncated image"


def _png_bomb(width: int, height: int) -> bytes:
    """A 1-bit greyscale PNG of zeros: 20000x20000 is 400 Mpx and ~50 MB of raw rows, a few KB here."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    row = b"\x00" * (1 + (width + 7) // 8)
    z = zlib.compressobj(9)
    idat = b"".join(z.compress(row * 1000) for _ in range(height // 1000)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_png_decompression_bomb_refused_fast_and_small():
    bomb = _png_bomb(20000, 20000)
    assert len(bomb) < 200_000
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    reason = undecodable(bomb)
    elapsed = time.perf_counter() - t0
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert reason.startswith("too many pixels: ")
    assert reason.endswith(f"(limit {MAX})")
    assert elapsed < 1.0  # decoding 400 Mpx would take many seconds
    assert (rss1 - rss0) < 20_000  # KiB: nothing like the 400 MB of pixels was allocated


def test_max_pixels_checked_from_the_header():
    bomb = _png_bomb(3000, 2000)  # 6 Mpx: under Pillow's own limit, over ours
    assert undecodable(bomb, max_pixels=5_000_000) == "too many pixels: 3000x2000 (limit 5000000)"


def test_min_side():
    assert undecodable(save(Image.new("RGB", (1, 1)), "GIF"), min_side=16) == "too small: 1x1"


# --- accepted, converted to upright RGB ------------------------------------------------------------


def test_rgb_jpeg():
    img = decode_image(save(photo(), "JPEG"), MAX)
    assert (img.mode, img.size) == ("RGB", (384, 288))


def test_cmyk_jpeg():
    data = save(Image.new("RGB", (64, 48), RED).convert("CMYK"), "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    img = decode_image(data, MAX)
    assert img.mode == "RGB"
    assert close(img.getpixel((10, 10)), RED)


def test_16_bit_grey_png_is_scaled_not_clipped():
    ramp = np.tile(np.linspace(0, 65535, 256, dtype=np.uint16), (16, 1))
    data = save(Image.fromarray(ramp), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    img = decode_image(data, MAX)
    assert img.mode == "RGB"
    assert img.getpixel((0, 0)) == (0, 0, 0)
    assert img.getpixel((255, 0)) == (255, 255, 255)
    assert abs(img.getpixel((128, 0))[0] - 128) <= 2  # a plain convert would give 255


def test_16_bit_rgb_png():
    arr = np.zeros((16, 16, 3), dtype=np.uint16)
    arr[..., 0] = 60000
    png = io.BytesIO()
    # Pillow cannot build 16-bit RGB from an array; write one by hand.
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(16))
    ihdr = struct.pack(">IIBBBBB", 16, 16, 16, 2, 0, 0, 0)
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    png.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    img = decode_image(png.getvalue(), MAX)
    assert img.mode == "RGB" and close(img.getpixel((3, 3)), (233, 0, 0), 3)


def test_palette_with_transparency_composited_on_white():
    img = Image.new("P", (64, 48), 0)
    img.putpalette([0, 0, 0, *RED] + [0] * 762)
    img.paste(1, (0, 0, 32, 48))  # left half opaque red, right half transparent (index 0)
    out = decode_image(save(img, "PNG", transparency=0), MAX)
    assert out.mode == "RGB"
    assert out.getpixel((5, 5)) == RED
    assert out.getpixel((50, 5)) == (255, 255, 255)


def test_palette_without_transparency():
    img = Image.new("RGB", (64, 48), GREEN).convert("P", palette=Image.Palette.ADAPTIVE)
    out = decode_image(save(img, "PNG"), MAX)
    assert out.mode == "RGB" and close(out.getpixel((5, 5)), GREEN, 5)


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_composited_on_white(mode):
    img = Image.new("RGBA", (20, 20), (0, 0, 0, 0))
    img.paste((0, 0, 0, 255), (0, 0, 10, 20))
    out = decode_image(save(img.convert(mode), "PNG"), MAX)
    assert out.mode == "RGB"
    assert out.getpixel((2, 2)) == (0, 0, 0)
    assert out.getpixel((15, 2)) == (255, 255, 255)


def test_grey_and_bilevel():
    assert decode_image(save(Image.new("L", (8, 8), 77), "PNG"), MAX).getpixel((1, 1)) == (77, 77, 77)
    assert decode_image(save(Image.new("1", (8, 8), 1), "PNG"), MAX).getpixel((1, 1)) == (255, 255, 255)


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_animated_first_frame(fmt):
    frames = [Image.new("RGB", (64, 48), c) for c in (RED, GREEN, BLUE)]
    data = save(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 3
    out = decode_image(data, MAX)
    assert out.mode == "RGB" and out.size == (64, 48)
    assert close(out.getpixel((30, 20)), RED)


@pytest.mark.parametrize("fmt", ["BMP", "TIFF", "WEBP", "AVIF"])
def test_other_formats(fmt):
    out = decode_image(save(Image.new("RGB", (40, 30), BLUE), fmt), MAX)
    assert out.mode == "RGB" and out.size == (40, 30) and close(out.getpixel((20, 15)), BLUE)


def test_heic_if_encoder_available():
    try:
        data = save(Image.new("RGB", (64, 48), BLUE), "HEIF")
    except Exception as exc:  # pillow-heif built without an encoder
        pytest.skip(f"no HEIF encoder: {exc}")
    out = decode_image(data, MAX)
    assert out.mode == "RGB" and close(out.getpixel((30, 20)), BLUE)


def test_exif_orientation_6_stored_upright():
    img = Image.new("RGB", (80, 40), BLUE)
    img.paste(RED, (0, 0, 40, 40))  # as stored: left half red, right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    out = decode_image(save(img, "JPEG", exif=exif, quality=95), MAX)
    assert out.size == (40, 80)  # portrait once upright
    assert out.info["original_size"] == (40, 80)
    assert close(out.getpixel((20, 10)), RED)  # the stored left half is now on top
    assert close(out.getpixel((20, 70)), BLUE)
    assert out.getexif().get(0x0112, 1) == 1
    # encode_jpeg writes no orientation: a viewer shows the stored pixels as they are
    again = Image.open(io.BytesIO(encode_jpeg(out)))
    assert again.size == (40, 80) and again.getexif().get(0x0112) is None


def test_draft_decodes_big_jpeg_smaller_but_big_enough():
    data = save(photo((2000, 1500)), "JPEG")
    out = decode_image(data, MAX, draft_side=512)
    assert out.size == (1000, 750)  # 1/2 scale: 1/4 would fall below 512
    assert out.info["original_size"] == (2000, 1500)
    assert decode_image(data, MAX).size == (2000, 1500)


# --- normalize, encode, hash --------------------------------------------------------------------------


def test_normalize_keeps_aspect_and_never_upscales():
    assert normalize(Image.new("RGB", (1000, 500)), 512).size == (512, 256)
    assert normalize(Image.new("RGB", (300, 1200)), 512).size == (128, 512)
    small = Image.new("RGB", (300, 200))
    assert normalize(small, 512) is small
    assert normalize(Image.new("RGB", (5000, 3)), 512).size == (512, 1)


def test_encode_jpeg_roundtrip():
    data = encode_jpeg(photo(), quality=90)
    assert data[:3] == b"\xff\xd8\xff"
    again = Image.open(io.BytesIO(data))
    assert (again.format, again.mode, again.size) == ("JPEG", "RGB", (384, 288))


def test_perceptual_hash_is_signed_64_bit_phash():
    img = photo(seed=3)
    h = perceptual_hash(img)
    assert -(1 << 63) <= h < (1 << 63)
    assert to_unsigned64(h) == int(str(imagehash.phash(img)), 16)
    assert to_signed64(to_unsigned64(h)) == h
    # pHash's first bit compares the DC coefficient with the median: almost always 1, so the
    # signed values of real photos are almost always negative. Still exactly the same bits:
    assert (h < 0) == (str(imagehash.phash(img))[0] in "89abcdef")
    assert to_signed64(0xFFFFFFFFFFFFFFFF) == -1
    assert to_signed64(0x7FFFFFFFFFFFFFFF) == (1 << 63) - 1
    assert to_signed64(1 << 63) == -(1 << 63)


def test_perceptual_hash_near_duplicates():
    img = photo((640, 480), seed=5)
    h = perceptual_hash(normalize(img, 512))
    recompressed = decode_image(encode_jpeg(img, quality=60), MAX)
    assert hamming(h, perceptual_hash(normalize(recompressed, 512))) <= 4
    assert hamming(h, perceptual_hash(normalize(img.resize((320, 240)), 512))) <= 4
    assert hamming(h, perceptual_hash(normalize(photo((640, 480), seed=6), 512))) > 16


def test_hamming():
    assert hamming(0, 0) == 0
    assert hamming(-1, 0) == 64
    assert hamming(to_signed64(1 << 63), 0) == 1
    assert hamming(0b1011, 0b0001) == 2
