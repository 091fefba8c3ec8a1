"""Robust linear regression: Huber's M-estimator by iteratively reweighted least squares (numpy only).

Used for log prices, where a few offers far from the rest (a wrong label, a misread price that passed the
checks, a car with a story) must not drag a curve: a row whose residual is beyond ``delta`` times the
residuals' robust scale (1.4826 x their median absolute deviation) counts with weight ``delta * scale /
|residual|`` instead of 1. A small ridge penalty per column keeps a fit with few rows, or with a column
that barely varies, determined; the intercept is never penalised.
"""

from __future__ import annotations

import numpy as np

HUBER_DELTA = 1.345  # 95% efficiency at normal errors
_ITERATIONS = 50
_TOLERANCE = 1e-6


def robust_scale(residuals: np.ndarray) -> float:
    """1.4826 x the median absolute deviation: the standard deviation for normal errors, outliers aside."""
    if residuals.size == 0:
        return 0.0
    return float(1.4826 * np.median(np.abs(residuals - np.median(residuals))))


def huber_fit(x: np.ndarray, y: np.ndarray, penalty: np.ndarray, delta: float = HUBER_DELTA) -> np.ndarray:
    """Coefficients ``b`` minimising the Huber loss of ``y - x @ b`` plus ``sum(penalty * b**2)``.

    ``x``'s first column is the intercept (a column of ones, ``penalty[0]`` ignored). The other columns are
    standardised inside the fit, so a penalty means the same whatever a column's units; coefficients come
    back in the columns' own units."""
    n, k = x.shape
    centre = np.r_[0.0, x[:, 1:].mean(axis=0)] if n else np.zeros(k)
    spread = np.r_[1.0, x[:, 1:].std(axis=0)] if n else np.ones(k)
    spread[spread < 1e-9] = 1.0
    z = (x - centre) / spread
    ridge = np.diag(np.r_[0.0, np.asarray(penalty[1:], dtype=float) / spread[1:] ** 2])
    weights = np.ones(n)
    coef = np.zeros(k)
    for _ in range(_ITERATIONS):
        zw = z * weights[:, None]
        new = np.linalg.solve(zw.T @ z + ridge + 1e-9 * np.eye(k), zw.T @ y)
        residuals = y - z @ new
        scale = max(robust_scale(residuals), 1e-6)
        weights = np.minimum(1.0, delta * scale / np.maximum(np.abs(residuals), 1e-12))
        done = np.max(np.abs(new - coef)) < _TOLERANCE
        coef = new
        if done:
            break
    slopes = coef[1:] / spread[1:]
    return np.r_[coef[0] - float(slopes @ centre[1:]), slopes]
