"""The Celery implementation of ``autodetect.pipeline.Dispatch``: ids in, one message per row
(one per micro-batch for inference, whose task claims a whole batch)."""

from __future__ import annotations

from collections.abc import Sequence

from autodetect.settings import get_settings
from autodetect.storage import Stage
from workers.app import app

STAGE_TASKS = {
    Stage.download.value: "download.fetch",
    Stage.dedup.value: "dedup.check",
    Stage.inference.value: "inference.predict",
    "train": "training.train",
}


def dispatch(stage: Stage | str, ids: Sequence[int]) -> None:
    stage = stage.value if isinstance(stage, Stage) else stage
    name = STAGE_TASKS[stage]
    if stage == Stage.inference.value:
        ids = list(ids)[:: max(1, get_settings().inference_batch_size)]
    with app.producer_or_acquire() as producer:
        for row_id in ids:
            app.send_task(name, args=(int(row_id),), producer=producer)
