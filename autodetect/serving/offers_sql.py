"""The offers search's SQL: one statement for any set of car models, built once per :class:`Shape` and run
with bound values (:func:`bind_values`): building a SQLAlchemy statement costs more than SQLite takes to
run it, and one round trip reads the rows in the area once.

- **matched**: the active listings that offer one of the models, labelled so (through the index
  ``ix_listings_class_place``: class, status, place) or unlabelled and predicted so by the active
  version (through the version's predictions).
- **area**: the matched rows in the area, each with its distance (computed once): a bounding box on the
  indexed place narrows them, the exact distance decides (:func:`autodetect.serving.places.distance_sql`).
- The statement's rows, told apart by ``part``:

  - 'all': per model, ``n`` offers anywhere and ``unlocated`` without a place (from the index alone);
  - 'inside': per model, ``pricing`` ('none', 'issue', 'usable') and currency, ``n`` offers in the area;
  - 'prices': per model and currency, the statistics of the ``n`` usable prices in the area
    (:func:`autodetect.serving.prices.stats_select`); 'year': the same per model year too, for the
    years with at least ``min_per_year`` prices;
  - 'offer': per model, the offers in the area from ``offset``, ``limit`` of them, ``n`` their rank
    (nearest first, else most recently seen first; ties by listing id), with a thumbnail each.
"""

from __future__ import annotations

import math
import sqlite3
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sqlalchemy import (Float, Integer, String, and_, bindparam, case, cast, func, literal, null, select, true,
                        union_all)
from sqlalchemy.sql import ColumnElement, CompoundSelect, Select, Subquery

from autodetect.serving.places import BoundingBox, Origin, bounding_box, box_sql, distance_sql
from autodetect.serving.prices import stats_select
from autodetect.storage import CarClass, Image, Listing, ListingPrediction, ListingStatus

__all__ = ["ALL", "Shape", "bind_values", "offers_statement"]

#: A page size that means "all of them" (a bound LIMIT must be a number on SQLite).
ALL = 2**62

#: The listing columns an offer shows (and its statistics need).
_OFFER_COLUMNS = (Listing.id.label("listing_id"), Listing.title, Listing.price,
                  func.nullif(func.upper(Listing.currency), "").label("currency"), Listing.price_issue, Listing.year,
                  Listing.mileage, Listing.city, Listing.postal_code, Listing.country, Listing.url, Listing.last_seen,
                  Listing.place_lat, Listing.place_lon)
#: The columns of an 'offer' row beyond those every row has.
_SHOWN = ("listing_id", "match", "title", "price", "price_issue", "mileage", "city", "postal_code", "country", "url",
          "last_seen", "distance_km")


@dataclass(frozen=True)
class Shape:
    """What decides the statement's SQL (everything else is a bound value)."""

    postgres: bool
    version: bool  # unlabelled listings predicted so by a version match too
    origin: bool
    radius: bool
    lon_ranges: int | None  # the bounding box's longitude ranges (0: any longitude); None: no box
    models: int  # how many models (each its own bound value: SQLAlchemy renders a list anew for every run)

    @staticmethod
    def of(postgres: bool, version_id: int | None, origin: Origin | None, radius_km: float | None,
           models: int) -> Shape:
        box = _box(origin, radius_km)
        return Shape(postgres, version_id is not None, origin is not None, radius_km is not None and origin is not None,
                     None if box is None else len(box.lon_ranges), models)


def _box(origin: Origin | None, radius_km: float | None) -> BoundingBox | None:
    if origin is None or radius_km is None:
        return None
    return bounding_box(origin.lat, origin.lon, radius_km)


def bind_values(models: list[str], version_id: int | None, origin: Origin | None, radius_km: float | None, *,
                min_per_year: int, limit: int | None, offset: int) -> dict[str, Any]:
    """The values :func:`offers_statement` is run with."""
    values: dict[str, Any] = {**{f"model_{i}": m for i, m in enumerate(models)}, "version_id": version_id,
                              "active": ListingStatus.active.value,
                              "min_per_year": max(1, min_per_year), "first": offset + 1,
                              "last": ALL if limit is None else offset + limit}
    if origin is not None:
        p1 = math.radians(origin.lat)
        values.update(p1=p1, cos_p1=math.cos(p1), lon0=origin.lon, radius=radius_km)
    box = _box(origin, radius_km)
    if box is not None:
        values.update(lat_min=box.lat_min, lat_max=box.lat_max)
        for i, (west, east) in enumerate(box.lon_ranges):
            values.update({f"west_{i}": west, f"east_{i}": east})
    return values


def _branches(shape: Shape, columns: tuple = _OFFER_COLUMNS) -> list[Select]:
    """The active listings that offer one of the bound ``models``, with the model and how they match it: the
    labelled ones, and (with a version) the unlabelled ones its predictions name.

    Predicted listings are reached through the version's predictions, where on SQLite the status must not
    lead (``status || ''``: most listings are active, and SQLite's planner, without statistics, would
    otherwise walk every active listing by the status index; PostgreSQL's statistics know better)."""
    models = [bindparam(f"model_{i}") for i in range(shape.models)]
    labelled = (select(CarClass.name.label("model"), literal("label").label("match"), *columns)
                .select_from(Listing).join(CarClass, CarClass.id == Listing.class_id)
                .where(CarClass.name.in_(models), Listing.status == bindparam("active")))
    if not shape.version:
        return [labelled]
    lp = ListingPrediction
    predicted = (select(lp.top_class.label("model"), literal("prediction").label("match"), *columns)
                 .select_from(Listing)
                 .join(lp, and_(lp.listing_id == Listing.id, lp.model_version_id == bindparam("version_id")))
                 .where(lp.top_class.in_(models), Listing.class_id.is_(None),
                        (Listing.status if shape.postgres else Listing.status.concat("")) == bindparam("active")))
    return [labelled, predicted]


def _matched(shape: Shape) -> Subquery:
    branches = _branches(shape)
    return (union_all(*branches) if len(branches) > 1 else branches[0]).subquery("matched")


class _Where:
    """The place conditions of a shape over the rows of ``matched``, in bound values."""

    def __init__(self, shape: Shape, rows: Subquery):
        self.shape, self.rows = shape, rows

    def distance(self) -> ColumnElement:
        if not self.shape.origin:
            return cast(null(), Float)
        return distance_sql(self.rows.c.place_lat, self.rows.c.place_lon, bindparam("p1", type_=Float),
                            bindparam("cos_p1", type_=Float), bindparam("lon0", type_=Float), self.shape.postgres)

    def located(self) -> ColumnElement:
        return and_(self.rows.c.place_lat.is_not(None), self.rows.c.place_lon.is_not(None))

    def inside(self) -> ColumnElement:
        """The rows that count: placed within the radius (the bounding box first, then the distance)."""
        if not self.shape.origin:
            return true()
        if not self.shape.radius:
            return self.located()
        condition = self.located()
        if self.shape.lon_ranges is not None:
            box = BoundingBox(bindparam("lat_min", type_=Float), bindparam("lat_max", type_=Float),
                              tuple((bindparam(f"west_{i}", type_=Float), bindparam(f"east_{i}", type_=Float))
                                    for i in range(self.shape.lon_ranges)))
            condition = and_(condition, box_sql(self.rows.c.place_lat, self.rows.c.place_lon, box))
        return and_(condition, self.distance() <= bindparam("radius", type_=Float))


def _materialized(query: Select, name: str, shape: Shape):  # type: ignore[no-untyped-def]
    """``query`` as a CTE the database computes once (SQLite before 3.35 knows no hint: it may inline it)."""
    cte = query.cte(name)
    if shape.postgres or sqlite3.sqlite_version_info >= (3, 35, 0):
        cte = cte.prefix_with("MATERIALIZED")
    return cte


@lru_cache(maxsize=64)
def offers_statement(shape: Shape) -> CompoundSelect:
    """Everything the search answers, in rows told apart by ``part`` (see the module doc). Columns: model,
    part, pricing, currency, year, n, unlocated, the statistics' columns, then an offer's (``_SHOWN``) and
    its ``thumbnail_image_id``; NULL where a part has none of them."""
    matched = _matched(shape)
    where = _Where(shape, matched)
    area = _materialized(select(matched, where.distance().label("distance_km")).where(where.inside()), "area", shape)
    usable = (select(area.c.model, area.c.currency, area.c.year, area.c.price)
              .where(area.c.price.is_not(None), area.c.price_issue.is_(None)).subquery("usable"))
    dated = select(usable).where(usable.c.year.is_not(None)).subquery("dated")
    overall = stats_select(usable, ["model", "currency"], shape.postgres).subquery("overall")
    per_year = (stats_select(dated, ["model", "currency", "year"], shape.postgres)
                .having(func.count() >= bindparam("min_per_year")).subquery("per_year"))
    stats = [c.key for c in overall.c if c.key not in ("model", "currency", "n")]

    page = _page(area, shape)

    def row(model, part, pricing=None, currency=None, year=None, n=None, unlocated=None, stats_of=None,
            offer=None) -> list[ColumnElement]:
        """One branch's columns, in the union's order; NULLs typed like the column they stand in for, so
        that every branch's values are read the same way."""
        return [model, literal(part).label("part"), _or_null(pricing, "pricing", String),
                _or_null(currency, "currency", String), _or_null(year, "year", Integer), _or_null(n, "n", Integer),
                _or_null(unlocated, "unlocated", Integer),
                *(_or_null(stats_of.c[k] if stats_of is not None else None, k, overall.c[k].type) for k in stats),
                *(_or_null(offer.c[k] if offer is not None else None, k, page.c[k].type) for k in _SHOWN),
                _or_null(_thumbnail(offer) if offer is not None else None, "thumbnail_image_id", Integer)]

    a = area.c
    pricing = case((a.price.is_(None), "none"), (a.price_issue.is_not(None), "issue"), else_="usable")
    return union_all(
        *_everywhere(shape, row),
        select(*row(a.model, "inside", pricing, a.currency, n=func.count())).group_by(a.model, pricing, a.currency),
        select(*row(overall.c.model, "prices", currency=overall.c.currency, n=overall.c.n, stats_of=overall)),
        select(*row(per_year.c.model, "year", currency=per_year.c.currency, year=per_year.c.year, n=per_year.c.n,
                    stats_of=per_year)),
        select(*row(page.c.model, "offer", currency=page.c.currency, year=page.c.year, n=page.c.rank, offer=page))
        .where(page.c.rank.between(bindparam("first"), bindparam("last"))),
    )


def _everywhere(shape: Shape, row) -> list[Select]:  # type: ignore[no-untyped-def]
    """The 'all' rows: per model and branch (labelled, predicted), its offers anywhere and those without a
    place, aggregated on each branch's own index (a model may have a row of each branch)."""
    located = and_(Listing.place_lat.is_not(None), Listing.place_lon.is_not(None))
    unlocated = func.sum(case((located, 0), else_=1)) if shape.origin else literal(0)
    out = []
    for branch in _branches(shape, ()):
        model = branch.selected_columns.model
        out.append(branch.with_only_columns(*row(model, "all", n=func.count(), unlocated=unlocated),
                                            maintain_column_froms=True).group_by(model))
    return out


def _or_null(value: Any, name: str, type_: Any) -> ColumnElement:
    """``value``, or a NULL of ``type_`` (PostgreSQL types a union's columns from its branches in turn)."""
    return (cast(null(), type_) if value is None else value).label(name)


def _page(area, shape: Shape) -> Subquery:  # type: ignore[no-untyped-def]
    """The rows in the area ranked per model: nearest first with an origin, else most recently seen first;
    ties by listing id."""
    a = area.c
    order = [a.distance_km, a.listing_id] if shape.origin else [a.last_seen.desc(), a.listing_id.desc()]
    return select(area, func.row_number().over(partition_by=a.model, order_by=order).label("rank")).subquery("page")


def _thumbnail(offer: Subquery) -> ColumnElement:
    """The offer's first photo (by position) with a normalized JPEG."""
    return (select(Image.id).where(Image.listing_id == offer.c.listing_id, Image.normalized_key.is_not(None))
            .order_by(Image.position).limit(1).scalar_subquery())
