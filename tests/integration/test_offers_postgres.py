"""The offers search in SQL on PostgreSQL (``percentile_cont``, ``least``, the server's own math) answers what
the search as it was answers (tests/unit/test_offers_support.py), on the same hard catalogue as the SQLite
test: the same offers in the same order, the same counts, the same statistics."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
import test_offers_support as sup  # noqa: E402

from autodetect.db import forget_engines, read_scope, session_scope, upgrade  # noqa: E402
from autodetect.serving.offers import find_offers, find_offers_of  # noqa: E402
from autodetect.settings import Settings  # noqa: E402

pytestmark = pytest.mark.integration


@pytest.fixture
def pg_settings(pg_url, tmp_path):
    settings = Settings(data_dir=tmp_path, database_url=pg_url)
    upgrade(settings)
    yield settings
    forget_engines()


def test_sql_offers_equal_the_old_search_on_postgres(pg_settings):
    with session_scope(pg_settings) as s:
        catalogue = sup.write_catalogue(s, classes=5, listings=1200, seed=11)
    compared = 0
    with read_scope(pg_settings) as s:
        for version_id in (catalogue.version_id, None):
            for origin in [None, *sup.ORIGINS]:
                for radius in sup.RADII if origin else [None]:
                    for currency in (None, "eur"):
                        kwargs = dict(version_id=version_id, origin=origin, radius_km=radius, currency=currency)
                        new = find_offers_of(s, catalogue.classes, **kwargs)
                        for name in catalogue.classes:
                            # the server's sin/cos/asin may differ from Python's in the last bit
                            sup.assert_same_search(new[name], sup.old_find_offers(s, name, **kwargs),
                                                   exact_distances=False, exact_mean=True)
                            compared += 1
    assert compared == 2 * (1 + 7 * 6) * 2 * 5


def test_pages_and_prices_in_cents_on_postgres(pg_settings):
    with session_scope(pg_settings) as s:
        catalogue = sup.write_catalogue(s, classes=2, listings=500, seed=3, dollars_only=False)
    with read_scope(pg_settings) as s:
        for origin, radius in [(None, None), (sup.ORIGINS[0], 20000.0), (sup.ORIGINS[3], 9000.0)]:
            kwargs = dict(version_id=catalogue.version_id, origin=origin, radius_km=radius)
            for name in catalogue.classes:
                old = sup.old_find_offers(s, name, **kwargs)
                for offset, limit in [(0, 5), (4, 9), (len(old.offers) - 1, 10)]:
                    new = find_offers(s, name, **kwargs, limit=limit, offset=offset)
                    sup.assert_same_search(new, old, exact_distances=False, exact_mean=False, offset=offset,
                                           limit=limit)
