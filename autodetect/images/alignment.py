"""How far apart two photos are once aligned (``residual``): small for a copy (re-encoded, resized,
brightened, cropped by a few percent per edge), large for a distinct photo however alike.

The crop of one photo that best aligns with all of the other is searched (up to 8% per edge, both ways,
coarse grid then coordinate ascent), each colour channel is fitted by a gain and an offset (brightness,
contrast), pixels clipped white in either photo are left out, and what remains is the RMS of the
per-pixel worst channel difference, in grey levels (0-255). The dedup stage
(``autodetect.pipeline.dedup``) confirms its hash candidates with it; no database here.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image as PILImage

_MAX_CROP = 0.08  # per edge, what the alignment search allows (the sandbox crops at most 6%)
_WORK_W = 128  # working width of the fine comparison (colour)
_COARSE_W = 64  # working width of the coarse alignment search (grey)
_FINE = (64, 48)  # comparison grid (x, y)
_COARSE = (24, 18)
_COARSE_CUTS = [(float(lo), float(hi)) for lo in np.linspace(0.0, _MAX_CROP, 5)
                for hi in np.linspace(0.0, _MAX_CROP, 5)]
_REFINE_STEPS = (0.01, 0.005, 0.0025)
_GREY = np.array([0.299, 0.587, 0.114], dtype=np.float32)
# All sampling is gathers and element-wise arithmetic, no BLAS: multi-threaded BLAS on these tiny
# matrices stalls badly on a busy machine.


class Thumb:
    """A photo prepared for verification: small colour and grey float arrays."""

    def __init__(self, img: PILImage.Image):
        img = img.convert("RGB")
        h = max(8, round(img.height * _WORK_W / img.width))
        self.rgb = np.asarray(img.resize((_WORK_W, h), PILImage.Resampling.BOX), dtype=np.float32)
        hc = max(8, round(img.height * _COARSE_W / img.width))
        small = np.asarray(img.resize((_COARSE_W, hc), PILImage.Resampling.BOX), dtype=np.float32)
        self.coarse = (small * _GREY).sum(axis=2)
        self.h, self.w = self.rgb.shape[:2]


@lru_cache(maxsize=8192)
def _taps(n_out: int, n_in: int, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Linear interpolation taps ``(i0, i1, f)`` sampling ``n_out`` points over the span [lo, hi]
    (fractions of ``n_in`` pixels): ``x[i0] * (1 - f) + x[i1] * f``."""
    pos = (lo + (hi - lo) * (np.arange(n_out) + 0.5) / n_out) * n_in - 0.5
    pos = np.clip(pos, 0, n_in - 1)
    i0 = np.floor(pos).astype(np.intp)
    return i0, np.minimum(i0 + 1, n_in - 1), (pos - i0).astype(np.float32)


@lru_cache(maxsize=64)
def _coarse_taps(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The taps of every (low, high) cut of the coarse grid, concatenated."""
    taps = [_taps(n_out, n_in, lo, 1.0 - hi) for lo, hi in _COARSE_CUTS]
    return tuple(np.concatenate(t) for t in zip(*taps))  # type: ignore[return-value]


def _rows(x: np.ndarray, taps) -> np.ndarray:
    i0, i1, f = taps
    shape = (-1,) + (1,) * (x.ndim - 1)
    return x[i0] * (1 - f).reshape(shape) + x[i1] * f.reshape(shape)


def _cols(x: np.ndarray, taps) -> np.ndarray:
    i0, i1, f = taps
    shape = (-1,) + (1,) * (x.ndim - 2)
    return x[:, i0] * (1 - f).reshape(shape) + x[:, i1] * f.reshape(shape)


def _unit(v: np.ndarray) -> np.ndarray:
    v = v - v.mean(axis=-1, keepdims=True)
    return v / np.maximum(np.sqrt((v * v).sum(axis=-1, keepdims=True)), 1e-6)


def _sample(t: Thumb, box: tuple[float, float, float, float]) -> np.ndarray:
    """The region ``box`` = (left, top, right, bottom cut, as fractions) of ``t`` on the fine grid,
    as (3, y * x)."""
    left, top, right, bottom = (round(v, 5) for v in box)
    fx, fy = _FINE
    region = _cols(_rows(t.rgb, _taps(fy, t.h, top, 1 - bottom)), _taps(fx, t.w, left, 1 - right))
    return region.transpose(2, 0, 1).reshape(3, -1)


def _coarse_align(whole: Thumb, other: Thumb) -> tuple[float, tuple[float, float, float, float]]:
    """The coarse-grid crop of ``other`` that best matches all of ``whole`` (grey correlation)."""
    cx, cy = _COARSE
    h, w = whole.coarse.shape
    a = _unit(_cols(_rows(whole.coarse, _taps(cy, h, 0.0, 1.0)), _taps(cx, w, 0.0, 1.0)).ravel())
    h, w = other.coarse.shape
    n = len(_COARSE_CUTS)
    grid = _cols(_rows(other.coarse, _coarse_taps(cy, h)), _coarse_taps(cx, w))  # (n*cy, n*cx)
    grid = grid.reshape(n, cy, n, cx).transpose(0, 2, 1, 3).reshape(n * n, cy * cx)
    scores = (_unit(grid) * a).sum(axis=1)
    k = int(np.argmax(scores))
    iy, ix = divmod(k, n)
    (top, bottom), (left, right) = _COARSE_CUTS[iy], _COARSE_CUTS[ix]
    return float(scores[k]), (left, top, right, bottom)


def _refine(whole: Thumb, other: Thumb, box: tuple[float, float, float, float]):
    """Coordinate ascent of the colour correlation over the four cuts; returns (box, target, region)."""
    target = _sample(whole, (0.0, 0.0, 0.0, 0.0))
    unit_target = _unit(target).ravel()

    def score(b):
        return float((_unit(_sample(other, b)).ravel() * unit_target).sum())

    best, best_score = box, score(box)
    for step in _REFINE_STEPS:
        improved = True
        while improved:
            improved = False
            for k in range(4):
                for d in (-step, step):
                    b = list(best)
                    b[k] = min(_MAX_CROP + 0.02, max(0.0, b[k] + d))
                    b = tuple(b)
                    if b == best:
                        continue
                    s = score(b)
                    if s > best_score + 1e-7:
                        best, best_score, improved = b, s, True
    return best, target, _sample(other, best)


_CLIPPED = 245.0  # a pixel this bright in either photo may be clipped (a brightened copy saturates)


def _fit_residual(target: np.ndarray, region: np.ndarray) -> float:
    """RMS of the per-pixel worst channel difference after fitting ``region`` to ``target`` by a gain and
    an offset per channel, over the pixels that are not clipped in either (when enough are left)."""
    keep = (target.max(axis=0) < _CLIPPED) & (region.max(axis=0) < _CLIPPED)
    if keep.mean() >= 0.25:
        target, region = target[:, keep], region[:, keep]
    xm, ym = region.mean(axis=1, keepdims=True), target.mean(axis=1, keepdims=True)
    x, y = region - xm, target - ym
    gain = (x * y).sum(axis=1, keepdims=True) / np.maximum((x * x).sum(axis=1, keepdims=True), 1e-6)
    if (gain < 0).any():
        return float("inf")  # a negative image is not a copy
    worst = np.abs(y - gain * x).max(axis=0)
    return float(np.sqrt((worst * worst).mean()))


def residual(a: Thumb, b: Thumb, limit: float | None = None) -> float:
    """How far apart two photos are once aligned: the RMS (grey levels, 0-255) of the per-pixel worst
    channel difference after the best crop of one to the other and a per-channel gain and offset fit.

    With ``limit``, only the side of ``limit`` the answer falls on is exact: the fine alignment is
    skipped when the coarse one already gives at most ``limit``, or more than three times it."""
    first = _coarse_align(a, b)
    second = _coarse_align(b, a)
    whole, other, box = (a, b, first[1]) if first[0] >= second[0] else (b, a, second[1])
    coarse = _fit_residual(_sample(whole, (0.0, 0.0, 0.0, 0.0)), _sample(other, box))
    if limit is not None and (coarse <= limit or coarse > 3 * limit):
        return coarse
    _, target, region = _refine(whole, other, box)
    return min(coarse, _fit_residual(target, region))

