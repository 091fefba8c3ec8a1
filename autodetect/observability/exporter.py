"""The pipeline exporter (``autodetect metrics serve``): a Prometheus collector that reads PostgreSQL on
every scrape, so its numbers are the database's, right however many workers run and whatever restarted.

Every scrape has a deadline (``metrics_scrape_timeout_s``): the reads run in a helper thread and the
scrape waits for them that long at most. A database that is down or slow answers at once with
``autodetect_exporter_up 0`` (HTTP 200, the other pipeline metrics absent), never hangs past
Prometheus' scrape timeout; a scrape that finds the previous one still waiting does not pile on.
Broker queue lengths are optional (``queue_lengths``, injected by the CLI, which may import Celery)
and have their own ``autodetect_exporter_broker_up``.

Metrics (all gauges unless said otherwise):

- ``autodetect_photos{stage,state}``                     photo rows per stage and state (every pair, zeros too)
- ``autodetect_photos_oldest_pending_age_seconds{stage}``  age of the oldest pending photo of a stage (0: none)
- ``autodetect_photos_retrying{stage}``                  pending photos that already failed at least once
- ``autodetect_photo_failures{stage,reason}``            failed photos by reason class (``snapshot.reason_class``)
- ``autodetect_listings{status}``                        listings by status
- ``autodetect_training_runs{state}``                    training runs by state
- ``autodetect_model_active_info{version,backbone}``     the active model version (value 1)
- ``autodetect_model_metric{version,status,metric}``     held-out test metrics of the newest versions
- ``autodetect_crawls_total{source}`` (counter), ``autodetect_crawl_last_finished_timestamp_seconds{source}``
- ``autodetect_queue_messages{queue}``                   messages waiting in the broker (when injected)
- ``autodetect_exporter_up``, ``autodetect_exporter_broker_up``, ``autodetect_exporter_scrape_duration_seconds``,
  ``autodetect_exporter_errors_total{kind}`` (counter)
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

from prometheus_client.core import CollectorRegistry, CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from autodetect.db import masked_url
from autodetect.observability.snapshot import STAGES, STATES, Snapshot, scrape_engine, take_snapshot
from autodetect.settings import Settings

log = logging.getLogger(__name__)

QueueLengths = Callable[[], Mapping[str, int]]


class _Deadline:
    """Runs one kind of read in a helper thread; a call waits ``timeout_s`` at most, and is refused at
    once while the previous read of this kind is still stuck."""

    def __init__(self, name: str, timeout_s: float):
        self.name, self.timeout_s = name, timeout_s
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"exporter-{name}")
        self._pending: Future | None = None
        self._lock = threading.Lock()

    def run(self, fn: Callable[[], object]) -> object:
        with self._lock:
            if self._pending is not None and not self._pending.done():
                raise TimeoutError(f"the previous {self.name} read is still waiting")
            self._pending = future = self._pool.submit(fn)
        try:
            return future.result(timeout=self.timeout_s)
        except FutureTimeout:
            raise TimeoutError(f"{self.name} did not answer within {self.timeout_s:g} s") from None


class PipelineCollector(Collector):
    """Reads the database (and, if given, the broker's queue lengths) on every ``collect``."""

    def __init__(self, settings: Settings, queue_lengths: QueueLengths | None = None):
        self.settings = settings
        self.queue_lengths = queue_lengths
        timeout = settings.metrics_scrape_timeout_s
        self._db = _Deadline("database", timeout)
        self._broker = _Deadline("broker", timeout)
        self._errors = {"database": 0, "broker": 0}

    def describe(self) -> Iterator[Metric]:
        return iter(())  # unchecked collector: registering it does not query the database

    def collect(self) -> Iterator[Metric]:
        started = time.monotonic()
        snap = self._read_database()
        yield _gauge("autodetect_exporter_up", "1 if this scrape read the database, else 0", value=snap is not None)
        if snap is not None:
            yield from _pipeline_metrics(snap)
        if self.queue_lengths is not None:
            lengths = self._read_broker()
            yield _gauge("autodetect_exporter_broker_up", "1 if this scrape read the broker's queues, else 0",
                         value=lengths is not None)
            if lengths is not None:
                yield _family("autodetect_queue_messages", "Messages waiting in each broker queue", ["queue"],
                              {(q,): n for q, n in lengths.items()})
        errors = CounterMetricFamily("autodetect_exporter_errors", "Scrapes that could not read a source",
                                     labels=["kind"])
        for kind, n in self._errors.items():
            errors.add_metric([kind], n)
        yield errors
        yield _gauge("autodetect_exporter_scrape_duration_seconds", "Time this scrape took",
                     value=time.monotonic() - started)

    def _read_database(self) -> Snapshot | None:
        engine = scrape_engine(self.settings.database_url, self.settings.metrics_scrape_timeout_s)
        try:
            return self._db.run(lambda: take_snapshot(engine))  # type: ignore[return-value]
        except Exception as exc:  # noqa: BLE001 - down, slow, not migrated: the scrape still answers
            self._errors["database"] += 1
            log.warning("exporter: cannot read %s: %s", masked_url(self.settings.database_url),
                        _short(exc))
            return None

    def _read_broker(self) -> Mapping[str, int] | None:
        try:
            return self._broker.run(lambda: dict(self.queue_lengths()))  # type: ignore[misc,return-value]
        except Exception as exc:  # noqa: BLE001
            self._errors["broker"] += 1
            log.warning("exporter: cannot read the broker's queue lengths: %s", _short(exc))
            return None


def _pipeline_metrics(snap: Snapshot) -> Iterator[Metric]:
    yield _family("autodetect_photos", "Photo rows per stage and state", ["stage", "state"],
                  {(st, s): snap.photos.get((st, s), 0) for st in STAGES for s in STATES})
    yield _family("autodetect_photos_oldest_pending_age_seconds",
                  "Age of the oldest pending photo of each stage (0 when none is pending)", ["stage"],
                  {(st,): snap.oldest_pending_s.get(st, 0.0) for st in STAGES if st != "done"})
    yield _family("autodetect_photos_retrying", "Pending photos that failed at least once in their stage",
                  ["stage"], {(st,): snap.retrying.get(st, 0) for st in STAGES if st != "done"})
    yield _family("autodetect_photo_failures", "Failed photos by stage and reason class", ["stage", "reason"],
                  snap.failures)
    yield _family("autodetect_listings", "Listings by status", ["status"],
                  {(s,): n for s, n in {"active": 0, "ended": 0, **snap.listings}.items()})
    yield _family("autodetect_training_runs", "Training runs by state", ["state"],
                  {(s,): n for s, n in {"pending": 0, "running": 0, "done": 0, "failed": 0, **snap.training_runs}.items()})
    active = [v for v in snap.versions if v["status"] == "active"]
    yield _family("autodetect_model_active_info", "The active model version (value 1)", ["version", "backbone"],
                  {(v["name"], v["backbone"]): 1 for v in active})
    yield _family("autodetect_model_metric", "Held-out test metrics of the newest model versions",
                  ["version", "status", "metric"],
                  {(v["name"], v["status"], k): x for v in snap.versions for k, x in v["metrics"].items()})
    crawls = CounterMetricFamily("autodetect_crawls", "Crawls started per source", labels=["source"])
    for c in snap.crawls:
        crawls.add_metric([c["source"]], c["crawls"])
    yield crawls
    yield _family("autodetect_crawl_last_finished_timestamp_seconds", "When the last crawl of a source finished",
                  ["source"], {(c["source"],): c["last_finished"] for c in snap.crawls if c["last_finished"]})


def _family(name: str, doc: str, labels: list[str], values: Mapping[tuple, float]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=labels)
    for key, value in sorted(values.items(), key=lambda kv: tuple(str(k) for k in kv[0])):
        family.add_metric([str(k) for k in key], float(value))
    return family


def _gauge(name: str, doc: str, *, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=float(value))


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text[:200]}"


def exporter_registry(settings: Settings, queue_lengths: QueueLengths | None = None) -> CollectorRegistry:
    """A registry holding only the pipeline collector (no process metrics of the exporter itself)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PipelineCollector(settings, queue_lengths))
    return registry


def serve_exporter(settings: Settings, queue_lengths: QueueLengths | None = None, *,
                   host: str | None = None, port: int | None = None):
    """Start the exporter's HTTP server (``/metrics``) in a daemon thread; returns ``(server, thread)``."""
    from prometheus_client import start_http_server

    registry = exporter_registry(settings, queue_lengths)
    return start_http_server(port or settings.metrics_port, addr=host or settings.metrics_host, registry=registry)
