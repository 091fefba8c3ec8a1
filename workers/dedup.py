"""dedup queue: exact and near-duplicate decisions, one batch of photos per message."""

from autodetect.pipeline.dedup import dedup_images
from autodetect.settings import get_settings
from workers.app import stage_task
from workers.dispatch import dispatch


@stage_task("dedup.check", "dedup")
def check(image_ids: list[int]) -> dict[str, int]:
    outcomes = dedup_images(get_settings(), image_ids, dispatch)
    return {status: sum(o.status == status for o in outcomes) for status in ("unique", "duplicate", "skipped", "failed")}
