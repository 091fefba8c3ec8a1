"""The Celery app: JSON only, late acks, redelivery on worker loss, routes from ``workers.queues``."""

from __future__ import annotations

import logging
import os

from celery import Celery, signals
from sqlalchemy.exc import InterfaceError as SQLAlchemyInterfaceError
from sqlalchemy.exc import OperationalError as SQLAlchemyOperationalError

from autodetect.observability import logs
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

#: A database that does not answer (a restart, a failover): the task is tried again with growing
#: waits (``dependency_retries`` times, up to ``dependency_backoff_max_s`` apart). Rows it had claimed
#: meanwhile come back through the sweeper when their lease ends. Broker errors are not retried here
#: (a retry is itself a message): ``workers.dispatch`` leaves unsent work to the sweeper.
DEPENDENCY_ERRORS = (SQLAlchemyOperationalError, SQLAlchemyInterfaceError)


def stage_task(name: str, queue: str, *, time_limit: int | None = None, retry_on: tuple = (), **options):
    """``app.task`` for a task of ``queue``: its time limit (the queue's, or ``time_limit``), a soft
    limit shortly before it, and retries over dependency outages (and ``retry_on``)."""
    settings = get_settings()
    limit = time_limit or queue_specs(settings)[queue].time_limit
    return app.task(name=name, time_limit=limit, soft_time_limit=max(1, limit - min(30, limit // 10)),
                    autoretry_for=DEPENDENCY_ERRORS + tuple(retry_on), retry_backoff=True,
                    retry_backoff_max=settings.dependency_backoff_max_s, retry_jitter=True,
                    max_retries=settings.dependency_retries, **options)


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


# --- logs: AUTODETECT_LOG_FORMAT=json makes every worker and beat write JSON lines ---------------------
@signals.after_setup_logger.connect
@signals.after_setup_task_logger.connect
def _json_logs(logger=None, **_):
    if get_settings().log_format == "json" and logger is not None:
        logs.use_json(logger.handlers)


_task_log = logging.getLogger("autodetect.tasks")


@signals.task_prerun.connect
def _bind_task(task_id=None, task=None, args=None, kwargs=None, **_):
    """Every line logged while the task runs carries its name, id, stage and row ids."""
    logs.bind(task_id=task_id, **logs.task_fields(getattr(task, "name", "?"), args, kwargs))
    _task_log.info("task started")


@signals.task_postrun.connect
def _unbind_task(state=None, **_):
    _task_log.info("task finished: %s", state)
    logs.clear()
