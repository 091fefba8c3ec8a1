"""dedup queue: exact and near-duplicate decisions."""

from autodetect.dedup import dedup_image
from autodetect.settings import get_settings
from workers.app import app
from workers.dispatch import dispatch
from workers.queues import queue_specs


@app.task(name="dedup.check", time_limit=queue_specs(get_settings())["dedup"].time_limit)
def check(image_id: int) -> str:
    return dedup_image(get_settings(), image_id, dispatch).status
