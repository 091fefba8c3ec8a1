"""The one place that declares queues, routes, per-queue worker options and the beat schedule."""

from __future__ import annotations

from dataclasses import dataclass

from kombu import Queue

from autodetect.settings import Settings


@dataclass(frozen=True)
class QueueSpec:
    name: str
    pool: str  # the pool that fits the work: threads for I/O, prefork for CPU
    concurrency: int
    prefetch: int  # prefetch multiplier: 1 where tasks are long
    time_limit: int  # hard limit per task, seconds; always below the broker's visibility timeout
    what: str

    def worker_args(self) -> list[str]:
        """The ``celery worker`` arguments that run this queue as declared."""
        return ["-A", "workers", "worker", "-Q", self.name, "-P", self.pool, "-c", str(self.concurrency),
                "--prefetch-multiplier", str(self.prefetch), "-n", f"{self.name}@%h"]


def queue_specs(settings: Settings) -> dict[str, QueueSpec]:
    """Each queue's worker options. The time limits (``Settings.stage_time_limit``) are also the
    leases of the rows a task claims. The ``threads`` pools do not enforce them: there every blocking
    call has its own deadline (the fetcher's connect/read/total deadlines, DNS included; PostgreSQL's
    statement and lock timeouts)."""
    limit = settings.stage_time_limit
    specs = [
        QueueSpec("discovery", "threads", 2, 1, limit("discovery"), "crawls, the sweeper"),
        QueueSpec("download", "threads", 32, 1, limit("download"), "I/O-bound photo downloads, many in flight"),
        QueueSpec("dedup", "prefork", 2, 2, limit("dedup"), "hashing decisions, milliseconds each, a batch per message"),
        QueueSpec("inference", "prefork", 2, 1, limit("inference"), "micro-batches through the serving model"),
        QueueSpec("training", "prefork", 1, 1, limit("training"), "one training run at a time; retraining checks"),
    ]
    return {s.name: s for s in specs}


QUEUE_NAMES = ("discovery", "download", "dedup", "inference", "training")

#: Task name prefix -> queue (Celery's glob routing).
ROUTES = {
    "discovery.*": {"queue": "discovery"},
    "maintenance.*": {"queue": "discovery"},
    "download.*": {"queue": "download"},
    "dedup.*": {"queue": "dedup"},
    "inference.*": {"queue": "inference"},
    "training.*": {"queue": "training"},
}


def task_queues() -> list[Queue]:
    return [Queue(name, routing_key=name) for name in QUEUE_NAMES]


def beat_schedule(settings: Settings) -> dict[str, dict]:
    return {
        "crawl": {"task": "discovery.crawl", "schedule": float(settings.crawl_interval_s)},
        "retraining-check": {"task": "training.check", "schedule": float(settings.retrain_check_interval_s)},
        "sweep": {"task": "maintenance.sweep", "schedule": float(settings.sweeper_interval_s)},
    }


def queue_lengths(app) -> dict[str, int]:
    """Messages waiting in each queue, read from the broker (a queue never declared counts 0)."""
    from amqp.exceptions import ChannelError

    lengths: dict[str, int] = {}
    with app.connection_for_write() as conn:
        for name in QUEUE_NAMES:
            try:
                lengths[name] = conn.default_channel.queue_declare(name, passive=True).message_count
            except ChannelError:  # Redis answers NOT_FOUND for an empty (absent) list
                lengths[name] = 0
                conn.close()
                conn.connect()
    return lengths
