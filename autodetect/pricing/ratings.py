"""Deal ratings: where an asking price stands among comparable offers.

An offer's residual is ``log(asking / fair)``. The ratings cut the residuals of the fit's own comparables
at fixed quantiles (:data:`LEVELS`): "great" is an asking price as low, against its fair price, as the lowest
10% of comparable offers; "good" the next 20%; "fair" the middle 40%; "high" the next 20%; "overpriced" the
top 10%. The cut points themselves (in log units) are measured on each fit and stored with it.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Sequence

RATINGS = ("great", "good", "fair", "high", "overpriced")
#: The residual quantiles that separate the ratings (one fewer than :data:`RATINGS`).
LEVELS = (0.10, 0.30, 0.70, 0.90)


def rating_for(residual: float, thresholds: Sequence[float]) -> str:
    """The rating of a residual (``log(asking / fair)``) given the cut points at :data:`LEVELS`; a residual
    equal to a cut point takes the better rating."""
    return RATINGS[bisect_left(list(thresholds), residual)]


def rate(asking: float, fair: float, thresholds: Sequence[float]) -> str | None:
    """The rating of an asking price against a fair price; None when either is not a positive amount."""
    if not (asking > 0 and fair > 0 and math.isfinite(asking) and math.isfinite(fair)):
        return None
    return rating_for(math.log(asking / fair), thresholds)
