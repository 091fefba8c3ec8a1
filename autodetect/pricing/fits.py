"""Fair-price fits of the stored catalogue: what they are fitted on, when they are refitted, where they live.

A fit covers the usable asking prices (``pricing/usable.py``) of active, labelled listings with a model
year. It is stored as a ``price_models`` row named by its ``catalogue_key``: a digest of those listings
(their count, largest id, and sums of price, year, mileage, class and title length) and of the settings the
fit depends on. A crawl's end refits when the key changed (:func:`refresh_fair_prices`); a reader refits
lazily when the key changed and the newest fit is older than ``price_refit_interval_s``
(:func:`current_fair_prices`), so a crawl in progress costs a reader at most one refit a minute.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import timedelta

from sqlalchemy import ColumnElement, delete, func, select
from sqlalchemy.orm import Session

from autodetect.pricing.fair_price import Comparable, FairPrices, fit_fair_prices, region_of
from autodetect.pricing.usable import counts_for_prices
from autodetect.settings import Settings
from autodetect.storage import CarClass, Listing, PriceModel, utcnow

log = logging.getLogger(__name__)

FIT_VERSION = 1  # part of the catalogue key: a change in how fits are made refits every catalogue
KEEP_FITS = 5  # older price_models rows are deleted after a refit


def _usable() -> tuple[ColumnElement[bool], ...]:
    return (counts_for_prices(), Listing.class_id.is_not(None), Listing.year.is_not(None))


def comparables(session: Session) -> list[tuple[int, Comparable]]:
    """(listing id, comparable) of every listing a fit is made on, by id."""
    rows = session.execute(
        select(Listing.id, CarClass.name, CarClass.make, Listing.currency, Listing.price, Listing.year,
               Listing.mileage, Listing.postal_code, Listing.country, Listing.title)
        .join(CarClass, CarClass.id == Listing.class_id)
        .where(*_usable())
        .order_by(Listing.id)
    ).all()
    return [(r.id, Comparable(r.name, r.make, r.currency, float(r.price), r.year,
                              r.mileage, region_of(r.postal_code, r.country), r.title or ""))
            for r in rows]


def catalogue_key(session: Session, settings: Settings) -> str:
    """A digest of the listings a fit would be made on, and of the settings it would be made with."""
    summary = session.execute(select(
        func.count(), func.max(Listing.id), func.sum(Listing.price), func.sum(Listing.year),
        func.sum(func.coalesce(Listing.mileage, 0)), func.sum(Listing.class_id),
        func.sum(func.length(Listing.title)),
    ).where(*_usable())).one()
    text = repr((FIT_VERSION, tuple(str(v) for v in summary), settings.price_floor, settings.price_own_fit_min,
                 settings.price_min_comparables))
    return hashlib.sha256(text.encode()).hexdigest()


def refit(session: Session, settings: Settings) -> PriceModel:
    """Fit the catalogue now and store the fit (keeping the newest ``KEEP_FITS``)."""
    key = catalogue_key(session, settings)
    rows = [c for _, c in comparables(session)]
    params = fit_fair_prices(rows, reference_year=utcnow().year, own_fit_min=settings.price_own_fit_min,
                             min_comparables=settings.price_min_comparables)
    model = PriceModel(catalogue_key=key, listings=len(rows), params=params, fitted_at=utcnow())
    session.add(model)
    session.flush()
    kept = select(PriceModel.id).order_by(PriceModel.id.desc()).limit(KEEP_FITS).scalar_subquery()
    oldest_kept = session.scalar(select(func.min(PriceModel.id)).where(PriceModel.id.in_(kept)))
    session.execute(delete(PriceModel).where(PriceModel.id < oldest_kept))
    log.info("fair prices refitted on %d asking prices (%d classes)", len(rows),
             sum(len(c) for c in params["curves"].values()))
    return model


def refresh_fair_prices(session: Session, settings: Settings, *, fresh_for_s: float = 0.0) -> PriceModel:
    """The newest fit, refitted first when the catalogue changed since it was made, unless it was made less
    than ``fresh_for_s`` seconds ago."""
    newest = session.scalars(select(PriceModel).order_by(PriceModel.id.desc()).limit(1)).first()
    if newest is not None and newest.fitted_at > utcnow() - timedelta(seconds=fresh_for_s):
        return newest
    if newest is not None and newest.catalogue_key == catalogue_key(session, settings):
        return newest
    return refit(session, settings)


def current_fair_prices(session: Session, settings: Settings) -> FairPrices:
    """The fair prices of the catalogue as it is (refitted lazily, see the module's docstring). A refit
    adds a ``price_models`` row in the caller's transaction."""
    return FairPrices(refresh_fair_prices(session, settings, fresh_for_s=settings.price_refit_interval_s).params)
