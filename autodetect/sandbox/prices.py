"""Sandbox asking prices that follow a known function, so that a fair-price estimate can be scored.

The generating price of a listing, in US dollars::

    log price = log(base)                                          base: CarSpec.price, a one-year-old car
              + AGE_SLOPE * (age - 1)                              age = CURRENT_YEAR - model year (>= 1)
              + MILEAGE_SLOPE * (mileage - TYPICAL_MILES_PER_YEAR * age) / 1000
              + TRIM_STEP * (the trim's position in the model's trim list)
              + REGION_EFFECTS.get(state, 0)

The trim is the one the title names (:func:`title_trim`); when the title names none, one is drawn
(the car has a trim the buyer cannot see). A listing in another currency has its generating price
converted at :data:`EXCHANGE`. The asking price is the generating price times lognormal noise
(``NOISE_SIGMA``), rounded to $50. The generating function's own deal rating of an asking price puts its
noise at the product's rating quantiles (:data:`autodetect.pricing.ratings.LEVELS`) of that normal
distribution: "great" when the noise lies in its lowest 10%, and so on.

With ``quirks``, about one listing in six carries one of :data:`QUIRKS`: a placeholder price ($0, $1, $99),
an auction (the price is the current bid; some also offer Buy It Now at an asking price), a price written
with three decimals ("12500.000"), a price in EUR or GBP or in an unknown currency ("XYZ"), a negative
mileage, or a model year in the future or before 1900 (the seller's title and aspects say it; the car is
what it is). Everything is drawn apart from the listing's own random stream (:class:`PriceDraws`):
photos and labels never change.
"""

from __future__ import annotations

import hashlib
import math
import re
import struct
from collections.abc import Sequence
from functools import lru_cache
from statistics import NormalDist
from typing import NamedTuple, TypeVar

from autodetect.pricing.ratings import LEVELS, rate
from autodetect.sandbox.cars import CarSpec

CURRENT_YEAR = 2025
AGE_SLOPE = -0.075  # log price per year of age beyond the first (about -7% a year)
MILEAGE_SLOPE = -0.003  # log price per 1,000 miles above (or below) the typical mileage for the age
TYPICAL_MILES_PER_YEAR = 12_000
TRIM_STEP = 0.05  # each trim further along the model's trim list: about +5%
NOISE_SIGMA = 0.10  # how far sellers' asking prices scatter around the generating price (log units)
#: Regional price levels by state (log units); states not named are at 0.
REGION_EFFECTS = {"CA": 0.06, "WA": 0.04, "NY": 0.04, "MA": 0.04, "DC": 0.03, "CO": 0.02, "OR": 0.02,
                  "TX": -0.03, "FL": -0.02, "OH": -0.04, "MI": -0.05, "IN": -0.03, "OK": -0.04, "KY": -0.03,
                  "AL": -0.03, "TN": -0.02, "MO": -0.02}
#: Units of each currency per US dollar ("XYZ" is no currency at all: the number is the dollar amount).
EXCHANGE = {"USD": 1.0, "EUR": 0.92, "GBP": 0.79, "XYZ": 1.0}
#: The quirks and the share of listings carrying each (with ``quirks``).
QUIRKS = {"placeholder": 0.03, "auction": 0.05, "auction_buy_it_now": 0.02, "three_decimals": 0.01,
          "eur": 0.02, "gbp": 0.015, "unknown_currency": 0.005, "negative_mileage": 0.01,
          "future_year": 0.005, "year_before_1900": 0.005}
PLACEHOLDERS = ("0.00", "1.00", "99.00")
#: Quirks whose price is no asking price: nothing to rate.
_UNRATED = {"placeholder", "auction", "unknown_currency"}
_CURRENCY_OF = {"eur": "EUR", "gbp": "GBP", "unknown_currency": "XYZ"}
_NORMAL = NormalDist()
_NOISE_THRESHOLDS = tuple(NOISE_SIGMA * _NORMAL.inv_cdf(level) for level in LEVELS)
_T = TypeVar("_T")


class Offer(NamedTuple):
    """How a listing is offered, and what its price should be."""

    price: str | None  # as served ("18450.00"); None without a price
    currency: str
    buying_options: tuple[str, ...]  # the Browse API's buyingOptions
    bid_count: int | None  # auctions
    current_bid: str | None  # auctions: the highest bid so far (or the starting bid)
    trim: str | None
    expected: float  # the generating price, in ``currency``
    rating: str | None  # the generating function's own rating of the asking price; None: no asking price
    quirk: str | None
    stated_year: int  # what the seller says (title and aspects)
    stated_mileage: int


@lru_cache(maxsize=256)
def _trim_pattern(trims: tuple[str, ...]) -> re.Pattern[str]:
    names = "|".join(re.escape(t) for t in sorted(trims, key=len, reverse=True))
    return re.compile(rf"(?<![\w/-])({names})(?![\w/-])", re.IGNORECASE)


def title_trim(spec: CarSpec, title: str) -> str | None:
    """The first of the model's trims that the title names as whole words (case-insensitive), the longest
    where several start at one place: "Premium Plus" rather than "Premium"."""
    if not spec.names.trims:
        return None
    found = _trim_pattern(spec.names.trims).search(title)
    return next(t for t in spec.names.trims if t.lower() == found.group(1).lower()) if found else None


def generating_price(spec: CarSpec, year: int, mileage: int, trim: str | None, state: str) -> float:
    """The generating price in US dollars (see the module's docstring)."""
    age = max(1, CURRENT_YEAR - year)
    trims = spec.names.trims
    log_price = (math.log(spec.price) + AGE_SLOPE * (age - 1)
                 + MILEAGE_SLOPE * (mileage - TYPICAL_MILES_PER_YEAR * age) / 1000
                 + TRIM_STEP * (trims.index(trim) if trim in trims else 0)
                 + REGION_EFFECTS.get(state, 0.0))
    return math.exp(log_price)


def own_rating(asking: float, expected: float) -> str | None:
    """The generating function's deal rating of an asking price: its noise against the noise's quantiles."""
    return rate(asking, expected, _NOISE_THRESHOLDS)


class PriceDraws(NamedTuple):
    """The uniform draws in (0, 1) that one listing's offer is made of. They come from a keyed hash of the
    listing (:func:`price_draws`), apart from the listing's own random stream: photos and labels never move,
    and hashing costs a fraction of seeding a generator."""

    quirk: float
    trim: float
    noise: float
    best_offer: float
    bids: float
    bid_share: float
    pick: float  # the placeholder, or the stated model year


def price_draws(*key: object) -> PriceDraws:
    digest = hashlib.blake2b(repr(key).encode(), digest_size=8 * len(PriceDraws._fields)).digest()
    return PriceDraws(*((n + 0.5) / 2.0**64 for n in struct.unpack(f"<{len(PriceDraws._fields)}Q", digest)))


def _pick(options: Sequence[_T], u: float) -> _T:
    return options[int(u * len(options))]


def _quirk(u: float, enabled: bool) -> str | None:
    edge = 0.0
    for quirk, share in QUIRKS.items():
        edge += share
        if enabled and u < edge:
            return quirk
    return None


def _stated(year: int, mileage: int, quirk: str | None, u: float) -> tuple[int, int]:
    """The model year and mileage the seller states."""
    if quirk == "future_year":
        return CURRENT_YEAR + _pick(range(10, 25), u), mileage
    if quirk == "year_before_1900":
        return _pick(range(1886, 1900), u), mileage
    return year, -mileage if quirk == "negative_mileage" else mileage


def _auction(quirk: str, expected: float, draws: PriceDraws) -> tuple[tuple[str, ...], int, str]:
    """(buying options, bids, current bid) of an auction; the bid rises with the bids."""
    bids = _pick(range(26) if quirk == "auction" else range(4), draws.bids)
    current_bid = f"{expected * (0.2 + draws.bid_share * (0.2 + 0.02 * bids)):.2f}" if bids else "99.00"
    return ("AUCTION",) if quirk == "auction" else ("AUCTION", "FIXED_PRICE"), bids, current_bid


def draw_offer(spec: CarSpec, year: int, mileage: int, title: str, state: str, draws: PriceDraws, *,
               quirks: bool, defect: str | None = None) -> Offer:
    """The offer of one listing. ``defect`` is the marketplace's bad case ("no_price": no price;
    "comma_price": "12,500.00")."""
    quirk = _quirk(draws.quirk, quirks and defect is None)
    trim = title_trim(spec, title) or (_pick(spec.names.trims, draws.trim) if spec.names.trims else None)
    currency = _CURRENCY_OF.get(quirk or "", "USD")
    expected = generating_price(spec, year, mileage, trim, state) * EXCHANGE[currency]
    asking = max(50, round(expected * math.exp(NOISE_SIGMA * _NORMAL.inv_cdf(draws.noise)) / 50) * 50)
    options = ("FIXED_PRICE", "BEST_OFFER") if draws.best_offer < 0.3 else ("FIXED_PRICE",)
    bids, current_bid = None, None
    if quirk in ("auction", "auction_buy_it_now"):
        options, bids, current_bid = _auction(quirk, expected, draws)
    price: str | None = f"{asking:.3f}" if quirk == "three_decimals" else f"{asking:.2f}"
    if quirk == "placeholder":
        price = _pick(PLACEHOLDERS, draws.pick)
    elif quirk == "auction":
        price = current_bid
    elif defect == "no_price":
        price = None
    elif defect == "comma_price":
        price, asking = "12,500.00", 12_500
    rated = price is not None and quirk not in _UNRATED
    stated_year, stated_mileage = _stated(year, mileage, quirk, draws.pick)
    return Offer(price, currency, options, bids, current_bid, trim, expected,
                 own_rating(asking, expected) if rated else None, quirk, stated_year, stated_mileage)


def seller_view(title: str, aspects: dict[str, str], year: int, offer: Offer) -> tuple[str, dict[str, str]]:
    """The title and aspects with the model year and mileage the seller states."""
    if offer.stated_year != year:
        title = re.sub(rf"(?<!\d){year}(?!\d)", str(offer.stated_year), title, count=1)
    return title, {**aspects, "Year": str(offer.stated_year), "Mileage": str(offer.stated_mileage)}
