"""training queue: the retraining check and the training run (concurrency 1)."""

from autodetect.settings import get_settings
from autodetect.pipeline.training import check_retraining, run_training
from workers.app import app
from workers.dispatch import dispatch
from workers.queues import queue_specs

_LIMIT = queue_specs(get_settings())["training"].time_limit


@app.task(name="training.check")
def check() -> dict:
    decision, run_id = check_retraining(get_settings(), dispatch)
    return {"fire": decision.fire, "reason": decision.reason, "run": run_id}


@app.task(name="training.train", time_limit=_LIMIT, soft_time_limit=_LIMIT - 30)
def train(run_id: int) -> dict:
    outcome = run_training(get_settings(), run_id, dispatch)
    return {k: v for k, v in outcome.items() if k != "metrics"}
