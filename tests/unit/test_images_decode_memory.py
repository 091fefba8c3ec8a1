"""Decoding stays within a bounded amount of memory: a small 16-bit greyscale PNG of 6000x6600
pixels (~80 KiB on the wire) once cost ~760 MiB in full-frame int64 copies."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_MAKE = """
import sys
from PIL import Image, ImageDraw
img = Image.new("I;16", (6000, 6600), 0)
draw = ImageDraw.Draw(img)
for y in range(0, 6600, 50):
    draw.line([(0, y), (5999, y)], fill=40000, width=3)
img.save(sys.argv[1], "PNG", optimize=True)
"""

_DECODE = """
import json, resource, sys
from autodetect.images.decode import decode_image
data = open(sys.argv[1], "rb").read()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
img = decode_image(data, 40_000_000, draft_side=512)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"growth_mib": (after - before) / 1024, "size": img.size, "mode": img.mode,
                  "original": img.info["original_size"], "max": img.getextrema()[0][1]}))
"""


def wide_grey_png(path: Path) -> Path:
    """The 16-bit PNG, made in its own process (making it costs memory that must not be counted)."""
    subprocess.run([sys.executable, "-c", _MAKE, str(path)], check=True)
    return path


def test_a_16_bit_png_near_the_pixel_limit_decodes_in_bounded_memory(tmp_path):
    png = wide_grey_png(tmp_path / "wide16.png")
    assert png.stat().st_size < 100 * 1024
    out = subprocess.run([sys.executable, "-c", _DECODE, str(png)], check=True, capture_output=True, text=True,
                         cwd=ROOT)
    result = json.loads(out.stdout)
    print(result)
    assert result["growth_mib"] < 200, result
    assert result["mode"] == "RGB" and tuple(result["original"]) == (6000, 6600)
    assert max(result["size"]) >= 512  # reduced for the normalized copy, never below it
    assert 0 < result["max"] < 255  # scaled to 8 bits (clipping would turn the lines white)
