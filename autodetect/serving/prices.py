"""Price statistics: count, mean, median, quartiles, min and max, over prices in Python or as SQL aggregates.

Percentiles interpolate linearly between order statistics (numpy's default,
``statistics.quantiles(..., method="inclusive")``, spreadsheet PERCENTILE.INC): :func:`quantile_position`
states the definition once. In SQL (:func:`stats_select`) PostgreSQL's ``percentile_cont`` computes exactly
that (same positions, same ``low + (high - low) * fraction``); SQLite has no percentile aggregate, so its
query numbers the prices of each group with a window function and returns the two order statistics around
each position, which :func:`stats_from_row` interpolates here. The mean comes from the exact sum in cents
(prices are stored to the cent), so it does not depend on the order the database adds in.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import Float, Integer, case, cast, func, select, type_coerce
from sqlalchemy.sql import ColumnElement, Select, Subquery

__all__ = ["QUANTILES", "PriceStats", "price_statistics", "quantile", "quantile_position", "stats_from_row",
           "stats_select"]

#: The percentiles reported, by name.
QUANTILES = (("p25", 0.25), ("median", 0.5), ("p75", 0.75))


def quantile_position(count: int, q: float) -> tuple[int, int, float]:
    """Where the q-quantile of ``count`` sorted values lies: the two order statistics (0-based) around it
    and the fraction of the way from the first to the second."""
    pos = (count - 1) * q
    low = math.floor(pos)
    return low, min(low + 1, count - 1), pos - low


def interpolate(low: float, high: float, fraction: float) -> float:
    return low + (high - low) * fraction


def quantile(sorted_values: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) of already sorted values, interpolated linearly between order statistics."""
    if not sorted_values:
        raise ValueError("no values")
    if not 0 <= q <= 1:
        raise ValueError("q must be within [0, 1]")
    low, high, fraction = quantile_position(len(sorted_values), q)
    return interpolate(sorted_values[low], sorted_values[high], fraction)


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


def stats_select(rows: Subquery, keys: Sequence[str], postgres: bool) -> Select:
    """The price statistics of each group of ``rows`` (a subquery with the ``keys`` columns and ``price``),
    one row per group: the keys, ``n`` (the count), ``total_cents``, ``min``, ``max`` and, per quantile name, its
    value (PostgreSQL) or ``<name>_low`` and ``<name>_high`` (SQLite); :func:`stats_from_row` reads it."""
    if postgres:
        group = [rows.c[k] for k in keys]
        price = cast(rows.c.price, Float)
        quantiles = [func.percentile_cont(q).within_group(price).label(name) for name, q in QUANTILES]
        return select(*group, *_plain_aggregates(rows.c.price), *quantiles).group_by(*group)
    numbered = select(
        *(rows.c[k] for k in keys), rows.c.price,
        (func.row_number().over(partition_by=[rows.c[k] for k in keys], order_by=rows.c.price) - 1)
        .label("rank"), func.count().over(partition_by=[rows.c[k] for k in keys]).label("group_size"),
    ).subquery()
    group = [numbered.c[k] for k in keys]
    return select(*group, *_plain_aggregates(numbered.c.price),
                  *_order_statistics(numbered.c.price, numbered.c.rank, numbered.c.group_size)).group_by(*group)


def _plain_aggregates(price: ColumnElement) -> list[ColumnElement]:
    # read as plain floats: the result needs no Decimal on the way (the mean comes from the cents, exactly)
    return [func.count().label("n"), type_coerce(func.sum(func.round(price * 100)), Float).label("total_cents"),
            type_coerce(func.min(price), Float).label("min"), type_coerce(func.max(price), Float).label("max")]


def _order_statistics(price: ColumnElement, rank: ColumnElement, n: ColumnElement) -> list[ColumnElement]:
    """Per quantile, the prices at the two ranks around its position (:func:`quantile_position` in SQL)."""
    columns = []
    for name, q in QUANTILES:
        low = cast((n - 1) * q, Integer)  # the position is never negative: truncation is floor
        high = func.min(low + 1, n - 1)
        columns += [type_coerce(func.max(case((rank == low, price))), Float).label(f"{name}_low"),
                    type_coerce(func.max(case((rank == high, price))), Float).label(f"{name}_high")]
    return columns


def stats_from_row(row: Any, postgres: bool) -> PriceStats:
    """:class:`PriceStats` from a row of :func:`stats_select`."""
    count = int(row.n)
    values = {}
    for name, q in QUANTILES:
        if postgres:
            values[name] = float(getattr(row, name))
        else:
            _, _, fraction = quantile_position(count, q)
            values[name] = interpolate(float(getattr(row, f"{name}_low")), float(getattr(row, f"{name}_high")),
                                       fraction)
    return PriceStats(count=count, mean=int(row.total_cents) / (100 * count),  # exact integers: correctly rounded
                      min=float(row.min), max=float(row.max), **values)
