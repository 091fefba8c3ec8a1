"""discovery.crawl on a fresh SQLite database: the lease, incremental crawls, price history, ending,
resuming, and never overwriting stored data with worse data. The feed source serves files we rewrite."""

from __future__ import annotations

import json
import shutil
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from autodetect.db import session_scope
from autodetect.pipeline.discovery import CrawlLocked, crawl
from autodetect.settings import Settings, configure
from autodetect.sources import open_source
from autodetect.sources.base import Page, SourceListing
from autodetect.storage import CarClass, CrawlState, Image, Listing, PriceChange, utcnow


@pytest.fixture
def make_settings(tmp_path, template_db):
    """Settings on a fresh copy of the migrated database; the feed lives in ``tmp_path/feed.jsonl``."""
    shutil.copy(template_db, tmp_path / "autodetect.db")

    def make(**overrides) -> Settings:
        return configure(**{"data_dir": tmp_path, "database_url": "", "source": "feed",
                            "feed_url": str(tmp_path / "feed.jsonl"), "crawl_page_size": 2, **overrides})
    return make


def item(n: int, price: str | None = "18450.00", **fields) -> dict:
    return {"itemId": f"v1|{n}|0", "title": f"2015 Audi TT Coupe 2.0T Quattro #{n}",
            "price": {"value": price, "currency": "USD"} if price else None,
            "image": {"imageUrl": f"http://img.example/{n}/0.jpg"},
            "additionalImages": [{"imageUrl": f"http://img.example/{n}/1.jpg"}],
            "itemLocation": {"city": "Austin", "postalCode": "78701", "country": "US"},
            "localizedAspects": [{"name": "Make", "value": "Audi"}, {"name": "Model", "value": "TT"},
                                 {"name": "Year", "value": "2015"}],
            **fields}


def write_feed(settings: Settings, items: list[dict], *extra_lines: str) -> None:
    Path(settings.feed_url).write_text("\n".join([json.dumps(i) for i in items] + list(extra_lines)), encoding="utf-8")


def run(settings: Settings, sent: list | None = None, **kw):
    """One crawl of the configured source; dispatched photo ids are collected in ``sent``."""
    sent = [] if sent is None else sent
    return crawl(settings, open_source(settings), lambda stage, ids: sent.append((stage, list(ids))), **kw)


def listings(settings: Settings) -> dict[str, Listing]:
    with session_scope(settings) as s:
        return {row.external_id: row for row in s.scalars(select(Listing))}


def crawl_state(settings: Settings) -> CrawlState:
    with session_scope(settings) as s:
        return s.scalars(select(CrawlState)).one()


def test_new_listings_are_stored_labelled_and_their_photos_dispatched(make_settings):
    settings = make_settings(photos_per_listing=1)
    write_feed(settings, [item(1), item(2), item(3, title="Project car, needs work",
                                                    localizedAspects=[])])
    sent: list = []
    stats = run(settings, sent)
    assert (stats.state, stats.complete, stats.crawl) == ("idle", True, 1)
    assert (stats.listings, stats.new_listings, stats.new_photos) == (3, 3, 3)
    stored = listings(settings)
    with session_scope(settings) as s:
        audi_tt = s.scalars(select(CarClass).where(CarClass.name == "Audi TT")).one()
        photo_ids = sorted(s.scalars(select(Image.id)))
    assert sorted(i for _, ids in sent for i in ids) == photo_ids  # after the commit, one photo each
    tt = stored["v1|1|0"]
    assert (tt.class_id, tt.seller_make, tt.seller_model, tt.year) == (audi_tt.id, "Audi", "TT", 2015)
    assert tt.label_method and tt.label_confidence > 0 and tt.label_reason  # how, how sure, why
    unknown = stored["v1|3|0"]
    assert unknown.class_id is None and unknown.label_reason  # no label, with the reason recorded
    assert tt.label_confidence > unknown.label_confidence


def test_incremental_crawls_keep_price_history_and_end_listings_unseen_for_complete_crawls(make_settings):
    settings = make_settings(ended_after_crawls=2)
    write_feed(settings, [item(1), item(2), item(3)])
    assert run(settings).new_listings == 3

    write_feed(settings, [item(1, price="17,950.00"), item(2), item(4)])  # 1 cheaper, 3 gone, 4 new
    second = run(settings)
    assert (second.crawl, second.new_listings, second.updated_listings, second.price_changes) == (2, 1, 2, 1)
    assert listings(settings)["v1|3|0"].status == "active"  # unseen for one crawl only

    third = run(settings)
    assert (third.crawl, third.ended, third.price_changes) == (3, 1, 0)
    stored = listings(settings)
    assert stored["v1|3|0"].status == "ended" and stored["v1|3|0"].ended_at is not None
    assert {k for k, v in stored.items() if v.status == "active"} == {"v1|1|0", "v1|2|0", "v1|4|0"}
    with session_scope(settings) as s:
        history = s.execute(select(PriceChange.price).where(PriceChange.listing_id == stored["v1|1|0"].id)
                            .order_by(PriceChange.seen_at)).scalars().all()
    assert [str(p) for p in history] == ["18450.00", "17950.00"]

    write_feed(settings, [item(1), item(2), item(3), item(4)])  # 3 is back
    assert run(settings).ended == 0
    assert listings(settings)["v1|3|0"].status == "active"


def test_crawls_with_gaps_do_not_count_towards_ending(make_settings):
    settings = make_settings(ended_after_crawls=1)
    write_feed(settings, [item(1), item(2)])
    run(settings)
    write_feed(settings, [item(1)], "{truncated")  # 2 may hide in the unreadable line
    for _ in range(3):
        stats = run(settings)
        assert (stats.state, stats.complete, stats.crawl, stats.ended) == ("partial", False, 2, 0)
        assert stats.problems["malformed JSON"] == 1
    assert listings(settings)["v1|2|0"].status == "active"
    write_feed(settings, [item(1)])
    stats = run(settings)
    assert (stats.state, stats.crawl, stats.ended) == ("idle", 2, 1)


def test_listings_past_their_end_date_are_ended(make_settings):
    settings = make_settings()
    past = (utcnow() - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    future = (utcnow() + timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    write_feed(settings, [item(1, itemEndDate=past), item(2, itemEndDate=future), item(3)])
    assert run(settings).ended == 1
    assert {k: v.status for k, v in listings(settings).items()} == {
        "v1|1|0": "ended", "v1|2|0": "active", "v1|3|0": "active"}


def test_stored_data_is_never_overwritten_with_worse_data(make_settings):
    settings = make_settings()
    write_feed(settings, [item(1)])
    run(settings)
    before = listings(settings)["v1|1|0"]

    worse = {"itemId": "v1|1|0", "title": "\x00\x01", "price": {"value": "call me", "currency": "USD"},
             "localizedAspects": [{"name": "Year", "value": "soon"}]}
    write_feed(settings, [worse])
    stats = run(settings)
    assert stats.problems["bad price"] == stats.problems["no photos"] == stats.problems["missing title"] == 1
    after = listings(settings)["v1|1|0"]
    for column in ("title", "price", "currency", "seller_make", "seller_model", "year", "city", "class_id",
                   "label_method", "label_confidence", "label_reason"):
        assert getattr(after, column) == getattr(before, column), column
    assert "missing title" in after.issues and any(i.startswith("bad price") for i in after.issues)
    with session_scope(settings) as s:
        assert len(s.scalars(select(Image).where(Image.listing_id == after.id)).all()) == 2
        assert len(s.scalars(select(PriceChange)).all()) == 1


def test_max_listings_stops_and_the_next_crawl_resumes_where_it_stopped(make_settings):
    settings = make_settings()
    write_feed(settings, [item(n) for n in range(1, 6)])
    first = run(settings, max_listings=3)
    assert (first.state, first.listings, first.crawl) == ("stopped", 3, 1)
    assert crawl_state(settings).cursor == {"offset": 2}  # the page cut short is read again
    second = run(settings)
    assert (second.state, second.crawl, second.new_listings) == ("idle", 1, 2)
    assert len(listings(settings)) == 5
    assert crawl_state(settings).cursor == {}


def test_a_source_that_cannot_be_read_fails_the_crawl_with_its_reason(make_settings):
    settings = make_settings()
    stats = run(settings)  # no feed file
    assert stats.state == "failed" and "feed.jsonl" in stats.reason
    state = crawl_state(settings)
    assert (state.state, state.locked_until, state.last_stats["reason"]) == ("failed", None, stats.reason)
    write_feed(settings, [item(1)])
    assert (run(settings).crawl, crawl_state(settings).crawls) == (1, 1)  # the same crawl, taken up again


class BlockingSource:
    """Yields one page once released, so that a crawl can be held open."""

    def __init__(self, name: str = "feed", block: bool = True):
        self.name = name
        self.started, self.release = threading.Event(), threading.Event()
        if not block:
            self.release.set()

    def pages(self, cursor, budget):
        self.started.set()
        assert self.release.wait(10)
        yield Page([SourceListing(external_id=f"{self.name}-1", title="2015 Audi TT")], {})

    def details(self, listings, budget):
        return listings


def test_one_crawl_of_a_source_at_a_time(make_settings):
    settings = make_settings()
    held = BlockingSource()
    results: list = []
    thread = threading.Thread(target=lambda: results.append(crawl(settings, held, lambda *a: None)))
    thread.start()
    try:
        assert held.started.wait(10)
        with pytest.raises(CrawlLocked):
            crawl(settings, BlockingSource(block=False), lambda *a: None)
        other = crawl(settings, BlockingSource("sandbox", block=False), lambda *a: None)
        assert other.state == "idle"  # another source is not held up
    finally:
        held.release.set()
        thread.join(10)
    assert results[0].state == "idle"
    assert crawl(settings, BlockingSource(block=False), lambda *a: None).crawl == 2  # the lease is released


def test_a_crawl_whose_worker_died_is_taken_up_from_its_cursor(make_settings):
    settings = make_settings()
    write_feed(settings, [item(n) for n in range(1, 6)])
    run(settings, max_listings=2)  # crawl 1 stored listings 1-2, cursor at offset 2
    with session_scope(settings) as s:  # as if a worker had died in the middle of crawl 1
        s.execute(update(CrawlState).values(state="running", locked_until=utcnow() - timedelta(seconds=1)))
    stats = run(settings)
    assert (stats.crawl, stats.listings, stats.state) == (1, 3, "idle")
    assert len(listings(settings)) == 5


def test_a_crawl_that_lost_its_lease_writes_nothing_more(make_settings):
    settings = make_settings()
    between, resume, outcome = threading.Event(), threading.Event(), []

    class TwoPages:
        name = "feed"

        def pages(self, cursor, budget):
            yield Page([SourceListing(external_id="a", title="2015 Audi TT")], {"offset": 1})
            between.set()
            assert resume.wait(10)
            yield Page([SourceListing(external_id="b", title="2015 Audi TT")], {})

        def details(self, listings, budget):
            return listings

    def slow_crawl():
        try:
            crawl(settings, TwoPages(), lambda *a: None)
        except CrawlLocked as exc:
            outcome.append(exc)

    thread = threading.Thread(target=slow_crawl)
    thread.start()
    try:
        assert between.wait(10)
        with session_scope(settings) as s:  # the slow crawl outlived its lease...
            s.execute(update(CrawlState).values(locked_until=utcnow() - timedelta(seconds=1)))
        assert crawl(settings, BlockingSource(block=False), lambda *a: None).state == "idle"  # ...and was taken over
    finally:
        resume.set()
        thread.join(10)
    assert outcome and "taken by another crawl" in str(outcome[0])
    assert set(listings(settings)) == {"a", "feed-1"}  # the page after the takeover was rolled back
    assert crawl_state(settings).state == "idle"  # and the new owner's outcome stands
