"""The ``autodetect`` command. The CLI is the outermost layer: it may start Celery (``workers``);
the domain modules below it never do."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from autodetect.settings import configure, get_settings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter, if it loads

app = typer.Typer(help="AutoDetect: identify a car's make and model, see the offers nearby.",
                  no_args_is_help=True, pretty_exceptions_show_locals=False)
console = Console()

sandbox_app = typer.Typer(help="The local marketplace that speaks eBay's Browse API.", no_args_is_help=True)
models_app = typer.Typer(help="The model registry.", no_args_is_help=True)
db_app = typer.Typer(help="The database schema.", no_args_is_help=True)
app.add_typer(sandbox_app, name="sandbox")
app.add_typer(models_app, name="models")
app.add_typer(db_app, name="db")


@app.callback()
def _main(data_dir: Annotated[Optional[Path], typer.Option(help="Data directory (AUTODETECT_DATA_DIR).")] = None,
          database_url: Annotated[Optional[str], typer.Option(help="AUTODETECT_DATABASE_URL")] = None) -> None:
    overrides = {k: v for k, v in {"data_dir": data_dir, "database_url": database_url}.items() if v is not None}
    if overrides:
        configure(**overrides)


def _fail(message: str) -> None:
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(2)


def _needs_schema(command: Callable[..., None]) -> Callable[..., None]:
    """A command that reads or writes the database: first a clear message (and exit status 2) when the
    database is missing, unreachable or behind the code's schema, instead of a traceback."""

    @functools.wraps(command)
    def checked(*args, **kwargs) -> None:
        from autodetect.db import schema_problem

        problem = schema_problem(get_settings())
        if problem:
            _fail(problem)
        command(*args, **kwargs)

    return checked


# --- database --------------------------------------------------------------------------------------
@db_app.command("upgrade")
def db_upgrade() -> None:
    """Run the Alembic migrations up to the newest schema."""
    from sqlalchemy.exc import OperationalError

    from autodetect.db import masked_url, upgrade

    try:
        upgrade(get_settings())
    except OperationalError:
        from autodetect.db import schema_problem

        _fail(schema_problem(get_settings()) or f"cannot upgrade {masked_url(get_settings().database_url)}")
    console.print(f"schema up to date: {masked_url(get_settings().database_url)}")


# --- the demo ---------------------------------------------------------------------------------------
@app.command()
def demo(
    listings: int = typer.Option(320, help="Listings in the sandbox marketplace."),
    models: int = typer.Option(8, help="Car models in the sandbox marketplace."),
    seed: int = typer.Option(7),
    train_seconds: float = typer.Option(120.0, help="Training time budget."),
    report_dir: Path = typer.Option(Path("autodetect-data/demo/report"), help="Where the HTML report goes."),
    keep: bool = typer.Option(False, help="Keep the previous demo's data instead of starting fresh."),
) -> None:
    """The main job, embedded: sandbox -> crawl -> download -> dedup -> retrain -> promote -> tag -> report."""
    from autodetect.cli.demo import run_demo

    run_demo(console, listings=listings, models=models, seed=seed, train_seconds=train_seconds,
             report_dir=report_dir, keep=keep)


# --- the sandbox ------------------------------------------------------------------------------------
@sandbox_app.command("serve")
def sandbox_serve(port: int = typer.Option(8765), host: str = typer.Option("127.0.0.1"),
                  listings: int = typer.Option(1000), models: int = typer.Option(10),
                  seed: int = typer.Option(0)) -> None:
    """Serve the sandbox marketplace until interrupted."""
    from autodetect.sandbox.server import serve

    console.print(f"sandbox marketplace: {listings} listings of {models} models on http://{host}:{port}")
    serve(host, port, listings, models, seed)


# --- pipeline commands ------------------------------------------------------------------------------
@app.command()
@_needs_schema
def crawl(max_listings: Optional[int] = typer.Option(None, help="Stop after this many listings."),
          wait: bool = typer.Option(False, help="Run here instead of queueing it for a discovery worker.")) -> None:
    """Crawl the configured source (AUTODETECT_SOURCE) once."""
    if wait:
        from autodetect.pipeline.discovery import crawl as crawl_source
        from autodetect.sources import open_source
        from workers.dispatch import dispatch

        stats = crawl_source(get_settings(), open_source(get_settings()), dispatch, max_listings=max_listings)
        console.print_json(json.dumps(stats.as_dict(), default=str))
    else:
        from workers.app import app as celery_app

        celery_app.send_task("discovery.crawl", kwargs={"max_listings": max_listings})
        console.print("crawl queued on 'discovery'")


@app.command()
@_needs_schema
def status(as_json: bool = typer.Option(False, "--json")) -> None:
    """Counts per stage and state, queue lengths, the active model and the retraining trigger's reason."""
    from autodetect.cli.views import queue_lengths, show_status
    from autodetect.db import session_scope
    from autodetect.pipeline.status import pipeline_status

    with session_scope() as s:
        data = pipeline_status(s)
    data["queues"] = queue_lengths()
    if as_json:
        console.print_json(json.dumps(data, default=str))
    else:
        show_status(console, data)


@app.command()
@_needs_schema
def tag(all_: bool = typer.Option(False, "--all", help="Every unique photo (and retry those that failed)."),
        missing: bool = typer.Option(False, "--missing", help="Photos without a prediction from the version."),
        model: Optional[str] = typer.Option(None, help="Version (default: the active one); alone: --missing."),
        wait: bool = typer.Option(True, help="Follow progress until done.")) -> None:
    """Tag the catalogue through the inference queue, with a progress bar fed from the database.

    Resumable: run it again after an interruption and it finishes the rest, predicting no photo twice.
    With the embedded default (no broker) the batches run in this process."""
    from autodetect.cli.views import follow_tagging
    from autodetect.pipeline.tagging import TaggingError, start_tagging, tag_here

    if all_ and missing or not (all_ or missing or model):
        _fail("say --all or --missing (or --model VERSION)")
    settings = get_settings()
    mode = "all" if all_ else "missing"
    try:
        if settings.is_embedded:
            plan = start_tagging(settings, mode, model)
        else:
            from workers.dispatch import dispatch
            from workers.inference import send_tagging

            plan = start_tagging(settings, mode, model, dispatch=dispatch, send=send_tagging)
    except TaggingError as exc:
        _fail(str(exc))
    where = "here" if settings.is_embedded else f"in {plan.messages} messages on 'inference'"
    console.print(f"{plan.queued} photos queued for {plan.version} ({mode}), {where}")
    if settings.is_embedded:
        steps = tag_here(settings, plan)
        try:
            follow_tagging(console, plan.version_id, work=lambda: next(steps, None) is not None)
        except TaggingError as exc:
            _fail(str(exc))
    elif wait:
        follow_tagging(console, plan.version_id)


@app.command()
@_needs_schema
def train(now: bool = typer.Option(False, "--now", help="Queue a training run now, whatever the trigger says."),
          images: Optional[Path] = typer.Option(None, help="Train on DIR/<class name>/<photo> instead of the catalogue."),
          wait: bool = typer.Option(False, help="Run here instead of on a training worker.")) -> None:
    """Train a candidate model; it is promoted only if it matches or beats the active one."""
    from autodetect.db import session_scope
    from autodetect.pipeline.retraining import check_retraining, request_run
    from autodetect.pipeline.training import run_training
    from workers.dispatch import dispatch

    if images is not None:
        from autodetect.cli.folder import train_from_folder

        train_from_folder(console, images)
        return
    if now:
        with session_scope() as s:
            run = request_run(s, "manual", "requested with `autodetect train --now`")
            run_id = run.id
    else:
        decision, run_id = check_retraining(get_settings(), dispatch if not wait else (lambda *_: None))
        console.print(f"retraining check: {'fire' if decision.fire else 'no'} — {decision.reason}")
        if run_id is None:
            return
    if wait:
        from autodetect.cli.views import epoch_printer

        outcome = run_training(get_settings(), run_id, dispatch, progress=epoch_printer(console))
        console.print_json(json.dumps({k: v for k, v in outcome.items() if k != "metrics"}, default=str))
    else:
        dispatch("train", [run_id])
        console.print(f"training run {run_id} queued on 'training'")


@app.command()
@_needs_schema
def identify(photos: list[Path], top: int = typer.Option(3)) -> None:
    """The most likely models for each photo, with the active model; no workers needed."""
    from autodetect.serving.identify import IdentifyError, identify_photos

    try:
        results = identify_photos(get_settings(), photos, top=top)
    except IdentifyError as exc:
        _fail(str(exc))
    for path, answer in results:
        table = Table(title=str(path), show_header=True)
        table.add_column("model")
        table.add_column("probability", justify="right")
        for name, p in answer:
            table.add_row(name, f"{p:.1%}")
        console.print(table)


@app.command()
@_needs_schema
def retry(stage: Optional[str] = typer.Option(None, help="Only photos failed in this stage (download, dedup, inference)."),
          reason: Optional[str] = typer.Option(None, help="Only photos whose reason contains this text.")) -> None:
    """Put failed photos back in their stage, attempts counted from zero."""
    from autodetect.db import session_scope
    from autodetect.pipeline.fates import retry_failed

    with session_scope() as s:
        again = retry_failed(s, get_settings(), stage=stage, reason=reason)
    if not get_settings().is_embedded:
        from workers.dispatch import dispatch

        for name, ids in again.items():
            dispatch(name, ids)
    total = sum(len(ids) for ids in again.values())
    console.print(f"{total} failed photos put back" + "".join(f", {len(v)} in {k}" for k, v in again.items()))


@app.command()
@_needs_schema
def catalogue() -> None:
    """Classes with their photo counts, and which reach the training minimum."""
    from autodetect.cli.views import show_catalogue

    show_catalogue(console)


@app.command()
def worker(queue: str, extra: Annotated[Optional[list[str]], typer.Argument()] = None) -> None:
    """Start a Celery worker for QUEUE with that queue's declared pool, concurrency and prefetch."""
    from workers.queues import queue_specs

    specs = queue_specs(get_settings())
    if queue not in specs:
        _fail(f"unknown queue {queue!r}; queues: {', '.join(specs)}")
    os.execvp(sys.executable, [sys.executable, "-m", "celery", *specs[queue].worker_args(), *(extra or [])])


# --- the registry -----------------------------------------------------------------------------------
@models_app.command("list")
@_needs_schema
def models_list() -> None:
    from autodetect.cli.views import show_models

    show_models(console)


@models_app.command("promote")
@_needs_schema
def models_promote(version: str) -> None:
    from autodetect.db import session_scope
    from autodetect.model.registry import RegistryError, find_version, promote

    with session_scope() as s:
        try:
            promote(s, find_version(s, version))
        except RegistryError as exc:
            _fail(str(exc))
    console.print(f"{version} is active")


@models_app.command("rollback")
@_needs_schema
def models_rollback() -> None:
    from autodetect.db import session_scope
    from autodetect.model.registry import RegistryError, rollback

    with session_scope() as s:
        try:
            version = rollback(s)
        except RegistryError as exc:
            _fail(str(exc))
        console.print(f"rolled back: {version.name} is active")


@models_app.command("export")
@_needs_schema
def models_export(version: str, format: str = typer.Option("coreml", help="coreml | tflite | onnx"),
                  out: Optional[Path] = typer.Option(None)) -> None:
    """Export a version for phones (Core ML) or servers (TFLite int8, ONNX)."""
    from autodetect.db import session_scope
    from autodetect.model.registry import RegistryError, find_version

    with session_scope() as s:
        try:
            v = find_version(s, version)
        except RegistryError as exc:
            _fail(str(exc))
        directory = get_settings().data_dir / v.artifacts["dir"]
        classes, backbone = list(v.classes), v.backbone
    from autodetect.model import export as ex

    keras_path = directory / "model.keras"
    if format == "coreml":
        target = out or directory / "AutoDetect.mlpackage"
        ex.export_coreml(keras_path, target, classes, backbone)
    elif format == "tflite":
        target = out or directory / "model.tflite"
        ex.export_tflite(keras_path, target)
    elif format == "onnx":
        target = out or directory / "model.onnx"
        ex.export_onnx(keras_path, target)
    else:
        _fail("format must be coreml, tflite or onnx")
    console.print(f"exported {version} as {format}: {target}")


@app.command()
@_needs_schema
def serve(host: str = typer.Option("127.0.0.1"), port: int = typer.Option(8000)) -> None:
    """The HTTP API and the web page."""
    import uvicorn

    uvicorn.run("autodetect.serving.app:app", host=host, port=port, log_level="info")


if __name__ == "__main__":  # pragma: no cover
    app()
