"""What the pipeline exporter reads from PostgreSQL (or SQLite) on each scrape: one read-only
transaction of a few grouped counts, on the database's clock.

Counting rows instead of events is what makes the numbers right however many workers run, survive
any restart, and agree with ``autodetect status``."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache

from sqlalchemy import Engine, create_engine, func, select
from sqlalchemy.orm import Session

from autodetect.db import db_now, engine_for
from autodetect.storage import CrawlState, Image, Listing, ModelVersion, Stage, State, TrainingRun

#: Versions shown with their held-out metrics ("accuracy over versions"): the newest ones.
VERSIONS_SHOWN = 20
#: The held-out metrics exported per version (numbers only; others are skipped).
MODEL_METRICS = ("top1", "top3", "top5", "mean_per_class", "listing_top1", "listing_top3", "n_images")

#: A failure's reason (free text, see ``pipeline.fates.describe``) -> a class of bounded cardinality.
_REASON_CLASSES = (
    ("timeout", re.compile(r"timed? ?out|timeout|deadline", re.I)),
    ("http_4xx", re.compile(r"\bhttp 4\d\d\b|\b4\d\d (client )?error|\b40[34]\b|\b429\b", re.I)),
    ("http_5xx", re.compile(r"\bhttp 5\d\d\b|\b5\d\d (server )?error", re.I)),
    ("dns", re.compile(r"\bdns\b", re.I)),
    ("connection", re.compile(r"connect|refused|reset|unreachable|request failed", re.I)),
    ("guard", re.compile(r"guard|private|loopback|not allowed|forbidden address", re.I)),
    ("too_large", re.compile(r"too large|too many pixels|limit", re.I)),
    ("not_an_image", re.compile(r"not an image|undecodable|unknown image format|empty|truncated|decode", re.I)),
    ("lost_worker", re.compile(r"lease|lost|killed|worker", re.I)),
    ("database", re.compile(r"OperationalError|database|psycopg|sqlite", re.I)),
)


def reason_class(reason: str | None) -> str:
    """The class of a failure reason: ``timeout``, ``http_4xx``, ``http_5xx``, ``dns``, ``connection``,
    ``guard``, ``too_large``, ``not_an_image``, ``lost_worker``, ``database`` or ``other``."""
    for name, pattern in _REASON_CLASSES:
        if reason and pattern.search(reason):
            return name
    return "other"


@dataclass
class Snapshot:
    """One scrape's view of the database."""

    photos: dict[tuple[str, str], int] = field(default_factory=dict)  # (stage, state) -> rows
    oldest_pending_s: dict[str, float] = field(default_factory=dict)  # stage -> age of its oldest pending row
    retrying: dict[str, int] = field(default_factory=dict)  # stage -> pending rows with attempts > 0
    failures: dict[tuple[str, str], int] = field(default_factory=dict)  # (stage, reason class) -> failed rows
    listings: dict[str, int] = field(default_factory=dict)  # status -> rows
    training_runs: dict[str, int] = field(default_factory=dict)  # state -> rows
    versions: list[dict] = field(default_factory=list)  # newest first: id, name, status, backbone, metrics
    crawls: list[dict] = field(default_factory=list)  # source, crawls, last_started, last_finished (epoch s)


@cache
def scrape_engine(url: str, timeout_s: float) -> Engine:
    """A small engine of the exporter's own whose connects and statements give up within ``timeout_s``
    (PostgreSQL); SQLite reads through the project's read-only engine."""
    if url.startswith("sqlite"):
        return engine_for(url, readonly=True)
    ms = max(1, int(timeout_s * 1000))
    return create_engine(url, pool_size=1, max_overflow=1, pool_pre_ping=True, pool_timeout=timeout_s,
                         connect_args={"connect_timeout": max(1, math.ceil(timeout_s)),
                                       "options": f"-c statement_timeout={ms} -c lock_timeout={ms} "
                                                  "-c default_transaction_read_only=on"})


def take_snapshot(engine: Engine) -> Snapshot:
    """Read everything the exporter shows, in one short read-only transaction."""
    with Session(engine) as session:
        try:
            return _read(session)
        finally:
            session.rollback()


def _read(session: Session) -> Snapshot:
    snap = Snapshot()
    now = db_now(session)
    for stage, state, n in session.execute(
            select(Image.stage, Image.state, func.count()).group_by(Image.stage, Image.state)):
        snap.photos[(stage, state)] = n
    for stage, oldest in session.execute(
            select(Image.stage, func.min(Image.updated_at)).where(Image.state == State.pending.value)
            .group_by(Image.stage)):
        snap.oldest_pending_s[stage] = max(0.0, (now - oldest).total_seconds()) if oldest else 0.0
    for stage, n in session.execute(
            select(Image.stage, func.count()).where(Image.state == State.pending.value, Image.attempts > 0)
            .group_by(Image.stage)):
        snap.retrying[stage] = n
    for stage, reason, n in session.execute(
            select(Image.stage, Image.error, func.count()).where(Image.state == State.failed.value)
            .group_by(Image.stage, Image.error)):
        key = (stage, reason_class(reason))
        snap.failures[key] = snap.failures.get(key, 0) + n
    snap.listings = dict(session.execute(select(Listing.status, func.count()).group_by(Listing.status)).all())
    snap.training_runs = dict(session.execute(
        select(TrainingRun.state, func.count()).group_by(TrainingRun.state)).all())
    snap.versions = _versions(session)
    snap.crawls = [{"source": c.source, "crawls": c.crawls, "last_started": _epoch(c.last_started),
                    "last_finished": _epoch(c.last_finished)} for c in session.scalars(select(CrawlState))]
    return snap


def _versions(session: Session) -> list[dict]:
    rows = session.execute(select(ModelVersion.id, ModelVersion.name, ModelVersion.status, ModelVersion.backbone,
                                  ModelVersion.metrics).order_by(ModelVersion.id.desc()).limit(VERSIONS_SHOWN)).all()
    active = session.execute(select(ModelVersion.id, ModelVersion.name, ModelVersion.status, ModelVersion.backbone,
                                    ModelVersion.metrics).where(ModelVersion.status == "active")).all()
    seen, out = set(), []
    for r in [*active, *rows]:
        if r.id not in seen:
            seen.add(r.id)
            metrics = {k: float(v) for k, v in (r.metrics or {}).items()
                       if k in MODEL_METRICS and isinstance(v, (int, float)) and not isinstance(v, bool)}
            out.append({"id": r.id, "name": r.name, "status": r.status, "backbone": r.backbone, "metrics": metrics})
    return out


def _epoch(at: datetime | None) -> float | None:
    """A naive UTC timestamp as seconds since the epoch."""
    if at is None:
        return None
    return (at - datetime(1970, 1, 1)).total_seconds()


STAGES = tuple(s.value for s in Stage)
STATES = tuple(s.value for s in State)
