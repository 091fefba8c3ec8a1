"""Shared fixtures: embedded settings on a fresh SQLite file, the sandbox marketplace on loopback,
and a dispatcher that runs the stages synchronously in-process."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from pathlib import Path

import pytest

from autodetect.settings import Settings, configure


@pytest.fixture(scope="module")
def template_db(tmp_path_factory) -> Path:
    """A migrated SQLite file, made once per module; tests copy it instead of migrating again."""
    from autodetect.db import upgrade

    path = tmp_path_factory.mktemp("schema") / "autodetect.db"
    upgrade(Settings(database_url=f"sqlite:///{path}"))
    return path


@pytest.fixture
def marketplace():
    from autodetect.sandbox.marketplace import Marketplace

    return Marketplace(listings=45, models=3, seed=11)


@pytest.fixture
def sandbox(marketplace) -> Iterator:
    from autodetect.sandbox.server import SandboxServer

    with SandboxServer(marketplace) as server:
        yield server


@pytest.fixture
def settings(tmp_path, sandbox) -> Settings:
    from autodetect.db import upgrade

    s = configure(
        data_dir=tmp_path / "data", database_url="", broker_url="memory://", source="sandbox",
        marketplace_url=sandbox.url, download_allow_hosts=[sandbox.url.split("//")[1]],
        backbone="compact_cnn", image_size=48, weights="none", min_photos_per_class=10,
        train_time_budget_s=6, train_epochs_head=10, inference_batch_size=16, inference_batch_wait_s=0.0,
        max_attempts=2, stale_after_s=0,
    )
    upgrade(s)
    return s


class SyncDispatch:
    """Collects dispatched work and runs it on demand, stage by stage, like the workers would."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.queue: deque[tuple[str, int]] = deque()
        self.sent: list[tuple[str, int]] = []

    def __call__(self, stage, ids) -> None:
        stage = getattr(stage, "value", stage)
        for i in ids:
            self.queue.append((stage, int(i)))
            self.sent.append((stage, int(i)))

    def drain(self, provider=None) -> None:
        from autodetect.pipeline.dedup import dedup_images
        from autodetect.pipeline.download import download_images
        from autodetect.images.fetch import Fetcher
        from autodetect.images.store import ImageStore
        from autodetect.pipeline.inference import predict_batch
        from autodetect.pipeline.training import run_training

        fetcher = Fetcher(self.settings)
        store = ImageStore(self.settings.data_dir / "images")
        while self.queue:
            stage, row = self.queue.popleft()
            if stage == "download":
                outcome = download_images(self.settings, [row], fetcher, store, self)
                if outcome.retry:
                    self.queue.append((stage, row))
            elif stage == "dedup":
                dedup_images(self.settings, [row], self)
            elif stage == "inference" and provider is not None:
                predict_batch(self.settings, provider)
            elif stage == "train":
                run_training(self.settings, row, self)


@pytest.fixture
def sync_dispatch(settings) -> SyncDispatch:
    return SyncDispatch(settings)


def pytest_collection_modifyitems(config, items) -> None:
    """Test files with long (``slow``) tests first, the rest after them in their usual order: with
    pytest-xdist's ``--dist loadfile`` the long files then start at once on every worker and the short
    ones fill in behind them, instead of one worker finishing a long file alone at the end."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)  # stable: order within each group kept
