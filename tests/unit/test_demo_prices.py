"""The demo's price lines (``autodetect/cli/price_summary.py``) over a sandbox marketplace with price quirks,
crawled by the real crawler from the sandbox server as the demo crawls it: the fair price's error against the
generating price, and the listings whose price does not count, by reason."""

from __future__ import annotations

import shutil
from collections import Counter

from autodetect.cli.price_summary import price_fit_errors, price_issues, price_rows
from autodetect.db import session_scope
from autodetect.pipeline.discovery import crawl
from autodetect.pricing import usable
from autodetect.sandbox.marketplace import Marketplace
from autodetect.sandbox.server import SandboxServer
from autodetect.settings import configure
from autodetect.sources import open_source

#: The quirks whose price never counts, and the reason the crawler records for each.
REASONS = {"placeholder": usable.below_floor(500), "auction": usable.AUCTION,
           "unknown_currency": usable.UNKNOWN_CURRENCY}


def test_the_demo_scores_its_fair_prices_and_counts_the_prices_that_do_not_count(tmp_path, template_db):
    market = Marketplace(listings=400, models=4, seed=3, price_quirks=True)
    shutil.copy(template_db, tmp_path / "autodetect.db")
    with SandboxServer(market) as server:
        settings = configure(data_dir=tmp_path, database_url="", source="sandbox", marketplace_url=server.url,
                             price_floor=500)
        crawl(settings, open_source(settings), lambda stage, ids: None)

    def expected(external_id: str) -> float | None:
        offer = market.expected_price(external_id)
        return offer.expected if offer else None

    quirks = Counter(listing.offer.quirk for listing in market.listings())
    with session_scope(settings) as s:
        errors = price_fit_errors(s, expected)
        issues = price_issues(s)
        rows = dict(price_rows(s, expected))
    assert errors["listings"] > 250  # usable, labelled, in a currency with enough comparables
    assert errors["fair"] < 0.12 and errors["fair"] < 0.5 * errors["naive"], errors  # measured: 9.0% and 26.6%
    for quirk, reason in REASONS.items():
        assert issues[reason] == quirks[quirk] > 0, (quirk, issues)
    assert list(issues.values()) == sorted(issues.values(), reverse=True)
    line = rows[f"listings whose price does not count ({sum(issues.values())})"]
    assert f"{usable.AUCTION} {issues[usable.AUCTION]}" in line
    assert rows["fair price: median abs. error vs the sandbox's generating price"].startswith(f"{errors['fair']:.1%}")
