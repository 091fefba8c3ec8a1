"""The sweeper: re-dispatch rows stuck in a stage (a lost message loses no work)."""

from autodetect.settings import get_settings
from autodetect.pipeline.sweeper import sweep as sweep_stale
from workers.app import stage_task
from workers.dispatch import dispatch


@stage_task("maintenance.sweep", "discovery", time_limit=get_settings().stage_time_limit("maintenance"))
def sweep() -> dict:
    return sweep_stale(get_settings(), dispatch)
