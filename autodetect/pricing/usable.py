"""Which asking prices count in price statistics, and why the others do not.

A listing is always kept; its ``price_issue`` says, in words, why its price must not count (NULL: it
counts). The first rule that applies gives the reason:

- no price at all;
- an auction without a fixed price, best offer or classified ad beside it: its price is the current bid, not
  an asking price (:data:`AUCTION`; a caller may ask for auctions all the same);
- a price below the floor (``Settings.price_floor``): a placeholder ($0, $1, $99...), not an asking price;
- a currency that is not an ISO 4217 code;
- a negative mileage;
- a model year in the future (after next year: next year's models are on sale) or before 1900.

The rules run in SQL over the stored row (:func:`mark_price_issues`, after every page a crawl stores), so a
later record that lacks a field (a summary without the mileage a detail call gave) never clears a reason.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from sqlalchemy import ColumnElement, and_, case, not_, or_, update
from sqlalchemy.orm import Session

from autodetect.storage import Listing, ListingStatus, utcnow

AUCTION = "auction: the price is a bid"
UNKNOWN_CURRENCY = "unknown currency"
NEGATIVE_MILEAGE = "negative mileage"
FUTURE_YEAR = "model year in the future"
EARLY_YEAR = "model year before 1900"
NO_PRICE = "no price"
FIRST_MODEL_YEAR = 1900
#: Active ISO 4217 currency codes.
ISO_4217 = frozenset("""
AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL BSD BTN BWP BYN BZD CAD CDF
CHF CLP CNY COP CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD
HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD
MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN
PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY
TTD TWD TZS UAH UGX USD UYU UZS VES VND VUV WST XAF XCD XOF XPF YER ZAR ZMW ZWL
""".split())


def below_floor(floor: float) -> str:
    return f"placeholder price: below {floor:g}"


def price_issue_expression(floor: float, now: datetime | None = None) -> ColumnElement[str | None]:
    """The reason (a SQL CASE over the ``listings`` row) why its price does not count; NULL if it counts."""
    options = Listing.buying_options
    auction_only = and_(options.like("%AUCTION%"),
                        not_(or_(*(options.like(f"%{o}%") for o in ("FIXED_PRICE", "BEST_OFFER", "CLASSIFIED_AD")))))
    last_year = (now or utcnow()).year + 1
    return case(
        (Listing.price.is_(None), NO_PRICE),
        (auction_only, AUCTION),
        (Listing.price < floor, below_floor(floor)),
        (or_(Listing.currency.is_(None), Listing.currency.not_in(sorted(ISO_4217))), UNKNOWN_CURRENCY),
        (Listing.mileage < 0, NEGATIVE_MILEAGE),
        (Listing.year > last_year, FUTURE_YEAR),
        (Listing.year < FIRST_MODEL_YEAR, EARLY_YEAR),
        else_=None,
    )


def mark_price_issues(session: Session, source: str, external_ids: Collection[str], floor: float) -> int:
    """Set ``price_issue`` on these stored listings from what they now hold; returns how many rows it ran on."""
    if not external_ids:
        return 0
    return session.execute(
        update(Listing)
        .where(Listing.source == source, Listing.external_id.in_(list(external_ids)))
        .values(price_issue=price_issue_expression(floor))
        .execution_options(synchronize_session=False)
    ).rowcount or 0


def counts_for_prices() -> ColumnElement[bool]:
    """The listings whose asking price counts in price statistics (active, priced, no price issue)."""
    return and_(Listing.price_issue.is_(None), Listing.price.is_not(None), Listing.status == ListingStatus.active.value)
