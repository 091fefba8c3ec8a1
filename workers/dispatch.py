"""The Celery implementation of ``autodetect.pipeline.Dispatch``: ids in, messages out. Downloads and
dedup go ``download_batch_size`` / ``dedup_batch_size`` ids per message; inference one message per
micro-batch (its task claims a whole batch itself); training one message per run."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from kombu.exceptions import OperationalError as KombuOperationalError

from autodetect.settings import get_settings
from autodetect.storage import Stage
from workers.app import app

log = logging.getLogger(__name__)
#: A publish waits for the broker a few seconds at most (kombu's retry policy), never a task's whole limit.
_BROKER_RETRY = {"max_retries": 3, "interval_start": 0.5, "interval_step": 1.0, "interval_max": 2.0}

STAGE_TASKS = {
    Stage.download.value: "download.fetch",
    Stage.dedup.value: "dedup.check",
    Stage.inference.value: "inference.predict",
    "train": "training.train",
}


def dispatch(stage: Stage | str, ids: Sequence[int]) -> None:
    stage = stage.value if isinstance(stage, Stage) else stage
    name = STAGE_TASKS[stage]
    ids = [int(i) for i in ids]
    settings = get_settings()
    per_message = {Stage.download.value: settings.download_batch_size, Stage.dedup.value: settings.dedup_batch_size}
    if stage in per_message:
        size = per_message[stage]
        args = [(ids[k:k + size],) for k in range(0, len(ids), size)]
    elif stage == Stage.inference.value:
        args = [(i,) for i in ids[:: max(1, settings.inference_batch_size)]]
    else:
        args = [(i,) for i in ids]
    try:
        with app.producer_or_acquire() as producer:
            for a in args:
                app.send_task(name, args=a, producer=producer, retry_policy=_BROKER_RETRY)
    except (KombuOperationalError, OSError) as exc:
        # The broker is down: the rows are committed and pending, due for the sweeper in
        # ``stale_after_s``; it sends them once the broker is back. Nothing is lost by not waiting.
        log.warning("broker unreachable, %d %s message(s) left to the sweeper: %s", len(args), stage, exc)
