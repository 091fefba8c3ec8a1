"""SQLAlchemy 2 models: the source of truth for every stage.

Natural keys carry unique constraints so that every write can be an upsert and a second delivery of
a task changes nothing. Timestamps are naive UTC (``utcnow``) so SQLite and PostgreSQL agree.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

#: Autoincrementing 64-bit keys on PostgreSQL, INTEGER PRIMARY KEY (rowid) on SQLite.
Id = BigInteger().with_variant(Integer, "sqlite")


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class Stage(str, enum.Enum):
    """Where a photo is in the pipeline."""

    download = "download"
    dedup = "dedup"
    inference = "inference"
    done = "done"


class State(str, enum.Enum):
    """How the photo's current stage stands."""

    pending = "pending"  # waiting: dispatched, or in backoff until ``next_attempt_at``
    running = "running"  # claimed by a task until ``lease_until``
    failed = "failed"
    done = "done"


class ListingStatus(str, enum.Enum):
    active = "active"
    ended = "ended"


class VersionStatus(str, enum.Enum):
    candidate = "candidate"
    active = "active"
    retired = "retired"
    rejected = "rejected"
    failed = "failed"


class CarClass(Base):
    __tablename__ = "car_classes"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    name: Mapped[str] = mapped_column(String(120), unique=True)
    make: Mapped[str] = mapped_column(String(60))
    model: Mapped[str] = mapped_column(String(80))


class Listing(Base):
    __tablename__ = "listings"
    __table_args__ = (UniqueConstraint("source", "external_id", name="uq_listings_source_external_id"),
                      # the offers search: a model's active listings within a bounding box, from the index alone
                      Index("ix_listings_class_place", "class_id", "status", "place_lat", "place_lon"))

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    source: Mapped[str] = mapped_column(String(40))
    external_id: Mapped[str] = mapped_column(String(120))
    url: Mapped[str | None] = mapped_column(Text)
    title: Mapped[str] = mapped_column(String(500), default="")
    seller_make: Mapped[str | None] = mapped_column(String(80))
    seller_model: Mapped[str | None] = mapped_column(String(120))
    year: Mapped[int | None] = mapped_column(Integer)
    price: Mapped[Decimal | None] = mapped_column(Numeric(14, 2))
    currency: Mapped[str | None] = mapped_column(String(3))
    mileage: Mapped[int | None] = mapped_column(Integer)
    city: Mapped[str | None] = mapped_column(String(120))
    postal_code: Mapped[str | None] = mapped_column(String(20))
    country: Mapped[str | None] = mapped_column(String(2))
    latitude: Mapped[float | None] = mapped_column(Float)
    longitude: Mapped[float | None] = mapped_column(Float)
    #: Where the listing is, for the offers search: its own coordinates, else its postal code's centroid.
    place_lat: Mapped[float | None] = mapped_column(Float)
    place_lon: Mapped[float | None] = mapped_column(Float)
    #: How it is sold (the Browse API's ``buyingOptions``, comma-separated: FIXED_PRICE, AUCTION, ...).
    buying_options: Mapped[str | None] = mapped_column(String(60))
    bid_count: Mapped[int | None] = mapped_column(Integer)
    #: Why the asking price cannot count in price statistics (None: it can).
    price_issue: Mapped[str | None] = mapped_column(String(120))
    condition: Mapped[str | None] = mapped_column(String(60))
    class_id: Mapped[int | None] = mapped_column(ForeignKey("car_classes.id"), index=True)
    label_method: Mapped[str] = mapped_column(String(20), default="unknown")
    label_confidence: Mapped[float] = mapped_column(Float, default=0.0)
    label_reason: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(12), default=ListingStatus.active.value, index=True)
    #: Problems found in the listing itself (no photos, missing price...), for `status` and the report.
    issues: Mapped[list[Any]] = mapped_column(default=list)
    first_seen: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    last_crawl: Mapped[int] = mapped_column(Integer, default=0)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime)
    raw: Mapped[dict[str, Any]] = mapped_column(default=dict)

    car_class: Mapped[CarClass | None] = relationship()
    images: Mapped[list["Image"]] = relationship(
        back_populates="listing", order_by="Image.position", foreign_keys="Image.listing_id"
    )


class PriceChange(Base):
    __tablename__ = "price_history"
    __table_args__ = (UniqueConstraint("listing_id", "seen_at", name="uq_price_history_listing_seen"),)
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    listing_id: Mapped[int] = mapped_column(ForeignKey("listings.id", ondelete="CASCADE"), index=True)
    price: Mapped[Decimal | None] = mapped_column(Numeric(14, 2))
    currency: Mapped[str | None] = mapped_column(String(3))
    seen_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Image(Base):
    __tablename__ = "images"
    __table_args__ = (
        UniqueConstraint("listing_id", "position", name="uq_images_listing_position"),
        Index("ix_images_stage_state", "stage", "state", "updated_at"),
        Index("ix_images_stage_state_next", "stage", "state", "next_attempt_at"),
        # Multi-index hashing: one index per 16-bit chunk of the 64-bit perceptual hash, each
        # carrying the full hash so the distance is verified from the index alone.
        *(Index(f"ix_images_phash_c{i}", f"phash_c{i}", "phash") for i in range(4)),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    listing_id: Mapped[int] = mapped_column(ForeignKey("listings.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    url: Mapped[str] = mapped_column(Text)
    stage: Mapped[str] = mapped_column(String(12), default=Stage.download.value)
    state: Mapped[str] = mapped_column(String(12), default=State.pending.value)
    #: Why the last try in this stage failed: the exception's type and message, short, no secrets.
    error: Mapped[str | None] = mapped_column(String(300))
    #: Tries in the current stage (reset when the photo moves on); ``max_attempts`` of them, then failed.
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    #: A pending photo not taken by then is (re)sent by the sweeper: ``stale_after_s`` after it was
    #: sent (its message was lost), or the end of its backoff after a transient failure.
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime, default=utcnow)
    #: A running photo's claim: until then its task may still be working on it; after, it was lost.
    lease_until: Mapped[datetime | None] = mapped_column(DateTime)
    sha256: Mapped[str | None] = mapped_column(String(64), index=True)
    phash: Mapped[int | None] = mapped_column(BigInteger)
    phash_c0: Mapped[int | None] = mapped_column(Integer)
    phash_c1: Mapped[int | None] = mapped_column(Integer)
    phash_c2: Mapped[int | None] = mapped_column(Integer)
    phash_c3: Mapped[int | None] = mapped_column(Integer)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    size_bytes: Mapped[int | None] = mapped_column(Integer)
    content_type: Mapped[str | None] = mapped_column(String(60))
    storage_key: Mapped[str | None] = mapped_column(String(200))
    normalized_key: Mapped[str | None] = mapped_column(String(200))
    duplicate_of_id: Mapped[int | None] = mapped_column(ForeignKey("images.id"), index=True)
    duplicate_distance: Mapped[int | None] = mapped_column(Integer)
    #: A duplicate whose listing carries another label than its original's listing.
    label_conflict: Mapped[bool] = mapped_column(Boolean, default=False)
    #: The order in which dedup decided photos originals (decisions are serialized): an in-memory hash
    #: index catches up with one range query.
    original_seq: Mapped[int | None] = mapped_column(BigInteger, unique=True, index=True)
    #: Why the photo is left out of training (not a car, a label a confident model contradicts).
    excluded_reason: Mapped[str | None] = mapped_column(String(200))

    listing: Mapped[Listing] = relationship(back_populates="images", foreign_keys=[listing_id])
    duplicate_of: Mapped["Image | None"] = relationship(remote_side=[id])


class ModelVersion(Base):
    __tablename__ = "model_versions"
    __table_args__ = (
        # At most one active version, in the schema: a second promotion racing the first fails.
        Index("uq_model_versions_one_active", "status", unique=True,
              sqlite_where=text("status = 'active'"), postgresql_where=text("status = 'active'")),
    )
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    name: Mapped[str] = mapped_column(String(40), unique=True)
    backbone: Mapped[str] = mapped_column(String(40))
    image_size: Mapped[int] = mapped_column(Integer)
    classes: Mapped[list[Any]] = mapped_column(default=list)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    dataset: Mapped[dict[str, Any]] = mapped_column(default=dict)
    artifacts: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(12), default=VersionStatus.candidate.value, index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    promoted_at: Mapped[datetime | None] = mapped_column(DateTime)


class Prediction(Base):
    __tablename__ = "predictions"
    __table_args__ = (UniqueConstraint("image_id", "model_version_id", name="uq_predictions_image_version"),)
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"))
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"), index=True)
    top_class: Mapped[str] = mapped_column(String(120))
    top_probability: Mapped[float] = mapped_column(Float)
    #: ``[[class name, probability], ...]`` best first, k = settings.top_k
    topk: Mapped[list[Any]] = mapped_column(default=list)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class ListingPrediction(Base):
    __tablename__ = "listing_predictions"
    __table_args__ = (
        UniqueConstraint("listing_id", "model_version_id", name="uq_listing_predictions_listing_version"),
        Index("ix_listing_predictions_version_class", "model_version_id", "top_class"),
    )
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    listing_id: Mapped[int] = mapped_column(ForeignKey("listings.id", ondelete="CASCADE"))
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"), index=True)
    top_class: Mapped[str] = mapped_column(String(120), index=True)
    top_probability: Mapped[float] = mapped_column(Float)
    topk: Mapped[list[Any]] = mapped_column(default=list)
    photos: Mapped[int] = mapped_column(Integer)
    #: The model confidently disagrees with the seller's label.
    mismatch: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


_OPEN_RUN = "state IN ('pending', 'running')"


class TrainingRun(Base):
    __tablename__ = "training_runs"
    __table_args__ = (
        # At most one pending or running run: the indexed expression is true for every open run.
        Index("uq_training_runs_one_open", text(f"({_OPEN_RUN})"), unique=True,
              sqlite_where=text(_OPEN_RUN), postgresql_where=text(_OPEN_RUN)),
    )
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    trigger: Mapped[str] = mapped_column(String(20))  # first | new_photos | new_class | manual
    reason: Mapped[str] = mapped_column(String(300))
    state: Mapped[str] = mapped_column(String(12), default="pending", index=True)
    error: Mapped[str | None] = mapped_column(Text)
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    outcome: Mapped[dict[str, Any]] = mapped_column(default=dict)
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
    #: Written every ``training_heartbeat_s`` by whoever runs it (a worker or the CLI).
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime)
    #: Times the sweeper found it dead and put it back (bounded by ``training_max_requeues``).
    requeues: Mapped[int] = mapped_column(Integer, default=0)
    #: What it trained on (labelled unique photos and classes), to bound retries on the same data.
    data_key: Mapped[str | None] = mapped_column(String(80))


class TrainingCheck(Base):
    """Every decision of the retraining trigger, fired or not, with its reason."""

    __tablename__ = "training_checks"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    fire: Mapped[bool] = mapped_column(Boolean)
    trigger: Mapped[str | None] = mapped_column(String(20))
    reason: Mapped[str] = mapped_column(String(300))
    training_run_id: Mapped[int | None] = mapped_column(ForeignKey("training_runs.id"))


class CrawlState(Base):
    __tablename__ = "crawl_state"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    source: Mapped[str] = mapped_column(String(40), unique=True)
    crawls: Mapped[int] = mapped_column(Integer, default=0)
    state: Mapped[str] = mapped_column(String(12), default="idle")  # idle | running | paused
    locked_until: Mapped[datetime | None] = mapped_column(DateTime)
    cursor: Mapped[dict[str, Any]] = mapped_column(default=dict)
    calls_day: Mapped[str | None] = mapped_column(String(10))
    calls_today: Mapped[int] = mapped_column(Integer, default=0)
    last_started: Mapped[datetime | None] = mapped_column(DateTime)
    last_finished: Mapped[datetime | None] = mapped_column(DateTime)
    last_stats: Mapped[dict[str, Any]] = mapped_column(default=dict)


class Beat(Base):
    """The last time each periodic job ran (``sweep``: the sweeper), on the database's clock: how
    ``autodetect doctor`` tells whether beat is alive."""

    __tablename__ = "beats"
    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime)


class PriceModel(Base):
    """A fit of the fair-price models over the catalogue (``catalogue_key`` names the catalogue it was fitted
    on; refitted when that changes)."""

    __tablename__ = "price_models"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    fitted_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    catalogue_key: Mapped[str] = mapped_column(String(64), index=True)
    listings: Mapped[int] = mapped_column(Integer)
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
