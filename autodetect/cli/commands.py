"""The bodies of the pipeline commands (``crawl``, ``tag``, ``train``, ``identify``); ``autodetect.cli``
declares their options. Each shows a table by default and prints one JSON document with ``as_json``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from autodetect.cli.output import console, fail, print_json, progress_console, usage
from autodetect.cli.views import show_mapping
from autodetect.settings import get_settings


def _send(task: str, **kwargs: Any) -> None:
    """Send ``task`` to the broker; a broker that does not answer is one line and exit status 1."""
    from autodetect.checks import short_error
    from workers.app import app as celery_app

    try:
        celery_app.send_task(task, kwargs=kwargs, retry_policy={"max_retries": 2, "interval_start": 0.5})
    except Exception as exc:  # noqa: BLE001 - kombu's, redis' or amqp's error: one line, no traceback
        fail(f"cannot send {task} to the broker: {short_error(exc)}")


def crawl(max_listings: int | None, wait: bool, as_json: bool) -> None:
    if wait:
        from autodetect.pipeline.discovery import crawl as crawl_source
        from autodetect.sources import open_source
        from workers.dispatch import dispatch

        data = crawl_source(get_settings(), open_source(get_settings()), dispatch, max_listings=max_listings).as_dict()
    else:
        _send("discovery.crawl", max_listings=max_listings)
        data = {"queued": "discovery.crawl", "queue": "discovery", "max_listings": max_listings}
    if as_json:
        print_json(data)
    elif wait:
        show_mapping(console, "crawl", data)
    else:
        console.print("crawl queued on 'discovery'")


def tag(all_: bool, missing: bool, model: str | None, wait: bool, as_json: bool) -> None:
    from autodetect.cli.views import follow_tagging
    from autodetect.pipeline.tagging import TaggingError, start_tagging, tag_here

    if all_ and missing or not (all_ or missing or model):
        usage("say --all or --missing (or --model VERSION)")
    settings = get_settings()
    mode = "all" if all_ else "missing"
    try:
        if settings.is_embedded:
            plan = start_tagging(settings, mode, model)
        else:
            from workers.dispatch import dispatch
            from workers.inference import send_tagging

            plan = start_tagging(settings, mode, model, dispatch=dispatch, send=send_tagging)
    except TaggingError as exc:  # a version named that does not exist: usage; no active model: failure
        fail(str(exc), 2 if model else 1)
    where = "here" if settings.is_embedded else f"in {plan.messages} messages on 'inference'"
    shown = progress_console(as_json)
    shown.print(f"{plan.queued} photos queued for {plan.version} ({mode}), {where}")
    done = total = None
    try:
        if settings.is_embedded:
            steps = tag_here(settings, plan)
            done, total = follow_tagging(shown, plan.version_id, work=lambda: next(steps, None) is not None)
        elif wait:
            done, total = follow_tagging(shown, plan.version_id)
    except TaggingError as exc:
        fail(str(exc))
    if as_json:
        print_json({"version": plan.version, "mode": mode, "queued": plan.queued, "messages": plan.messages,
                    "ran": "here" if settings.is_embedded else "workers", "tagged": done, "unique_photos": total})


def train(now: bool, wait: bool, as_json: bool, verbose: bool) -> None:
    from autodetect.db import session_scope
    from autodetect.pipeline.retraining import check_retraining, request_run
    from workers.dispatch import dispatch

    shown = progress_console(as_json)
    data: dict[str, Any] = {}
    if now:
        with session_scope() as s:
            run_id = request_run(s, "manual", "requested with `autodetect train --now`").id
    else:
        decision, run_id = check_retraining(get_settings(), dispatch if not wait else (lambda *_: None))
        data["check"] = {"fire": decision.fire, "reason": decision.reason}
        shown.print(f"retraining check: {'fire' if decision.fire else 'no'} — {decision.reason}")
    data["run"] = run_id
    if run_id is not None and wait:
        data["outcome"] = _train_here(run_id, shown, verbose)
    elif run_id is not None:
        dispatch("train", [run_id])
        data["queued"] = "training"
        shown.print(f"training run {run_id} queued on 'training'")
    if as_json:
        print_json(data)
    elif "outcome" in data:
        show_mapping(console, f"training run {run_id}", data["outcome"])


def _train_here(run_id: int, shown, verbose: bool) -> dict[str, Any]:
    """Run training run ``run_id`` in this process, a line per epoch; TensorFlow's logs to a file."""
    from autodetect.cli.logs import native_logs
    from autodetect.cli.views import epoch_printer
    from autodetect.checks import short_error
    from autodetect.pipeline.training import run_training
    from workers.dispatch import dispatch

    settings = get_settings()
    log_file = settings.data_dir / "logs" / "train.log"
    try:
        with native_logs(log_file, verbose):
            outcome = run_training(settings, run_id, dispatch, progress=epoch_printer(shown))
    except Exception as exc:  # noqa: BLE001 - the run is failed with its reason in the database
        fail(f"training run {run_id} failed: {short_error(exc)} (see `autodetect status`, {log_file})")
    return {k: v for k, v in outcome.items() if k != "metrics"}


def identify(photos: list[Path], top: int, as_json: bool) -> None:
    from rich.table import Table

    from autodetect.serving.identify import IdentifyError, identify_photos

    try:
        results = identify_photos(get_settings(), photos, top=top)
    except IdentifyError as exc:
        fail(str(exc))
    if as_json:
        print_json([{"photo": str(path), "verdict": answer.verdict, "message": answer.message,
                     "ood_score": round(answer.ood_score, 6), "confidence": round(answer.confidence, 6),
                     "candidates": [{"model": name, "probability": round(float(p), 6)} for name, p in answer.ranking]}
                    for path, answer in results])
        return
    for path, answer in results:
        if answer.verdict != "car":  # no ranking for a photo that shows no car we know (--json has it)
            console.print(f"{path}: {answer.message}", highlight=False)
            continue
        table = Table(title=str(path), show_header=True)
        table.add_column("model")
        table.add_column("probability", justify="right")
        for name, p in answer.ranking:
            table.add_row(name, f"{p:.1%}")
        console.print(table)


def metrics_serve(host: str | None, port: int | None, queues: bool) -> None:
    """Serve the pipeline exporter until interrupted. It starts even while the database is down (its
    scrapes then say ``autodetect_exporter_up 0``), so it never needs the schema up front."""
    import time

    from autodetect.db import masked_url
    from autodetect.observability.exporter import serve_exporter
    from autodetect.observability.logs import configure_logging

    settings = get_settings()
    configure_logging(settings)
    queue_lengths = None
    if queues and not settings.is_embedded:
        from functools import partial

        from workers.app import app as celery_app
        from workers.queues import queue_lengths as read_lengths

        queue_lengths = partial(read_lengths, celery_app)
    host, port = host or settings.metrics_host, port or settings.metrics_port
    try:
        server, _thread = serve_exporter(settings, queue_lengths, host=host, port=port)
    except OSError as exc:
        fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
    console.print(f"exporter on http://{host}:{port}/metrics reading {masked_url(settings.database_url)}")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.shutdown()
