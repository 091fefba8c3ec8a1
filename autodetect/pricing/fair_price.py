"""The fair price of a used car: what comparable offers ask for a car of its class, age, mileage, trim and
region. These are asking prices, not sale prices.

How a fit is made (:func:`fit_fair_prices`), per currency, over the usable asking prices only
(``pricing/usable.py``):

1. The features: age (the fit's reference year less the model year), age squared, log(1 + miles / 1000)
   with a flag for a missing mileage (imputed from the age at the catalogue's median miles per year; a
   curve uses mileage only when at least ``MIN_MILEAGES`` of its offers state one), and words of the title
   (trims, engines, body styles: "xlt", "amg", "coupe"...).
2. A car class with at least ``own_fit_min`` offers gets its own curve: a Huber regression of log price
   on those features and its frequent title words, each word's effect shrunk toward 0 as if
   ``WORD_PENALTY`` more offers without an effect had it.
3. A class with fewer offers (but at least ``min_comparables``) borrows the curve of its make, fitted over
   every offer of the make (when they are at least ``own_fit_min`` over two classes or more), else that of
   the whole catalogue; such a wide curve is fitted with one level per class (fit the common curve to the
   prices less their class's level, set each level to the class's median residual, repeat), and the class
   is shifted by its own median residual. A class with fewer than ``min_comparables`` offers gets no fair
   price.
4. The region (country and first three characters of the postal code) shifts every class alike: the
   region's median residual, shrunk by n / (n + ``REGION_SHRINK``). Steps 2-4 run twice, the curves the
   second time fitted to prices less their region's shift.

Deal ratings (``pricing/ratings.py``) cut the fit's own residuals, log(asking / fair), at their 10th, 30th,
70th and 90th percentiles: an offer is "great" below the first cut, "good" below the second, "fair" up to
the third, "high" up to the fourth and "overpriced" above it. The cuts are stored with the fit.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import numpy as np

from autodetect.pricing.ratings import LEVELS, rate
from autodetect.pricing.regression import huber_fit

FEATURES = ("intercept", "age", "age_squared", "log_mileage", "mileage_missing")
MIN_MILEAGES = 15
WORD_PENALTY = 10.0
WORD_MIN_COUNT = 8
WORD_MAX_SHARE = 0.5
MAX_WORDS = 30
REGION_SHRINK = 10.0
REGION_MIN = 3
_SLOPE_PENALTY = 1e-3
_BACKFIT_ROUNDS = 4
_DEFAULT_MILES_PER_YEAR = 12_000.0
_WORD = re.compile(r"[a-z0-9]+(?:[-/][a-z0-9]+)*")
_YEAR_WORD = re.compile(r"(?:19|20)\d\d")


class Comparable(NamedTuple):
    """One usable asking price."""

    class_name: str
    make: str
    currency: str
    price: float
    year: int
    mileage: int | None
    region: str | None
    title: str


def region_of(postal_code: str | None, country: str | None) -> str | None:
    """"US:100" for postal code 10001 in the US; None without a postal code."""
    code = (postal_code or "").strip().upper()
    return f"{(country or '').upper()}:{code[:3]}" if code else None


def title_words(title: str | None) -> set[str]:
    """The lower-case words of a title, model years left out: "2014 Audi TT Premium Plus" ->
    {"audi", "tt", "premium", "plus"}."""
    return {w for w in _WORD.findall((title or "").lower()) if not _YEAR_WORD.fullmatch(w)}


def features(ages: np.ndarray, mileages: np.ndarray, miles_per_year: float) -> np.ndarray:
    """The design matrix over :data:`FEATURES`; a mileage is NaN when unknown."""
    ages = np.maximum(ages.astype(float), 0.0)
    missing = np.isnan(mileages)
    miles = np.where(missing, miles_per_year * np.maximum(ages, 0.5), np.maximum(np.nan_to_num(mileages), 0.0))
    return np.column_stack([np.ones(len(ages)), ages, ages ** 2, np.log1p(miles / 1000.0), missing.astype(float)])


class _Offers:
    """The comparables of one currency as arrays."""

    def __init__(self, rows: Sequence[Comparable], reference_year: int, miles_per_year: float):
        self.rows = rows
        self.classes = np.array([r.class_name for r in rows], dtype=object)
        self.makes = np.array([r.make for r in rows], dtype=object)
        self.y = np.log(np.array([r.price for r in rows], dtype=float))
        mileages = np.array([np.nan if r.mileage is None or r.mileage < 0 else r.mileage for r in rows], dtype=float)
        self.x = features(reference_year - np.array([r.year for r in rows]), mileages, miles_per_year)
        self.words = [title_words(r.title) for r in rows]


def _columns(x: np.ndarray) -> np.ndarray:
    """Which feature columns a curve fitted on ``x`` uses: mileage only with enough stated mileages."""
    stated = int(np.sum(x[:, 4] == 0))
    return np.array([True, True, True, stated >= MIN_MILEAGES, stated >= MIN_MILEAGES])


def _fit_curve(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """A Huber curve over :data:`FEATURES` (unused columns at 0)."""
    use = _columns(x)
    coef = np.zeros(len(FEATURES))
    coef[use] = huber_fit(x[:, use], y, np.r_[0.0, np.full(int(use.sum()) - 1, _SLOPE_PENALTY)])
    return coef


def _frequent_words(words: list[set[str]]) -> list[str]:
    counts = Counter(w for ws in words for w in ws)
    limit = WORD_MAX_SHARE * len(words)
    wanted = [w for w, n in counts.most_common() if WORD_MIN_COUNT <= n <= limit]
    return sorted(wanted[:MAX_WORDS])


def _own_curve(x: np.ndarray, y: np.ndarray, words: list[set[str]]) -> dict[str, Any]:
    """One class's own curve, with its frequent title words as shrunk indicators."""
    vocabulary = _frequent_words(words)
    use = _columns(x)
    indicators = np.array([[w in ws for w in vocabulary] for ws in words], dtype=float).reshape(len(words), -1)
    penalty = np.r_[0.0, np.full(int(use.sum()) - 1, _SLOPE_PENALTY), np.full(len(vocabulary), WORD_PENALTY)]
    solved = huber_fit(np.column_stack([x[:, use], indicators]), y, penalty)
    coef = np.zeros(len(FEATURES))
    coef[use] = solved[: int(use.sum())]
    effects = solved[int(use.sum()):]
    return {"coef": coef.tolist(), "words": {w: float(b) for w, b in zip(vocabulary, effects, strict=True)
                                              if abs(b) >= 1e-4}}


def _wide_curve(x: np.ndarray, y: np.ndarray, classes: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
    """A curve common to several classes, each with its own level (its median residual)."""
    names = sorted(set(classes))
    levels = dict.fromkeys(names, 0.0)
    coef = np.zeros(len(FEATURES))
    for _ in range(_BACKFIT_ROUNDS):
        shift = np.array([levels[c] for c in classes])
        coef = _fit_curve(x, y - shift)
        residuals = y - x @ coef
        levels = {c: float(np.median(residuals[classes == c])) for c in names}
    return coef, levels


def _fit_currency(offers: _Offers, adjusted: np.ndarray, own_fit_min: int, min_comparables: int
                  ) -> dict[str, dict[str, Any]]:
    """The curve of every class of one currency with enough comparables (see the module's docstring)."""
    counts = Counter(offers.classes)
    per_make = Counter(offers.makes)
    classes_per_make = Counter(make for _, make in set(zip(offers.classes, offers.makes, strict=True)))
    wide: dict[str, tuple[np.ndarray, dict[str, float]]] = {}
    curves: dict[str, dict[str, Any]] = {}
    for name, n in sorted(counts.items()):
        if n < min_comparables:
            continue
        mine = offers.classes == name
        if n >= own_fit_min:
            words = [w for w, m in zip(offers.words, mine, strict=True) if m]
            curves[name] = {"pooled": "own", **_own_curve(offers.x[mine], adjusted[mine], words), "comparables": n}
            continue
        make = offers.makes[mine][0]
        by_make = per_make[make] >= own_fit_min and classes_per_make[make] >= 2
        key = f"make:{make}" if by_make else "catalogue"
        if key not in wide:
            rows = offers.makes == make if by_make else np.ones(len(offers.y), dtype=bool)
            wide[key] = _wide_curve(offers.x[rows], adjusted[rows], offers.classes[rows])
        coef, levels = wide[key]
        shifted = coef.copy()
        shifted[0] += levels[name]  # the class's own level on the wide curve
        curves[name] = {"pooled": "make" if by_make else "catalogue", "coef": shifted.tolist(), "words": {},
                        "comparables": n}
    return curves


def _predict(curve: dict[str, Any], x: np.ndarray, words: Iterable[set[str]]) -> np.ndarray:
    effects = curve["words"]
    return x @ np.asarray(curve["coef"]) + np.array([sum(effects.get(w, 0.0) for w in ws) for ws in words])


def _residuals(offers: _Offers, curves: dict[str, dict[str, Any]], shift: np.ndarray) -> np.ndarray:
    """log(price / fitted) of each offer (NaN where its class has no curve)."""
    out = np.full(len(offers.y), np.nan)
    for name, curve in curves.items():
        mine = offers.classes == name
        words = [w for w, m in zip(offers.words, mine, strict=True) if m]
        out[mine] = offers.y[mine] - shift[mine] - _predict(curve, offers.x[mine], words)
    return out


def _region_levels(regions: list[str | None], residuals: np.ndarray) -> dict[str, float]:
    by_region: dict[str, list[float]] = defaultdict(list)
    for region, r in zip(regions, residuals, strict=True):
        if region and not math.isnan(r):
            by_region[region].append(float(r))
    return {region: float(np.median(rs)) * len(rs) / (len(rs) + REGION_SHRINK)
            for region, rs in sorted(by_region.items()) if len(rs) >= REGION_MIN}


def miles_per_year(rows: Sequence[Comparable], reference_year: int) -> float:
    """The median stated miles per year of age (12,000 without any)."""
    rates = [r.mileage / max(reference_year - r.year, 0.5) for r in rows if r.mileage is not None and r.mileage >= 0]
    return float(np.median(rates)) if rates else _DEFAULT_MILES_PER_YEAR


def fit_fair_prices(rows: Sequence[Comparable], *, reference_year: int, own_fit_min: int = 40,
                    min_comparables: int = 5) -> dict[str, Any]:
    """The fitted fair-price models over these comparables, as JSON-ready parameters for :class:`FairPrices`."""
    rows = [r for r in rows if r.price > 0 and r.year is not None and r.year <= reference_year + 1]
    rate_ = miles_per_year(rows, reference_year)
    by_currency: dict[str, list[Comparable]] = defaultdict(list)
    for r in rows:
        by_currency[r.currency].append(r)
    offers = {c: _Offers(rs, reference_year, rate_) for c, rs in sorted(by_currency.items())}
    regions: dict[str, float] = {}
    curves: dict[str, dict[str, dict[str, Any]]] = {}
    residuals: list[np.ndarray] = []
    for _ in range(2):
        curves, residuals, found = {}, [], []
        for currency, o in offers.items():
            shift = np.array([regions.get(r.region or "", 0.0) for r in o.rows])
            curves[currency] = _fit_currency(o, o.y - shift, own_fit_min, min_comparables)
            residuals.append(_residuals(o, curves[currency], shift))
            found.extend(r.region for r in o.rows)
        regions = _region_levels(found, np.concatenate(residuals) if residuals else np.array([]))
    pooled = np.concatenate(residuals) if residuals else np.array([])
    pooled = pooled[~np.isnan(pooled)]
    return {"reference_year": reference_year, "miles_per_year": rate_, "features": list(FEATURES),
            "levels": list(LEVELS), "thresholds": _thresholds(pooled), "regions": regions, "curves": curves,
            "comparables": len(rows), "own_fit_min": own_fit_min, "min_comparables": min_comparables}


def _thresholds(residuals: np.ndarray) -> list[float]:
    if residuals.size < 10:  # too few to measure: a normal scatter of 10%
        return [0.10 * z for z in (-1.2816, -0.5244, 0.5244, 1.2816)]
    return [float(q) for q in np.quantile(residuals, LEVELS)]


class Appraisal(NamedTuple):
    """An offer against its fair price."""

    fair_price: float
    difference_pct: float  # (asking - fair) / fair x 100
    rating: str | None
    comparables: int  # usable offers of the class in the currency
    pooled: str  # "own", "make" or "catalogue": whose curve the class's fair price follows


class FairPrices:
    """A fitted set of fair-price models (the ``params`` of a ``price_models`` row)."""

    def __init__(self, params: dict[str, Any]):
        self.params = params

    @property
    def thresholds(self) -> list[float]:
        """The cuts between the ratings, in log(asking / fair) (see the module's docstring)."""
        return list(self.params.get("thresholds", []))

    def curve(self, class_name: str, currency: str) -> dict[str, Any] | None:
        """The curve a class follows in a currency: coef over :data:`FEATURES`, words, pooled, comparables."""
        return self.params.get("curves", {}).get(currency, {}).get(class_name)

    def estimate(self, class_name: str, currency: str, year: int | None, mileage: int | None = None, *,
                 postal_code: str | None = None, country: str | None = None, title: str | None = None
                 ) -> float | None:
        """The fair asking price; None without a model year, for a year in the future, or for a class with
        too few comparables in this currency. A negative mileage counts as unknown."""
        curve = self.curve(class_name, currency)
        reference = self.params.get("reference_year", 0)
        if curve is None or year is None or year > reference + 1:
            return None
        miles = np.array([np.nan if mileage is None or mileage < 0 else float(mileage)])
        x = features(np.array([reference - year]), miles, self.params["miles_per_year"])
        shift = self.params["regions"].get(region_of(postal_code, country) or "", 0.0)
        return float(math.exp(_predict(curve, x, [title_words(title)])[0] + shift))

    def rate(self, asking: float, fair: float) -> str | None:
        """great / good / fair / high / overpriced (see the module's docstring); None without both prices."""
        return rate(float(asking), float(fair), self.thresholds)

    def appraise(self, class_name: str, currency: str, asking: float | None, year: int | None,
                 mileage: int | None = None, *, postal_code: str | None = None, country: str | None = None,
                 title: str | None = None) -> Appraisal | None:
        """The fair price of an offer, the difference of its asking price in percent, and its deal rating."""
        fair = self.estimate(class_name, currency, year, mileage, postal_code=postal_code, country=country,
                             title=title)
        if fair is None:
            return None
        curve = self.curve(class_name, currency) or {}
        difference = (float(asking) - fair) / fair * 100 if asking else float("nan")
        return Appraisal(fair, difference, self.rate(asking, fair) if asking else None,
                         int(curve.get("comparables", 0)), str(curve.get("pooled", "")))
