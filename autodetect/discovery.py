"""Discovery: crawl a source, upsert listings on (source, external_id), queue their first photos.

One crawl of a source runs at a time (a lease in ``crawl_state``). Each page is written in one
transaction, and its new photos are dispatched after that commit. A stored listing is never
overwritten with worse data: a field missing from a later record keeps its stored value.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import case, func, select, update
from sqlalchemy.orm import Session

from autodetect.catalogue.names import normalize
from autodetect.db import insert_stmt, session_scope
from autodetect.pipeline import Dispatch
from autodetect.settings import Settings
from autodetect.sources.base import BudgetExhausted, Source, SourceListing
from autodetect.storage import (
    CarClass,
    CrawlState,
    Image,
    Listing,
    ListingStatus,
    PriceChange,
    Stage,
    utcnow,
)

log = logging.getLogger(__name__)

#: Listing columns a later crawl may fill in but never blank out.
_KEEP_IF_MISSING = ("url", "price", "currency", "city", "postal_code", "country", "latitude", "longitude",
                    "condition", "seller_make", "seller_model", "year", "mileage")


@dataclass
class CrawlStats:
    source: str
    crawl: int = 0
    pages: int = 0
    listings: int = 0
    new_listings: int = 0
    updated_listings: int = 0
    price_changes: int = 0
    duplicate_ids: int = 0
    new_photos: int = 0
    ended: int = 0
    rejected: list[str] = field(default_factory=list)
    problems: dict[str, int] = field(default_factory=dict)
    paused: str | None = None
    skipped: str | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


class CrawlLocked(Exception):
    """Another crawl of this source holds the lease."""


def _acquire(session: Session, source: str, lease_s: int) -> int:
    session.execute(
        insert_stmt(session, CrawlState.__table__)
        .values(source=source, crawls=0, state="idle", cursor={}, calls_today=0, last_stats={})
        .on_conflict_do_nothing(index_elements=["source"])
    )
    now = utcnow()
    got = session.execute(
        update(CrawlState)
        .where(CrawlState.source == source)
        .where((CrawlState.locked_until.is_(None)) | (CrawlState.locked_until < now))
        .values(locked_until=now + timedelta(seconds=lease_s), state="running", last_started=now,
                crawls=CrawlState.crawls + 1)
        .returning(CrawlState.crawls)
    ).scalar_one_or_none()
    if got is None:
        raise CrawlLocked(f"a crawl of {source!r} is already running")
    return got


def _class_ids(session: Session, classes: dict[str, tuple[str, str]]) -> dict[str, int]:
    """Ids of the canonical classes, created on first sight."""
    if classes:
        rows = [{"name": n, "make": mk, "model": md} for n, (mk, md) in sorted(classes.items())]
        session.execute(insert_stmt(session, CarClass.__table__).values(rows)
                        .on_conflict_do_nothing(index_elements=["name"]))
    return dict(session.execute(select(CarClass.name, CarClass.id).where(CarClass.name.in_(classes))).all())


def store_page(session: Session, source: str, crawl: int, listings: list[SourceListing],
               photos_per_listing: int, stats: CrawlStats) -> list[int]:
    """Upsert one page of listings and their first photos; returns the new photo ids."""
    unique: dict[str, SourceListing] = {}
    for item in listings:
        if item.external_id in unique:
            stats.duplicate_ids += 1
        unique[item.external_id] = item
        for problem in item.problems:
            key = problem.split(":")[0]
            stats.problems[key] = stats.problems.get(key, 0) + 1
    if not unique:
        return []
    existing = {
        ext: (lid, price, last_crawl)
        for ext, lid, price, last_crawl in session.execute(
            select(Listing.external_id, Listing.id, Listing.price, Listing.last_crawl)
            .where(Listing.source == source, Listing.external_id.in_(unique))
        )
    }
    labels = {ext: normalize(i.make, i.model, i.title) for ext, i in unique.items()}
    class_ids = _class_ids(session, {lab.class_name: (lab.make, lab.model) for lab in labels.values() if lab.class_name})
    now = utcnow()
    rows = []
    for ext, item in unique.items():
        if ext in existing and existing[ext][2] == crawl:
            stats.duplicate_ids += 1  # seen already on an earlier page of this crawl
        label = labels[ext]
        rows.append({
            "source": source, "external_id": ext, "url": item.url, "title": item.title,
            "seller_make": item.make, "seller_model": item.model, "year": item.year,
            "price": item.price, "currency": item.currency, "mileage": item.mileage,
            "city": item.city, "postal_code": item.postal_code, "country": item.country,
            "latitude": item.latitude, "longitude": item.longitude, "condition": item.condition,
            "class_id": class_ids.get(label.class_name) if label.class_name else None,
            "label_method": label.method, "label_confidence": label.confidence,
            "label_reason": label.reason[:200], "status": ListingStatus.active.value,
            "issues": item.problems, "first_seen": now, "last_seen": now, "last_crawl": crawl,
            "ended_at": None, "raw": item.raw,
        })
    stmt = insert_stmt(session, Listing.__table__).values(rows)
    excluded = stmt.excluded
    table = Listing.__table__
    updates: dict[str, Any] = {c: func.coalesce(getattr(excluded, c), table.c[c]) for c in _KEEP_IF_MISSING}
    updates.update({c: getattr(excluded, c) for c in ("title", "issues", "last_seen", "last_crawl", "status",
                                                       "ended_at", "raw")})
    # A label is replaced only by one at least as confident.
    better = excluded.label_confidence >= table.c.label_confidence
    for c in ("class_id", "label_method", "label_confidence", "label_reason"):
        updates[c] = case((better, getattr(excluded, c)), else_=table.c[c])
    session.execute(stmt.on_conflict_do_update(index_elements=["source", "external_id"], set_=updates))

    ids = dict(session.execute(
        select(Listing.external_id, Listing.id).where(Listing.source == source, Listing.external_id.in_(unique))
    ).all())
    changes = [
        {"listing_id": ids[ext], "price": item.price, "currency": item.currency, "seen_at": now}
        for ext, item in unique.items()
        if item.price is not None and (ext not in existing or existing[ext][1] != item.price)
    ]
    stats.price_changes += sum(1 for ext, item in unique.items()
                               if ext in existing and item.price is not None and existing[ext][1] != item.price)
    if changes:
        session.execute(insert_stmt(session, PriceChange.__table__).values(changes).on_conflict_do_nothing())
    stats.listings += len(unique)
    stats.new_listings += sum(1 for ext in unique if ext not in existing)
    stats.updated_listings += sum(1 for ext in unique if ext in existing)

    photo_rows = [
        {"listing_id": ids[ext], "position": pos, "url": url, "stage": Stage.download.value,
         "state": "pending", "attempts": 0, "updated_at": now, "label_conflict": False}
        for ext, item in unique.items()
        for pos, url in enumerate(item.photos[:photos_per_listing])
    ]
    if not photo_rows:
        return []
    new_ids = session.execute(
        insert_stmt(session, Image.__table__).values(photo_rows)
        .on_conflict_do_nothing(index_elements=["listing_id", "position"])
        .returning(Image.id)
    ).scalars().all()
    stats.new_photos += len(new_ids)
    return list(new_ids)


def crawl(settings: Settings, source: Source, dispatch: Dispatch, *, max_listings: int | None = None) -> CrawlStats:
    """Crawl ``source`` once: store every page, dispatch new photos, end listings gone for good."""
    started = time.perf_counter()
    stats = CrawlStats(source=source.name)
    with session_scope(settings) as s:
        stats.crawl = _acquire(s, source.name, lease_s=settings.visibility_timeout)
        cursor = s.execute(select(CrawlState.cursor).where(CrawlState.source == source.name)).scalar_one()
    limit = max_listings if max_listings is not None else (settings.crawl_max_listings or None)
    state = "idle"
    try:
        for page in source.pages(dict(cursor or {})):
            stats.pages += 1
            stats.rejected.extend(page.rejected)
            batch = page.listings
            if limit is not None:
                batch = batch[: max(0, limit - stats.listings)]
            enrich = getattr(source, "details", None)
            if enrich is not None:
                batch = [enrich(i) if normalize(i.make, i.model, i.title).class_name is None else i for i in batch]
            with session_scope(settings) as s:
                new_ids = store_page(s, source.name, stats.crawl, batch, settings.photos_per_listing, stats)
                s.execute(update(CrawlState).where(CrawlState.source == source.name)
                          .values(cursor=page.cursor if page.cursor else {}))
            if new_ids:
                dispatch(Stage.download, new_ids)
            if limit is not None and stats.listings >= limit:
                break
        else:
            with session_scope(settings) as s:
                stats.ended = _end_missing(s, source.name, stats.crawl, settings.ended_after_crawls)
    except BudgetExhausted as exc:
        stats.paused = str(exc)
        state = "paused"
    finally:
        stats.seconds = round(time.perf_counter() - started, 3)
        with session_scope(settings) as s:
            values: dict[str, Any] = {"locked_until": None, "state": state, "last_finished": utcnow(),
                                      "last_stats": stats.as_dict()}
            if state == "idle":
                values["cursor"] = {}
            s.execute(update(CrawlState).where(CrawlState.source == source.name).values(**values))
    log.info("crawl %s #%s: %s listings (%s new), %s photos queued in %.1fs", source.name, stats.crawl,
             stats.listings, stats.new_listings, stats.new_photos, stats.seconds)
    return stats


def _end_missing(session: Session, source: str, crawl_no: int, after: int) -> int:
    """Listings not seen in the last ``after`` complete crawls are marked ended."""
    result = session.execute(
        update(Listing)
        .where(Listing.source == source, Listing.status == ListingStatus.active.value,
               Listing.last_crawl <= crawl_no - after)
        .values(status=ListingStatus.ended.value, ended_at=utcnow())
    )
    return result.rowcount or 0
