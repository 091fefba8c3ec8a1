"""training queue: the retraining check and the training run (concurrency 1)."""

from autodetect.settings import get_settings
from autodetect.pipeline.retraining import check_retraining
from autodetect.pipeline.training import run_training
from workers.app import stage_task
from workers.dispatch import dispatch


@stage_task("training.check", "training", time_limit=get_settings().stage_time_limit("maintenance"))
def check() -> dict:
    decision, run_id = check_retraining(get_settings(), dispatch)
    return {"fire": decision.fire, "reason": decision.reason, "run": run_id}


@stage_task("training.train", "training")
def train(run_id: int) -> dict:
    outcome = run_training(get_settings(), run_id, dispatch)
    return {k: v for k, v in outcome.items() if k != "metrics"}
