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
    train_limit = min(settings.training_time_limit_s, settings.visibility_timeout - 60)
    specs = [
        QueueSpec("discovery", "threads", 2, 1, settings.visibility_timeout - 60, "crawls, the sweeper"),
        # A message is a batch of photos, each bounded by the total download timeout.
        QueueSpec("download", "threads", 32, 1,
                  min(settings.visibility_timeout - 60,
                      int(settings.download_batch_size * settings.download_total_timeout_s) + 60),
                  "I/O-bound photo downloads, many in flight"),
        QueueSpec("dedup", "prefork", 2, 2, 30 + 5 * settings.dedup_batch_size,
                  "hashing decisions, milliseconds each, a batch per message"),
        QueueSpec("inference", "prefork", 2, 1, 300, "micro-batches through the serving model"),
        QueueSpec("training", "prefork", 1, 1, train_limit, "one training run at a time; retraining checks"),
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
