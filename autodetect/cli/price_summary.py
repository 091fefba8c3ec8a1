"""The demo's price lines: how far the fair prices are from the sandbox's generating prices, and which
listings' prices do not count, and why."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from autodetect.pricing.fair_price import FairPrices
from autodetect.pricing.fits import comparables
from autodetect.storage import Listing, PriceModel

#: The generating price of a listing by its external id, in its own currency (None: unknown).
ExpectedPrice = Callable[[str], float | None]


def price_fit_errors(session: Session, expected: ExpectedPrice) -> dict[str, Any]:
    """The median absolute percentage error, against the generating price, of the newest fit's fair price and
    of the naive class median, over the usable asking prices the fit was made on (its own listings: an
    in-sample figure; ``benchmarks/prices.py`` measures on held-out listings)."""
    newest = session.scalars(select(PriceModel).order_by(PriceModel.id.desc()).limit(1)).first()
    usable = comparables(session)
    if newest is None or not usable:
        return {"listings": 0, "fair": None, "naive": None}
    fair = FairPrices(newest.params)
    places = {r.id: r for r in session.execute(
        select(Listing.id, Listing.external_id, Listing.postal_code, Listing.country)
        .where(Listing.id.in_([i for i, _ in usable])))}
    medians: dict[tuple[str, str], list[float]] = defaultdict(list)
    for _, c in usable:
        medians[c.class_name, c.currency].append(c.price)
    fair_errors, naive_errors = [], []
    for listing_id, c in usable:
        place = places[listing_id]
        truth = expected(place.external_id)
        estimate = fair.estimate(c.class_name, c.currency, c.year, c.mileage, postal_code=place.postal_code,
                                 country=place.country, title=c.title)
        if truth is None or estimate is None:
            continue
        fair_errors.append(abs(estimate - truth) / truth)
        naive_errors.append(abs(float(np.median(medians[c.class_name, c.currency])) - truth) / truth)
    if not fair_errors:
        return {"listings": 0, "fair": None, "naive": None}
    return {"listings": len(fair_errors), "fair": float(np.median(fair_errors)),
            "naive": float(np.median(naive_errors))}


def price_issues(session: Session) -> dict[str, int]:
    """Listings whose price does not count, by reason, most first."""
    rows = session.execute(select(Listing.price_issue, func.count()).where(Listing.price_issue.is_not(None))
                           .group_by(Listing.price_issue)).all()
    return dict(sorted(((reason, n) for reason, n in rows), key=lambda kv: (-kv[1], kv[0])))


def price_rows(session: Session, expected: ExpectedPrice) -> list[tuple[str, str]]:
    """The summary's rows about prices."""
    errors = price_fit_errors(session, expected)
    issues = price_issues(session)
    fit = (f"{errors['fair']:.1%} (class median: {errors['naive']:.1%}) over {errors['listings']} listings"
           if errors["fair"] is not None else "no fair prices")
    not_counted = ", ".join(f"{reason} {n}" for reason, n in issues.items()) or "none"
    return [("fair price: median abs. error vs the sandbox's generating price", fit),
            (f"listings whose price does not count ({sum(issues.values())})", not_counted)]
