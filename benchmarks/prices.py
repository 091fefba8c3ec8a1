"""Fair prices against the sandbox's generating function: how far the estimate is from the price the
sandbox's known function gives, beside the naive class median and the class-and-year median.

    python benchmarks/prices.py [--listings 3000] [--models 10] [--seed 0] [--thin 10]

The sandbox marketplace (with its price quirks: placeholders, auctions, other and unknown currencies, bad
mileages and years) runs on a free port; the real crawler stores it in a fresh SQLite database, so the
price parser, the price-issue rules and the usable-price selection are the product's. Listings whose item
number is divisible by 5 are held out; the fair-price model and both medians are fitted on the others. Three
classes keep only ``--thin`` training listings, so they borrow their make's curve (Audi TT, BMW X5) or the
whole catalogue's (Toyota Camry). The old answer, the plain mean of every stored asking price of the class
(placeholders, bids and other currencies included; thin classes not cut), is shown for reference. Every
number comes from one run: the median absolute percentage error of each estimate against the generating
price (``GET /expected-price/{item}``) over the usable held-out listings, and the agreement of the deal
ratings with the generating function's own rating (beside the agreement chance alone would give).

Checks (exit 1 when one fails): the fair price's error is at least 30% lower than the naive class median's;
no placeholder, bid-priced auction or unknown-currency listing enters the statistics; three-decimal prices
are read as what they say.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import requests
from sqlalchemy import select

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from autodetect.db import engine_for, session_scope, upgrade  # noqa: E402
from autodetect.pipeline.discovery import crawl  # noqa: E402
from autodetect.pipeline.dispatch import no_dispatch  # noqa: E402
from autodetect.pricing.fair_price import Comparable, FairPrices, fit_fair_prices  # noqa: E402
from autodetect.pricing.fits import comparables  # noqa: E402
from autodetect.pricing.ratings import RATINGS  # noqa: E402
from autodetect.sandbox.marketplace import Marketplace  # noqa: E402
from autodetect.sandbox.server import SandboxServer  # noqa: E402
from autodetect.settings import Settings, configure  # noqa: E402
from autodetect.sources import open_source  # noqa: E402
from autodetect.storage import CarClass, Listing, utcnow  # noqa: E402

GOAL_REDUCTION = 0.30  # the fair price's error at least 30% below the naive class median's
THIN_CLASSES = ("Audi TT", "BMW X5", "Toyota Camry")
NEVER_COUNTED = {"placeholder", "auction", "unknown_currency"}


def crawl_catalogue(market: Marketplace, tmp: Path) -> tuple[Settings, SandboxServer]:
    server = SandboxServer(market).start()
    settings = configure(data_dir=tmp, database_url=f"sqlite:///{tmp}/prices.db", source="sandbox",
                         marketplace_url=server.url, ebay_client_id="bench", ebay_client_secret="bench")
    upgrade(settings)
    stats = crawl(settings, open_source(settings), no_dispatch)
    print(f"crawled {stats.listings} listings ({stats.details} detail calls) in {stats.seconds:.1f} s")
    return settings, server


def stored_rows(settings: Settings) -> tuple[list[tuple[str, Comparable]], dict[str, tuple]]:
    """(external id, comparable) of the usable listings, and every stored listing's price facts."""
    with session_scope(settings) as s:
        usable = comparables(s)
        ids = dict(s.execute(select(Listing.id, Listing.external_id)).all())
        stored = {r.external_id: (r.price, r.currency, r.price_issue, r.name) for r in s.execute(
            select(Listing.external_id, Listing.price, Listing.currency, Listing.price_issue, CarClass.name)
            .outerjoin(CarClass, CarClass.id == Listing.class_id))}
    return [(ids[i], c) for i, c in usable], stored


def check_quirks(market: Marketplace, usable: list[tuple[str, Comparable]], stored: dict[str, tuple]) -> bool:
    counted = {ext for ext, _ in usable}
    ok = True
    issues = Counter(issue for _, _, issue, _ in stored.values() if issue)
    print("price issues recorded: " + ", ".join(f"{k}: {n}" for k, n in issues.most_common()))
    leaked = [ext for ext in counted if market.listing_for_item(ext).offer.quirk in NEVER_COUNTED]
    print(f"placeholder, bid-priced auction and unknown-currency listings in the statistics: {len(leaked)} (goal 0)")
    ok &= not leaked
    three = [(ext, f) for ext, f in stored.items() if market.listing_for_item(ext).offer.quirk == "three_decimals"]
    misread = [ext for ext, f in three if f[0] is None or abs(float(f[0]) - float(market.listing_for_item(ext).price))
               > 0.01]
    print(f"three-decimal prices misread: {len(misread)} of {len(three)} (goal 0)")
    return ok and not misread


def split(usable: list[tuple[str, Comparable]], thin: int) -> tuple[list[Comparable], list[tuple[str, Comparable]]]:
    train, held, kept = [], [], Counter()
    for ext, c in usable:
        if int(ext.split("|")[1]) % 5 == 0:
            held.append((ext, c))
        elif c.class_name not in THIN_CLASSES or kept[c.class_name] < thin:
            kept[c.class_name] += 1
            train.append(c)
    return train, held


def plain_means(stored: dict[str, tuple], held: set[str]) -> dict[str, float]:
    """The old answer: per class, the plain mean of every stored asking price (placeholders, bids and other
    currencies included), over the training listings."""
    prices = defaultdict(list)
    for ext, (price, _, _, name) in stored.items():
        if price is not None and name and ext not in held:
            prices[name].append(float(price))
    return {name: float(np.mean(p)) for name, p in prices.items()}


def medians(train: list[Comparable]) -> tuple[dict, dict]:
    by_class, by_year = defaultdict(list), defaultdict(list)
    for c in train:
        by_class[(c.class_name, c.currency)].append(c.price)
        by_year[(c.class_name, c.currency, c.year)].append(c.price)
    return ({k: float(np.median(v)) for k, v in by_class.items()},
            {k: float(np.median(v)) for k, v in by_year.items()})


def evaluate(server: SandboxServer, fair: FairPrices, train: list[Comparable], held: list[tuple[str, Comparable]],
             stored: dict[str, tuple]) -> dict[str, list]:
    by_class, by_year = medians(train)
    means = plain_means(stored, {ext for ext, _ in held})
    out: dict[str, list] = defaultdict(list)
    with requests.Session() as http:
        for ext, c in held:
            truth = http.get(f"{server.url}/expected-price/{ext}", timeout=10).json()
            listing = server.marketplace.listing_for_item(ext)
            estimate = fair.estimate(c.class_name, c.currency, c.year, c.mileage, title=c.title,
                                     postal_code=listing.city.postal_code, country="US")
            if estimate is None or (c.class_name, c.currency) not in by_class:
                out["no estimate"].append(ext)
                continue
            expected = truth["expectedPrice"]
            year_median = by_year.get((c.class_name, c.currency, c.year))
            out["fair"].append(abs(estimate / expected - 1))
            out["naive"].append(abs(by_class[(c.class_name, c.currency)] / expected - 1))
            out["plain mean"].append(abs(means[c.class_name] / expected - 1))
            out["class and year"].append(abs((year_median or by_class[(c.class_name, c.currency)]) / expected - 1))
            out["year fallback"].append(year_median is None)
            out["thin"].append(c.class_name in THIN_CLASSES)
            out["ratings"].append((fair.rate(c.price, estimate), truth["dealRating"]))
    return out


def agreement(pairs: list[tuple[str | None, str | None]]) -> tuple[float, float, float, int]:
    """Exact agreement, agreement within one step, and the exact agreement chance alone would give."""
    rated = [(a, b) for a, b in pairs if a and b]
    if not rated:
        return 0.0, 0.0, 0.0, 0
    steps = np.array([abs(RATINGS.index(a) - RATINGS.index(b)) for a, b in rated])
    ours, theirs = Counter(a for a, _ in rated), Counter(b for _, b in rated)
    chance = sum(ours[r] * theirs[r] for r in RATINGS) / len(rated) ** 2
    return float(np.mean(steps == 0)), float(np.mean(steps <= 1)), chance, len(rated)


def report(out: dict[str, list], fair: FairPrices) -> bool:
    thin = np.array(out["thin"], dtype=bool)
    errors = {k: np.array(out[k]) for k in ("plain mean", "fair", "naive", "class and year")}
    print(f"\nheld-out usable listings scored: {len(out['fair'])} ({len(out['no estimate'])} without an estimate; "
          f"class-and-year median fell back to the class median for {sum(out['year fallback'])})\n")
    print("| estimate                    | MdAPE, all | MdAPE, thin classes | vs naive |")
    print("|-----------------------------|-----------:|--------------------:|---------:|")
    naive = float(np.median(errors["naive"]))
    for name, label in (("plain mean", "old: mean of every price"), ("naive", "naive class median"),
                        ("class and year", "class-and-year median"),
                        ("fair", "fair price (this model)")):
        e = errors[name]
        thin_e = f"{100 * np.median(e[thin]):.1f}%" if thin.any() and name != "plain mean" else "-"
        print(f"| {label:<27} | {100 * np.median(e):9.1f}% | {thin_e:>19} | {np.median(e) / naive:7.2f}x |")
    reduction = 1 - float(np.median(errors["fair"])) / naive
    ok = reduction >= GOAL_REDUCTION
    print(f"\nfair price's error vs the naive median's: {100 * reduction:.0f}% lower "
          f"(goal >= {100 * GOAL_REDUCTION:.0f}%) {'ok' if ok else 'MISSED'}")
    exact, within_one, chance, n = agreement(out["ratings"])
    print(f"deal ratings vs the generating function's own, over {n} offers: {100 * exact:.0f}% the same "
          f"(chance alone: {100 * chance:.0f}%), {100 * within_one:.0f}% within one step")
    print("rating cuts, log(asking / fair): " + ", ".join(f"{t:+.3f}" for t in fair.thresholds))
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listings", type=int, default=3000)
    parser.add_argument("--models", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--thin", type=int, default=10, help="training listings kept of each thin class")
    args = parser.parse_args()
    market = Marketplace(listings=args.listings, models=args.models, seed=args.seed, price_quirks=True)
    with tempfile.TemporaryDirectory() as tmp:
        settings, server = crawl_catalogue(market, Path(tmp))
        try:
            usable, stored = stored_rows(settings)
            ok = check_quirks(market, usable, stored)
            train, held = split(usable, args.thin)
            started = time.perf_counter()
            params = fit_fair_prices(train, reference_year=utcnow().year, own_fit_min=settings.price_own_fit_min,
                                     min_comparables=settings.price_min_comparables)
            pooled = {f"{name} ({currency})": curve["pooled"] for currency, curves in params["curves"].items()
                      for name, curve in curves.items() if curve["pooled"] != "own"}
            print(f"fitted on {len(train)} training listings in {time.perf_counter() - started:.2f} s; "
                  f"borrowed curves: {pooled}")
            ok &= report(evaluate(server, FairPrices(params), train, held, stored), FairPrices(params))
        finally:
            server.stop()
            engine_for(settings.database_url).dispose()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
