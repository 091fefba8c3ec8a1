"""Near-duplicate detection quality on the sandbox marketplace, through the real code path.

Every photo of a sandbox marketplace goes, in listing order, through ``download_image`` (decode ->
normalize -> ``perceptual_hash`` -> the normalized JPEG into the image store -> the row with its hash
chunks; the fetcher is a stand-in that returns the marketplace's bytes instead of going over HTTP) and
then ``dedup_image`` (sha256, the multi-index lookup on SQLite with the extra probes, verification on
the pixels) at the DEFAULT settings. The sandbox's ground truth says which photos copy an earlier
listing's photo (exactly, re-encoded, resized, lightly cropped or brightened).

- precision = correct / flagged: of the photos marked duplicate, those whose original is the photo
  they really copy (the first photo of its copy chain);
- recall = correct / copies: of the photos that really copy an earlier one, those marked duplicate of
  the right original.

Both are printed (``pytest -s`` shows them; the terminal summary shows them too) and must reach
precision >= 0.99 and recall >= 0.95.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import insert, select

from autodetect.db import session_scope, upgrade
from autodetect.dedup import dedup_image
from autodetect.download import download_image
from autodetect.images.fetch import Fetched
from autodetect.images.store import ImageStore
from autodetect.sandbox.marketplace import Marketplace
from autodetect.settings import Settings, configure
from autodetect.storage import Image, Listing

GOAL_PRECISION, GOAL_RECALL = 0.99, 0.95
#: Big enough for ~100 copies (~2,800 photos), small enough for the 30 s budget on two cores.
LISTINGS, MODELS, SEED = 800, 10, 2024



class MarketplaceFetcher:
    """The download stage's fetcher, answering from the marketplace's bytes (no HTTP)."""

    def __init__(self, market: Marketplace):
        self.market = market

    def fetch(self, url: str) -> Fetched:
        data = self.market.photo_bytes(url)
        assert data is not None, url
        return Fetched(data=data, content_type="image/jpeg", final_url=url, kind="jpeg")


@dataclass
class Quality:
    photos: int = 0
    copies: int = 0
    flagged: int = 0
    correct: int = 0
    seconds: float = 0.0
    missed: Counter = field(default_factory=Counter)  # transform -> copies not found
    wrong: list[tuple[str, str, int | None]] = field(default_factory=list)  # (photo, matched, distance)

    @property
    def precision(self) -> float:
        return self.correct / self.flagged if self.flagged else 1.0

    @property
    def recall(self) -> float:
        return self.correct / self.copies if self.copies else 1.0

    def line(self, settings: Settings) -> str:
        return (f"dedup quality (sandbox {LISTINGS} listings, seed {SEED}; threshold "
                f"{settings.dedup_hamming_threshold}, probe margin {settings.dedup_probe_margin}, verify "
                f"{settings.dedup_verify}, max residual {settings.dedup_max_residual}): {self.photos} photos, "
                f"{self.copies} copies, {self.flagged} flagged, {self.correct} correct -> precision "
                f"{self.precision:.4f}, recall {self.recall:.4f}; missed by transform {dict(self.missed)}; "
                f"{self.seconds:.1f}s")


def measure(market: Marketplace, data_dir: Path, **overrides) -> tuple[Quality, Settings]:
    """Run every photo of ``market`` through download and dedup; compare with the ground truth."""
    settings = configure(data_dir=data_dir, database_url="", **overrides)
    upgrade(settings)
    store = ImageStore(settings.data_dir / "images", fsync=False)
    fetcher = MarketplaceFetcher(market)
    queued: list[int] = []

    def dispatch(stage, ids):
        if getattr(stage, "value", stage) == "dedup":
            queued.extend(ids)

    q = Quality()
    started = time.perf_counter()
    path_of: dict[int, str] = {}
    for listing in market.listings():
        with session_scope(settings) as s:
            listing_id = s.execute(insert(Listing).values(source="sandbox", external_id=listing.item_id,
                                                          title=listing.title).returning(Listing.id)).scalar_one()
            ids = s.execute(insert(Image).returning(Image.id), [
                {"listing_id": listing_id, "position": k, "url": photo.path}
                for k, photo in enumerate(listing.photos)]).scalars().all() if listing.photos else []
        for image_id, photo in zip(ids, listing.photos):
            path_of[image_id] = photo.path
            assert download_image(settings, image_id, fetcher, store, dispatch).status == "done"
            while queued:
                dedup_image(settings, queued.pop(0), dispatch, store=store)
    q.seconds = time.perf_counter() - started

    def root(path: str) -> str:
        while (original := market.truth_for_photo(path).original) is not None:
            path = original
        return path

    with session_scope(settings) as s:
        rows = s.execute(select(Image.id, Image.duplicate_of_id, Image.duplicate_distance)).all()
    for image_id, original_id, distance in rows:
        path = path_of[image_id]
        truth = market.truth_for_photo(path)
        q.photos += 1
        is_copy = truth.original is not None
        q.copies += is_copy
        right = original_id is not None and root(path_of[original_id]) == root(path)
        if original_id is not None:
            q.flagged += 1
            q.correct += right
            if not right:
                q.wrong.append((path, path_of[original_id], distance))
        if is_copy and not right:
            q.missed[truth.transform] += 1
    return q, settings


class _Summary:
    """A plugin registered by the test: repeats the result in pytest's terminal summary."""

    def __init__(self, line: str):
        self.line = line

    def pytest_terminal_summary(self, terminalreporter) -> None:
        terminalreporter.write_sep("-", "dedup quality")
        terminalreporter.write_line(self.line)


def test_near_duplicate_precision_and_recall_at_the_default_settings(tmp_path, request):
    market = Marketplace(listings=LISTINGS, models=MODELS, seed=SEED, bad_input=False)
    quality, settings = measure(market, tmp_path / "data")
    report = quality.line(settings)
    print("\n" + report)
    if not request.config.pluginmanager.has_plugin("dedup-quality-summary"):
        request.config.pluginmanager.register(_Summary(report), "dedup-quality-summary")
    if quality.wrong:
        print("wrong matches (photo, matched original, distance):", quality.wrong)
    assert quality.copies >= 60, "too few duplicates in the sample to measure recall"
    assert quality.precision >= GOAL_PRECISION, report
    assert quality.recall >= GOAL_RECALL, report
