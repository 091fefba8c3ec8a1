"""Discovery: crawl a source, upsert listings on (source, external_id), queue their first photos.

One crawl of a source runs at a time: a lease in ``crawl_state``, renewed with every page and owned by
the crawl that took it (``last_started``). Each page is written in one transaction together with the
cursor and the day's call count; its new photos are dispatched after that commit.

The crawl number advances only after a complete crawl. A crawl that pauses (call budget), stops
(``max_listings``), fails, or ends with gaps (an unreadable page) is taken up again under the same
number, from its cursor (from the start after gaps), so "not seen for N crawls" counts complete crawls.

A stored listing is never overwritten with worse data: a field missing from a later record keeps its
stored value, and a label is replaced only by one at least as confident. A listing's summary is
completed by a detail call only when its title does not give the model and no earlier call gave it.
Each stored page's price issues are set from the stored rows (``pricing/usable.py``); a crawl's end refits
the fair prices when the catalogue changed (``pricing/fits.py``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, func, insert, select, update
from sqlalchemy.orm import Session

from autodetect.catalogue.names import Label, normalize
from autodetect.db import db_now, insert_stmt, session_scope
from autodetect.pipeline.dispatch import Dispatch
from autodetect.pricing.fits import refresh_fair_prices
from autodetect.pricing.usable import mark_price_issues
from autodetect.serving.places import place_columns
from autodetect.settings import Settings
from autodetect.sources.base import BudgetExhausted, CallBudget, Page, Source, SourceError, SourceListing
from autodetect.storage import CarClass, CrawlState, Image, Listing, ListingStatus, PriceChange, Stage, utcnow

log = logging.getLogger(__name__)

#: Listing columns a later crawl may fill in but never blank out.
_KEEP_IF_MISSING = ("url", "price", "currency", "city", "postal_code", "country", "latitude", "longitude",
                    "condition", "seller_make", "seller_model", "year", "mileage", "buying_options", "bid_count")
_MAX_NOTES = 50
#: The listing fields its place follows (``place_columns``).
_PLACE_FIELDS = (Listing.latitude, Listing.longitude, Listing.postal_code, Listing.country)


@dataclass
class CrawlStats:
    source: str
    crawl: int = 0
    #: idle (complete) | partial (ended with gaps) | paused (call budget) | stopped (max_listings) | failed
    state: str = "running"
    reason: str | None = None  # why it paused, stopped or failed
    complete: bool = True  # every listing of the source was seen
    pages: int = 0
    listings: int = 0
    new_listings: int = 0
    updated_listings: int = 0
    price_changes: int = 0
    duplicate_ids: int = 0
    details: int = 0  # detail calls made
    calls: int = 0  # calls charged to the daily budget
    new_photos: int = 0
    ended: int = 0
    #: Problems by kind, of pages ("malformed JSON", "bad next link", "rejected item"...) and of listings.
    problems: dict[str, int] = field(default_factory=dict)
    #: The first page problems in full.
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def count(self, problems: list[str]) -> None:
        for problem in problems:
            kind = problem.split(":")[0]
            self.problems[kind] = self.problems.get(kind, 0) + 1

    def add_page(self, page: Page) -> None:
        self.pages += 1
        self.complete &= page.complete
        self.count(page.problems)
        self.notes.extend(page.problems[: _MAX_NOTES - len(self.notes)])

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class CrawlLocked(Exception):
    """Another crawl of this source holds the lease."""


@dataclass
class _Lease:
    crawl: int
    started: datetime
    cursor: dict[str, Any]
    budget: CallBudget


def _acquire(session: Session, source: str, lease_s: int, call_budget: int) -> _Lease:
    session.execute(
        insert_stmt(session, CrawlState.__table__)
        .values(source=source, crawls=0, state="idle", cursor={}, calls_today=0, last_stats={})
        .on_conflict_do_nothing(index_elements=["source"])
    )
    now = utcnow()
    row = session.execute(
        update(CrawlState)
        .where(CrawlState.source == source)
        .where((CrawlState.locked_until.is_(None)) | (CrawlState.locked_until < now))
        .values(locked_until=now + timedelta(seconds=lease_s), state="running", last_started=now,
                crawls=case((CrawlState.state == "idle", CrawlState.crawls + 1), else_=CrawlState.crawls))
        .returning(CrawlState.crawls, CrawlState.cursor, CrawlState.calls_day, CrawlState.calls_today)
    ).one_or_none()
    if row is None:
        raise CrawlLocked(f"a crawl of {source!r} is already running")
    return _Lease(row.crawls, now, dict(row.cursor or {}), CallBudget(call_budget, row.calls_day, row.calls_today))


def _save_progress(session: Session, source: str, lease: _Lease, lease_s: int, cursor: dict[str, Any] | None) -> None:
    """Renew the lease with the page's cursor and the day's calls; fails if another crawl took the lease."""
    values: dict[str, Any] = {"locked_until": utcnow() + timedelta(seconds=lease_s),
                              "calls_day": lease.budget.day, "calls_today": lease.budget.used}
    if cursor is not None:
        values["cursor"] = cursor
    done = session.execute(update(CrawlState)
                           .where(CrawlState.source == source, CrawlState.last_started == lease.started)
                           .values(**values)).rowcount
    if not done:
        raise CrawlLocked(f"the lease on {source!r} was taken by another crawl")


def _class_ids(session: Session, classes: dict[str, tuple[str, str]]) -> dict[str, int]:
    """Ids of the canonical classes, created on first sight."""
    def known() -> dict[str, int]:
        return dict(session.execute(select(CarClass.name, CarClass.id).where(CarClass.name.in_(classes))).all())

    ids = known()
    if classes.keys() - ids.keys():
        rows = [{"name": n, "make": mk, "model": md} for n, (mk, md) in sorted(classes.items()) if n not in ids]
        session.execute(insert_stmt(session, CarClass.__table__).on_conflict_do_nothing(index_elements=["name"]), rows)
        ids = known()
    return ids


def unique_listings(listings: list[SourceListing], seen: set[str], stats: CrawlStats) -> list[SourceListing]:
    """One record per item id: the first on the page stands, a repeat on the page is counted and dropped.
    Ids ``seen`` on an earlier page of this run are counted too (and stored again: a later observation)."""
    unique: dict[str, SourceListing] = {}
    for item in listings:
        stats.duplicate_ids += item.external_id in unique or item.external_id in seen
        unique.setdefault(item.external_id, item)
    seen.update(unique)
    return list(unique.values())


def _with_model(session: Session, source: str, external_ids: list[str]) -> set[str]:
    """Those stored listings whose model an earlier detail call (or the seller) gave."""
    if not external_ids:
        return set()
    return set(session.scalars(select(Listing.external_id).where(
        Listing.source == source, Listing.external_id.in_(external_ids), Listing.seller_model.is_not(None))))


def store_page(session: Session, source: str, crawl_no: int, listings: list[SourceListing],
               labels: dict[str, Label], photos_per_listing: int, stats: CrawlStats,
               photos_due_in_s: float = 0.0) -> list[int]:
    """Upsert one page of listings (unique ids) with their labels and first photos; returns the new photo
    ids. The sweeper sends a new photo again if it is still waiting ``photos_due_in_s`` from now."""
    if not listings:
        return []
    by_id = {item.external_id: item for item in listings}
    existing = {  # ext -> (id, price, currency, latitude, longitude, postal code, country)
        ext: tuple(stored)
        for ext, *stored in session.execute(
            select(Listing.external_id, Listing.id, Listing.price, Listing.currency, *_PLACE_FIELDS)
            .where(Listing.source == source, Listing.external_id.in_(by_id))
        )
    }
    class_ids = _class_ids(session, {lab.class_name: (lab.make, lab.model)
                                     for lab in labels.values() if lab.class_name})
    now = utcnow()
    rows = []
    for ext, item in by_id.items():
        stats.count(item.problems)
        rows.append(_listing_row(source, crawl_no, item, labels[ext], class_ids, now, existing.get(ext, ())[3:]))
    ids = _upsert_listings(session, rows)
    stats.price_changes += _record_price_changes(session, by_id, existing, ids, now)
    stats.listings += len(by_id)
    stats.new_listings += len(by_id.keys() - existing.keys())
    stats.updated_listings += len(by_id.keys() & existing.keys())
    new_ids = _insert_photos(session, by_id, ids, photos_per_listing, now,
                             db_now(session, photos_due_in_s))
    stats.new_photos += len(new_ids)
    return new_ids


def _listing_row(source: str, crawl_no: int, item: SourceListing, label: Label, class_ids: dict[str, int],
                 now: datetime, stored_place: tuple = ()) -> dict[str, Any]:
    """The ``listings`` row of one record, as seen by crawl ``crawl_no`` at ``now``. Its place is that of
    the fields as the upsert leaves them (``stored_place``: the stored latitude, longitude, postal code and
    country, which a missing field keeps)."""
    fields = (item.latitude, item.longitude, item.postal_code, item.country)
    merged = [new if new is not None else old for new, old in zip(fields, stored_place or (None,) * 4)]
    return {
        **place_columns(*merged),
        "source": source, "external_id": item.external_id, "url": item.url, "title": item.title,
        "seller_make": item.make, "seller_model": item.model, "year": item.year,
        "price": item.price, "currency": item.currency, "mileage": item.mileage,
        "buying_options": ",".join(item.buying_options) or None, "bid_count": item.bid_count,
        "city": item.city, "postal_code": item.postal_code, "country": item.country,
        "latitude": item.latitude, "longitude": item.longitude, "condition": item.condition,
        "class_id": class_ids.get(label.class_name) if label.class_name else None,
        "label_method": label.method, "label_confidence": label.confidence,
        "label_reason": label.reason[:200], "status": ListingStatus.active.value,
        "issues": item.problems, "first_seen": now, "last_seen": now, "last_crawl": crawl_no,
        "ended_at": None, "raw": item.raw,
    }


def _upsert_listings(session: Session, rows: list[dict[str, Any]]) -> dict[str, int]:
    """Insert or update the rows on (source, external_id), never blanking a stored field or replacing a
    label with a less confident one; returns their ids by external id."""
    stmt = insert_stmt(session, Listing.__table__)
    excluded = stmt.excluded
    table = Listing.__table__
    updates: dict[str, Any] = {c: func.coalesce(getattr(excluded, c), table.c[c]) for c in _KEEP_IF_MISSING}
    updates["title"] = case((excluded.title == "", table.c.title), else_=excluded.title)
    for c in ("issues", "last_seen", "last_crawl", "status", "ended_at", "raw", "place_lat", "place_lon"):
        updates[c] = getattr(excluded, c)
    better = excluded.label_confidence >= table.c.label_confidence  # a label yields only to one as confident
    for c in ("class_id", "label_method", "label_confidence", "label_reason"):
        updates[c] = case((better, getattr(excluded, c)), else_=table.c[c])
    # RETURNING also lets the dialects batch the rows into multi-row INSERTs ("insertmanyvalues").
    return dict(session.execute(stmt.on_conflict_do_update(index_elements=["source", "external_id"], set_=updates)
                                .returning(table.c.external_id, table.c.id), rows).all())


def _record_price_changes(session: Session, by_id: dict[str, SourceListing], existing: dict[str, tuple],
                          ids: dict[str, int], now: datetime) -> int:
    """A price history row for each new listing with a price and each whose price changed; returns how
    many of them were stored listings whose price changed."""
    changed = [ext for ext, item in by_id.items()
               if item.price is not None and (ext not in existing or existing[ext][1:3] != (item.price, item.currency))]
    if changed:
        session.execute(insert(PriceChange), [  # seen_at is this page's own: no conflict possible
            {"listing_id": ids[ext], "price": by_id[ext].price, "currency": by_id[ext].currency, "seen_at": now}
            for ext in changed])
    return sum(1 for ext in changed if ext in existing)


def _insert_photos(session: Session, by_id: dict[str, SourceListing], ids: dict[str, int], photos_per_listing: int,
                   now: datetime, due: datetime) -> list[int]:
    """Rows for the listings' first ``photos_per_listing`` photos, queued for download; returns the ids of
    those not stored yet."""
    photo_rows = [
        {"listing_id": ids[ext], "position": pos, "url": url, "stage": Stage.download.value,
         "state": "pending", "attempts": 0, "updated_at": now, "next_attempt_at": due, "label_conflict": False}
        for ext, item in by_id.items()
        for pos, url in enumerate(item.photos[:photos_per_listing])
    ]
    if not photo_rows:
        return []
    return list(session.execute(
        insert_stmt(session, Image.__table__).on_conflict_do_nothing(index_elements=["listing_id", "position"])
        .returning(Image.id), photo_rows
    ).scalars().all())


def _label_page(settings: Settings, source: Source, items: list[SourceListing], budget: CallBudget,
                stats: CrawlStats) -> tuple[list[SourceListing], dict[str, Label]]:
    """Labels for a page, with detail calls (concurrent, in the source) for what the summaries lack."""
    labels = {i.external_id: normalize(i.make, i.model, i.title) for i in items}
    unlabelled = [ext for ext, label in labels.items() if label.class_name is None]
    if not unlabelled:
        return items, labels
    with session_scope(settings) as s:
        missing = set(unlabelled) - _with_model(s, source.name, unlabelled)
    wanted = [i for i in items if i.external_id in missing]
    if not wanted:
        return items, labels
    stats.details += len(wanted)
    detailed = {i.external_id: i for i in source.details(wanted, budget)}
    labels.update({ext: normalize(i.make, i.model, i.title) for ext, i in detailed.items()})
    return [detailed.get(i.external_id, i) for i in items], labels


def crawl(settings: Settings, source: Source, dispatch: Dispatch, *, max_listings: int | None = None) -> CrawlStats:
    """Crawl ``source`` once (or take up its unfinished crawl): store every page, dispatch new photos,
    end listings gone for good."""
    started = time.perf_counter()
    stats = CrawlStats(source=source.name)
    lease_s = settings.crawl_lease_s  # renewed with every page; a crawl that dies holds it this long at most
    with session_scope(settings) as s:
        lease = _acquire(s, source.name, lease_s, settings.ebay_daily_call_budget)
    stats.crawl = lease.crawl
    limit = max_listings if max_listings is not None else (settings.crawl_max_listings or None)
    seen: set[str] = set()
    try:
        for page in source.pages(lease.cursor, lease.budget):
            stats.add_page(page)
            items, cursor = unique_listings(page.listings, seen, stats), page.cursor
            if limit is not None and stats.listings + len(items) >= limit:
                stats.state, stats.reason = "stopped", f"max_listings={limit} reached"
                if stats.listings + len(items) > limit:
                    items, cursor = items[: limit - stats.listings], None  # this page again next time
            items, labels = _label_page(settings, source, items, lease.budget, stats)
            with session_scope(settings) as s:
                new_ids = store_page(s, source.name, stats.crawl, items, labels, settings.photos_per_listing, stats,
                                     settings.stale_after_s)
                mark_price_issues(s, source.name, [i.external_id for i in items], settings.price_floor)
                _save_progress(s, source.name, lease, lease_s, cursor)
            if new_ids:
                dispatch(Stage.download, new_ids)
            if stats.state == "stopped":
                break
        else:
            stats.state = "idle" if stats.complete else "partial"
            if stats.complete:
                with session_scope(settings) as s:
                    stats.ended += _end_unseen(s, source.name, stats.crawl, settings.ended_after_crawls)
    except BudgetExhausted as exc:
        stats.state, stats.reason = "paused", str(exc)
    except SourceError as exc:
        stats.state, stats.reason = "failed", str(exc)
    except BaseException as exc:
        stats.state, stats.reason = "failed", f"{type(exc).__name__}: {exc}"
        raise
    finally:
        stats.calls = lease.budget.spent
        with session_scope(settings) as s:
            stats.ended += _end_expired(s, source.name)
            stats.seconds = round(time.perf_counter() - started, 3)
            values: dict[str, Any] = {"locked_until": None, "state": stats.state, "last_finished": utcnow(),
                                      "last_stats": stats.as_dict(), "calls_day": lease.budget.day,
                                      "calls_today": lease.budget.used}
            if stats.state in ("idle", "partial"):
                values["cursor"] = {}
            s.execute(update(CrawlState)
                      .where(CrawlState.source == source.name, CrawlState.last_started == lease.started)
                      .values(**values))
    _refit_fair_prices(settings, stats)
    log.info("crawl %s #%s %s: %s listings (%s new), %s photos queued, %s calls in %.1fs", source.name,
             stats.crawl, stats.state, stats.listings, stats.new_listings, stats.new_photos, stats.calls, stats.seconds)
    return stats


def _refit_fair_prices(settings: Settings, stats: CrawlStats) -> None:
    """The fair prices follow the catalogue: refitted after a crawl that stored listings, if it changed."""
    if stats.listings:
        with session_scope(settings) as s:
            refresh_fair_prices(s, settings)


def _end_unseen(session: Session, source: str, crawl_no: int, after: int) -> int:
    """Listings not seen in the last ``after`` complete crawls are marked ended."""
    return session.execute(
        update(Listing)
        .where(Listing.source == source, Listing.status == ListingStatus.active.value,
               Listing.last_crawl <= crawl_no - after)
        .values(status=ListingStatus.ended.value, ended_at=utcnow())
    ).rowcount or 0


def _end_expired(session: Session, source: str) -> int:
    """Listings past their ``itemEndDate`` (ISO 8601 in UTC, as the Browse API writes it) are marked ended."""
    now = utcnow()
    return session.execute(
        update(Listing)
        .where(Listing.source == source, Listing.status == ListingStatus.active.value,
               Listing.raw["itemEndDate"].as_string() < now.strftime("%Y-%m-%dT%H:%M:%S"))
        .values(status=ListingStatus.ended.value, ended_at=now)
    ).rowcount or 0
