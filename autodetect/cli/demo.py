"""``autodetect demo``: the whole pipeline embedded in one process.

A SQLite file, Celery's in-memory broker with a real worker (a thread pool) consuming all five
queues, and the sandbox marketplace on a free loopback port. The stages run as they would on the
full stack; this module only starts things, waits on the database and reports."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import func, select

from autodetect.db import session_scope, upgrade
from autodetect.settings import configure, get_settings
from autodetect.storage import CrawlState, Image, Stage, State, TrainingRun


def _count(s, *where) -> int:
    return s.execute(select(func.count()).select_from(Image).where(*where)).scalar_one()


def _wait(console: Console, label: str, probe: Callable[[], tuple[int, int | None, bool]], timeout_s: float,
          tick: Callable[[], None] = lambda: None) -> None:
    """Poll ``probe() -> (done, total, finished)`` with a progress bar until finished, calling ``tick``
    at every poll (the demo's beat)."""
    deadline = time.monotonic() + timeout_s
    with Progress(TextColumn(f"{label:<10}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=False) as bar:
        task = bar.add_task(label, total=None)
        while True:
            done, total, finished = probe()
            bar.update(task, completed=done, total=total)
            if finished:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{label} did not finish within {timeout_s:.0f} s")
            tick()
            time.sleep(0.3)


def _crawled(settings) -> tuple[int, int | None, bool]:
    """Photos past download and dedup, of all found; finished once the crawl is done and none wait."""
    with session_scope(settings) as s:
        total = _count(s)
        waiting = _count(s, Image.stage.in_((Stage.download.value, Stage.dedup.value)),
                         Image.state != State.failed.value)
        crawl_done = s.execute(select(CrawlState.last_finished)).scalar_one_or_none() is not None
    return total - waiting, total or None, crawl_done and waiting == 0


def _trained(settings) -> tuple[int, int | None, bool]:
    """The latest training run: finished once done; raises when it failed."""
    with session_scope(settings) as s:
        run = s.execute(select(TrainingRun).order_by(TrainingRun.id.desc())).scalars().first()
    state = run.state if run else "pending"
    if state == "failed":
        raise RuntimeError(f"training failed: {run.error}")
    return (1 if state == "done" else 0), 1, state == "done"


def _tagged(settings) -> tuple[int, int | None, bool]:
    """Unique photos tagged, of all unique photos; finished once none wait for inference."""
    with session_scope(settings) as s:
        waiting = _count(s, Image.stage == Stage.inference.value,
                         Image.state.in_((State.pending.value, State.running.value)))
        unique = _count(s, Image.duplicate_of_id.is_(None), Image.stage.in_(
            (Stage.inference.value, Stage.done.value)), Image.state != State.failed.value)
    return unique - waiting, unique or None, waiting == 0


class _EpochWatch:
    """The training stage's display: a line per epoch of the in-process training worker (phase, epoch
    k of N, accuracies, time left), and a bar of epochs instead of one of runs."""

    def __init__(self, console: Console):
        self.console, self.row = console, None

    def __call__(self, row: dict) -> None:
        from autodetect.model.progress import describe_epoch

        self.row = row
        self.console.print("  " + describe_epoch(row), highlight=False, soft_wrap=True)

    def probe(self, settings) -> tuple[int, int | None, bool]:
        _, _, finished = _trained(settings)
        row = self.row
        if row is None:
            return 0, None, finished
        planned = int(row["planned_epochs"])
        return (planned if finished else int(row["epoch"])), planned, finished


def _demo_settings(base, sandbox_url: str, data_dir: Path, train_seconds: float):
    """Settings for the embedded stack: SQLite in ``data_dir``, in-memory broker, the sandbox, a small CNN."""
    host_port = sandbox_url.split("//", 1)[1]
    return configure(
        data_dir=data_dir, database_url="", broker_url="memory://localhost/", source="sandbox",
        marketplace_url=sandbox_url, download_allow_hosts=[host_port], backbone="compact_cnn",
        image_size=96, weights="none", train_time_budget_s=train_seconds, train_epochs_head=40,
        min_photos_per_class=min(base.min_photos_per_class, 30), inference_batch_wait_s=0.05,
        stale_after_s=30, sweeper_interval_s=2, retry_backoff_s=[2.0, 5.0, 15.0, 30.0],
    )


class _Beat:
    """The demo's beat: the sweeper every ``sweeper_interval_s`` (lost work and due retries)."""

    def __init__(self, app, settings):
        self.app, self.every, self.last = app, settings.sweeper_interval_s, time.monotonic()

    def __call__(self) -> None:
        if time.monotonic() - self.last >= self.every:
            self.app.send_task("maintenance.sweep")
            self.last = time.monotonic()


def _run_stages(console: Console, settings, train_seconds: float, timings: dict[str, float]) -> None:
    """Start a worker on every queue, then crawl, train and tag in turn, timing each stage."""
    from celery.contrib.testing.worker import start_worker

    from autodetect.model.progress import listening
    from workers.app import app
    from workers.queues import QUEUE_NAMES

    epochs = _EpochWatch(console)
    stages = [  # (task to send, progress label, probe, timeout, timings key)
        ("discovery.crawl", "crawl+photos", _crawled, 600, "crawl, download, dedup"),
        ("training.check", "training", epochs.probe, train_seconds * 3 + 300, "retrain trigger, train, evaluate, promote"),
        (None, "tagging", _tagged, 600, "tag the catalogue"),
    ]
    with listening(epochs), start_worker(app, pool="threads", concurrency=6, queues=list(QUEUE_NAMES),
                                         perform_ping_check=False, loglevel="WARNING", shutdown_timeout=30):
        beat = _Beat(app, settings)
        for task, label, probe, timeout_s, key in stages:
            t = time.perf_counter()
            if task is not None:
                app.send_task(task)
            _wait(console, label, partial(probe, settings), timeout_s=timeout_s, tick=beat)
            timings[key] = time.perf_counter() - t


def _report(console: Console, settings, timings: dict[str, float], report_dir: Path, market) -> dict:
    """Summarize the run (with the fair prices scored against the sandbox ``market``'s generating prices),
    show it and write the HTML report."""
    from autodetect.cli.price_summary import price_rows
    from autodetect.cli.report import build_summary, write_report

    def expected(external_id: str) -> float | None:
        offer = market.expected_price(external_id)
        return offer.expected if offer else None

    with session_scope(settings) as s:
        summary = build_summary(s, settings)
        summary["rows"] += price_rows(s, expected)
    summary["seconds"] = {k: round(v, 1) for k, v in timings.items()}
    show_summary(console, summary)
    path = write_report(summary, settings, report_dir)
    console.print(f"HTML report: {path}")
    return summary


def run_demo(console: Console, *, listings: int, models: int, seed: int, train_seconds: float,
             report_dir: Path, keep: bool, verbose: bool = False) -> dict:
    """The demo; TensorFlow's, absl's and the worker's log lines go to ``<data dir>/demo/demo.log``
    unless ``verbose``."""
    from autodetect.cli.logs import native_logs
    from autodetect.sandbox.marketplace import Marketplace
    from autodetect.sandbox.server import SandboxServer

    base = get_settings()
    data_dir = base.data_dir / "demo"
    if data_dir.exists() and not keep:
        shutil.rmtree(data_dir)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    market = Marketplace(listings=listings, models=models, seed=seed, price_quirks=True)  # auctions, placeholders...
    with native_logs(data_dir / "demo.log", verbose) as log_file, SandboxServer(market) as sandbox:
        settings = _demo_settings(base, sandbox.url, data_dir, train_seconds)
        upgrade(settings)
        console.print(f"[bold]AutoDetect demo[/]: {listings} listings of {models} models at {sandbox.url}, "
                      f"data in {data_dir}")
        _run_stages(console, settings, train_seconds, timings)
    timings["total"] = time.perf_counter() - started
    summary = _report(console, settings, timings, report_dir, market)
    if log_file is not None:
        console.print(f"TensorFlow and worker logs: {log_file} (--verbose shows them here)")
    return summary


def show_summary(console: Console, summary: dict) -> None:
    table = Table(title="AutoDetect demo", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    for key, value in summary["rows"]:
        table.add_row(key, value)
    console.print(table)
    seconds = Table(title="seconds per stage")
    seconds.add_column("stage")
    seconds.add_column("s", justify="right")
    for key, value in summary["seconds"].items():
        seconds.add_row(key, f"{value:.1f}")
    console.print(seconds)
