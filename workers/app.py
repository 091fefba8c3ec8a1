"""The Celery app: JSON only, late acks, redelivery on worker loss, routes from ``workers.queues``."""

from __future__ import annotations

import os

from celery import Celery, signals

from autodetect.settings import get_settings
from workers.queues import ROUTES, beat_schedule, queue_specs, task_queues


os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # the training worker's TensorFlow start-up chatter


def make_app() -> Celery:
    settings = get_settings()
    app = Celery("autodetect", broker=settings.broker_url, include=[
        "workers.discovery", "workers.download", "workers.dedup", "workers.inference", "workers.training",
        "workers.maintenance",
    ])
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,
        result_backend=None,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_queues=task_queues(),
        task_default_queue="discovery",
        task_routes=ROUTES,
        task_create_missing_queues=False,
        broker_transport_options={
            "visibility_timeout": settings.visibility_timeout,
            # The embedded in-memory broker is polled; the default 1 s poll would cap the demo's
            # throughput at a few tasks per second.
            **({"polling_interval": 0.01} if settings.is_embedded else {}),
        },
        broker_connection_retry_on_startup=True,
        worker_prefetch_multiplier=1,
        worker_send_task_events=True,  # Flower
        task_send_sent_event=True,
        beat_schedule=beat_schedule(settings),
        timezone="UTC",
    )
    return app


app = make_app()


@signals.celeryd_init.connect
def _per_queue_defaults(sender=None, conf=None, options=None, **_):
    """A worker started for one queue takes that queue's declared prefetch and concurrency,
    unless given on the command line."""
    queues = (options or {}).get("queues") or []
    if isinstance(queues, str):
        queues = queues.split(",")
    if len(queues) == 1 and queues[0] in queue_specs(get_settings()):
        spec = queue_specs(get_settings())[queues[0]]
        conf.worker_prefetch_multiplier = spec.prefetch
        if not options.get("concurrency"):
            conf.worker_concurrency = spec.concurrency
