"""The sweeper: re-dispatch rows stuck in a stage (a lost message loses no work)."""

from autodetect.settings import get_settings
from autodetect.pipeline.sweeper import sweep as sweep_stale
from workers.app import app
from workers.dispatch import dispatch


@app.task(name="maintenance.sweep")
def sweep() -> dict:
    return sweep_stale(get_settings(), dispatch)
