"""Price statistics: count, mean, median, quartiles, min and max. Percentiles interpolate linearly between
order statistics (numpy's default, ``statistics.quantiles(..., method="inclusive")``, spreadsheet PERCENTILE.INC).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

__all__ = ["PriceStats", "price_statistics", "quantile"]


def quantile(sorted_values: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) of already sorted values, interpolated linearly between order statistics."""
    if not sorted_values:
        raise ValueError("no values")
    if not 0 <= q <= 1:
        raise ValueError("q must be within [0, 1]")
    pos = (len(sorted_values) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    frac = pos - lo
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * frac


@dataclass
class PriceStats:
    count: int
    mean: float
    median: float
    p25: float
    p75: float
    min: float
    max: float

    def as_dict(self, ndigits: int = 2) -> dict[str, Any]:
        return {"count": self.count, **{k: round(getattr(self, k), ndigits)
                                        for k in ("mean", "median", "p25", "p75", "min", "max")}}


def price_statistics(prices: Iterable[float | Decimal]) -> PriceStats | None:
    """Count, mean, median, 25th/75th percentiles, min and max; None for no prices."""
    values = sorted(float(p) for p in prices)
    if not values:
        return None
    return PriceStats(
        count=len(values), mean=math.fsum(values) / len(values), median=quantile(values, 0.5),
        p25=quantile(values, 0.25), p75=quantile(values, 0.75), min=values[0], max=values[-1],
    )
