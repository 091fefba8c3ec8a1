"""The five stages end to end on SQLite, in-process, against the sandbox on loopback."""

from __future__ import annotations

from urllib.parse import urlparse

import pytest
from sqlalchemy import func, select

from autodetect.db import session_scope
from autodetect.pipeline.discovery import crawl
from autodetect.model.provider import ModelProvider
from autodetect.sources import open_source
from autodetect.storage import Image, Listing, ListingPrediction, ModelVersion, Prediction, TrainingCheck
from autodetect.pipeline.sweeper import sweep
from autodetect.pipeline.retraining import check_retraining


def _snapshot(settings) -> dict[str, object]:
    with session_scope(settings) as s:
        return {
            "listings": s.scalar(select(func.count()).select_from(Listing)),
            "images": sorted(tuple(r) for r in s.execute(
                select(Image.id, Image.stage, Image.state, Image.sha256, Image.duplicate_of_id))),
            "predictions": s.scalar(select(func.count()).select_from(Prediction)),
            "listing_predictions": s.scalar(select(func.count()).select_from(ListingPrediction)),
            "versions": s.scalar(select(func.count()).select_from(ModelVersion)),
        }


@pytest.mark.slow
def test_crawl_to_tagged_catalogue(settings, marketplace, sync_dispatch):
    stats = crawl(settings, open_source(settings), sync_dispatch)
    assert stats.listings == stats.new_listings > 0
    sync_dispatch.drain()

    with session_scope(settings) as s:
        images = s.execute(select(Image)).scalars().all()
        assert images and all(i.stage in ("inference", "done") or i.state == "failed" for i in images)
        for image in images:
            if image.state == "failed":
                assert image.error  # recorded with its reason
                continue
            truth = marketplace.truth_for_photo(urlparse(image.url).path)
            if image.duplicate_of_id is not None:
                original = s.get(Image, image.duplicate_of_id)
                assert original.duplicate_of_id is None, "duplicates point at an original"
                assert truth.original is not None or image.sha256 == original.sha256
        assert any(i.duplicate_of_id for i in images), "the sandbox relists some photos"

    decision, run_id = check_retraining(settings, sync_dispatch)
    assert decision.fire and decision.trigger == "first", decision.reason
    provider = ModelProvider(settings)
    sync_dispatch.drain(provider)

    with session_scope(settings) as s:
        version = s.execute(select(ModelVersion)).scalar_one()
        assert version.status == "active"
        assert set(version.metrics) >= {"top1", "top3", "mean_per_class", "listing_top1"}
        unique_done = s.scalars(select(Image.id).where(Image.duplicate_of_id.is_(None), Image.state == "done")).all()
        predicted = s.execute(select(Prediction.image_id, func.count()).group_by(Prediction.image_id)).all()
        assert sorted(i for i, _ in predicted) == sorted(unique_done), "every unique photo predicted"
        assert all(n == 1 for _, n in predicted), "exactly once"
        with_photos = s.scalars(select(func.distinct(Image.listing_id)).where(Image.state == "done")).all()
        tagged = s.scalars(select(ListingPrediction.listing_id)).all()
        assert sorted(tagged) == sorted(with_photos)
        checks = s.scalars(select(TrainingCheck)).all()
        assert checks[-1].fire and "classes have" in checks[-1].reason

    # Every stage delivered twice changes nothing.
    before = _snapshot(settings)
    crawl(settings, open_source(settings), sync_dispatch)
    with session_scope(settings) as s:
        ids = s.scalars(select(Image.id)).all()
    for stage in ("download", "dedup", "inference"):
        sync_dispatch(stage, ids)
    sync_dispatch("train", [run_id])
    sync_dispatch.drain(provider)
    assert _snapshot(settings) == before
    # A second retraining check finds nothing new and says so.
    decision, run_id = check_retraining(settings, sync_dispatch)
    assert not decision.fire and "new labelled unique photos" in decision.reason


def test_sweeper_requeues_stuck_rows(settings, sync_dispatch):
    crawl(settings, open_source(settings), lambda stage, ids: None)  # the messages are "lost"
    with session_scope(settings) as s:
        pending = s.scalar(select(func.count()).select_from(Image).where(Image.stage == "download"))
    assert pending > 0
    swept = sweep(settings, sync_dispatch)
    assert swept == {"download": pending}
    sync_dispatch.drain()
    with session_scope(settings) as s:
        left = s.scalar(select(func.count()).select_from(Image).where(Image.stage.in_(("download", "dedup")),
                                                                      Image.state != "failed"))
    assert left == 0
