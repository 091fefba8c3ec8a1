"""Listing-level predictions: each listing's answer per model version, the average of its unique
photos' predictions (a duplicate counts with its original's), flagged when it confidently disagrees
with the seller's label.

They are refreshed in the transaction that writes the photos' predictions (``inference``) or marks a
photo a duplicate (``dedup``). On PostgreSQL an advisory lock per listing serializes the refreshes of
one listing, so two workers predicting two of its photos do not each average without the other's.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from sqlalchemy import bindparam, func, select, text
from sqlalchemy.dialects.postgresql import ARRAY, BIGINT
from sqlalchemy.orm import Session

from autodetect.db import insert_stmt, is_postgres
from autodetect.settings import Settings
from autodetect.storage import (
    CarClass,
    Image,
    Listing,
    ListingPrediction,
    ModelVersion,
    Prediction,
    State,
    VersionStatus,
    utcnow,
)

#: Namespace of the PostgreSQL advisory locks that serialize listing-prediction refreshes per listing.
_LISTING_LOCK_NS = 7_340_021


def _lock_listings(session: Session, listing_ids: Sequence[int]) -> None:
    """On PostgreSQL, serialize refreshes of the same listing (two workers predicting two photos of
    one listing would otherwise each average without the other's photo). Locks are taken in id
    order and released at commit; they do not block anything but another refresh of the listing."""
    if is_postgres(session) and listing_ids:
        session.execute(
            text("SELECT count(pg_advisory_xact_lock(:ns, (x % 2147483647)::int)) "
                 "FROM (SELECT unnest(:ids) AS x ORDER BY 1) AS ordered")
            .bindparams(bindparam("ids", type_=ARRAY(BIGINT))),
            {"ns": _LISTING_LOCK_NS, "ids": sorted(int(i) for i in listing_ids)})


def refresh_listing_predictions(session: Session, listing_ids: Sequence[int], settings: Settings,
                                version_id: int | None = None) -> int:
    """Average the predictions of each listing's unique photos (a duplicate counts with its original's
    prediction, once per listing) into the listing's prediction for that model version, and flag a
    mismatch when the averaged top class confidently (>= ``mismatch_confidence``) disagrees with the
    seller's label. Each photo contributes its stored top-k; a class outside a photo's top-k counts 0
    for that photo."""
    if not listing_ids:
        return 0
    if version_id is None:
        version_id = session.execute(select(ModelVersion.id).where(
            ModelVersion.status == VersionStatus.active.value)).scalar_one_or_none()
        if version_id is None:
            return 0
    listing_ids = sorted(set(listing_ids))
    _lock_listings(session, listing_ids)
    # Two index lookups (photos by listing, then predictions by (photo, version)) rather than one
    # join on an expression, which the planner may answer by scanning every prediction.
    photos = session.execute(
        select(Image.listing_id, func.coalesce(Image.duplicate_of_id, Image.id))
        .where(Image.listing_id.in_(listing_ids), Image.state != State.failed.value)
    ).all()
    sources = sorted({source for _, source in photos})
    tops = dict(session.execute(select(Prediction.image_id, Prediction.topk).where(
        Prediction.image_id.in_(sources), Prediction.model_version_id == version_id)).all()) if sources else {}
    per_listing: dict[int, dict[int, list]] = defaultdict(dict)
    for listing_id, source in photos:
        if source in tops:
            per_listing[listing_id][source] = tops[source]
    labels = dict(session.execute(
        select(Listing.id, Listing.class_id).where(Listing.id.in_(list(per_listing)))).all())
    class_names = dict(session.execute(
        select(CarClass.id, CarClass.name).where(CarClass.id.in_([c for c in labels.values() if c]))).all())
    now = utcnow()
    values = []
    for listing_id, tops in per_listing.items():
        scores: dict[str, float] = defaultdict(float)
        for top in tops.values():
            for name, p in top:
                scores[name] += p / len(tops)
        ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[: settings.top_k]
        best, best_p = ranked[0]
        label = class_names.get(labels.get(listing_id))
        values.append({
            "listing_id": listing_id, "model_version_id": version_id, "top_class": best,
            "top_probability": round(best_p, 6), "topk": [[n, round(p, 6)] for n, p in ranked],
            "photos": len(tops), "updated_at": now,
            "mismatch": bool(label and label != best and best_p >= settings.mismatch_confidence),
        })
    if values:
        stmt = insert_stmt(session, ListingPrediction.__table__)
        session.execute(stmt.on_conflict_do_update(
            index_elements=["listing_id", "model_version_id"],
            set_={c: getattr(stmt.excluded, c) for c in ("top_class", "top_probability", "topk", "photos",
                                                         "mismatch", "updated_at")}), values)
    return len(values)
