"""The ``autodetect`` command. The CLI is the outermost layer: it may start Celery (``workers``);
the domain modules below it never do."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Optional

import typer

from autodetect.cli import commands
from autodetect.cli.output import EXIT_STATUSES, console, fail, print_json, usage
from autodetect.settings import configure, get_settings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter, if it loads

app = typer.Typer(help="AutoDetect: identify a car's make and model, see the offers nearby.\n\n" + EXIT_STATUSES,
                  no_args_is_help=True, pretty_exceptions_show_locals=False)

sandbox_app = typer.Typer(help="The local marketplace that speaks eBay's Browse API.", no_args_is_help=True)
models_app = typer.Typer(help="The model registry.", no_args_is_help=True)
db_app = typer.Typer(help="The database schema.", no_args_is_help=True)
metrics_app = typer.Typer(help="Prometheus metrics of the pipeline.", no_args_is_help=True)
app.add_typer(sandbox_app, name="sandbox")
app.add_typer(models_app, name="models")
app.add_typer(db_app, name="db")
app.add_typer(metrics_app, name="metrics")

JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document (see the README) instead of tables.")]


@app.callback(epilog=EXIT_STATUSES)
def _main(data_dir: Annotated[Optional[Path], typer.Option(help="Data directory (AUTODETECT_DATA_DIR).")] = None,
          database_url: Annotated[Optional[str], typer.Option(help="AUTODETECT_DATABASE_URL")] = None) -> None:
    from pydantic import ValidationError

    from autodetect.cli.output import configuration_problem

    overrides = {k: v for k, v in {"data_dir": data_dir, "database_url": database_url}.items() if v is not None}
    try:
        if overrides:
            configure(**overrides)
    except ValidationError:
        pass  # configuration_problem reads the environment again and names the setting
    problem = configuration_problem()
    if problem:
        usage(problem)


def _needs_schema(command: Callable[..., None]) -> Callable[..., None]:
    """A command that reads or writes the database. On the embedded SQLite database the schema is
    created or upgraded first (under a file lock); on PostgreSQL a database that is missing,
    unreachable or behind the code's schema is one line (and exit status 1) instead of a traceback."""

    @functools.wraps(command)
    def checked(*args, **kwargs) -> None:
        _prepare_schema()
        command(*args, **kwargs)

    return checked


def _prepare_schema() -> None:
    from filelock import Timeout

    from autodetect.checks import short_error
    from autodetect.db import prepare_schema, schema_problem

    settings = get_settings()
    try:
        prepare_schema(settings)
    except Timeout:
        fail(f"another autodetect process held the schema lock beside {settings.database_url} for "
             f"{settings.schema_lock_timeout_s:.0f} s")
    except Exception as exc:  # noqa: BLE001 - e.g. a read-only folder, a newer schema than this code's
        fail(schema_problem(settings) or f"cannot create the schema: {short_error(exc)}")
    problem = schema_problem(settings)
    if problem:
        fail(problem)


# --- database --------------------------------------------------------------------------------------
@db_app.command("upgrade")
def db_upgrade() -> None:
    """Run the Alembic migrations up to the newest schema (the embedded SQLite database does it itself)."""
    from sqlalchemy.exc import OperationalError

    from autodetect.db import masked_url, schema_problem, upgrade

    try:
        upgrade(get_settings())
    except OperationalError:
        fail(schema_problem(get_settings()) or f"cannot upgrade {masked_url(get_settings().database_url)}")
    console.print(f"schema up to date: {masked_url(get_settings().database_url)}")


# --- health -----------------------------------------------------------------------------------------
@app.command()
def doctor(as_json: JsonOption = False) -> None:
    """Is everything up? Database and schema, broker, workers per queue, beat, model, data dir, disk,
    source, Flower: ok / warn / fail, what was found and the fix. Exit status 1 when a check fails."""
    from autodetect.cli import checkup as doc

    settings = get_settings()
    try:
        from autodetect.db import prepare_schema

        prepare_schema(settings)  # the embedded database, as every command; its check says if it failed
    except Exception:  # noqa: BLE001,S110 - reported by the schema check below
        pass
    checks, seconds = doc.run_checks(settings)
    if as_json:
        print_json(doc.report(checks, seconds))
    else:
        doc.show(console, checks, seconds)
    if not doc.report(checks, seconds)["ok"]:
        raise typer.Exit(1)


# --- the demo ---------------------------------------------------------------------------------------
@app.command()
def demo(
    listings: int = typer.Option(320, help="Listings in the sandbox marketplace."),
    models: int = typer.Option(8, help="Car models in the sandbox marketplace."),
    seed: int = typer.Option(7),
    train_seconds: float = typer.Option(120.0, help="Training time budget."),
    report_dir: Path = typer.Option(Path("autodetect-data/demo/report"), help="Where the HTML report goes."),
    keep: bool = typer.Option(False, help="Keep the previous demo's data instead of starting fresh."),
    verbose: bool = typer.Option(False, "--verbose", help="Show TensorFlow's and the worker's log lines here."),
) -> None:
    """The main job, embedded: sandbox -> crawl -> download -> dedup -> retrain -> promote -> tag -> report."""
    from autodetect.cli.demo import run_demo

    run_demo(console, listings=listings, models=models, seed=seed, train_seconds=train_seconds,
             report_dir=report_dir, keep=keep, verbose=verbose)


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
          wait: bool = typer.Option(False, help="Run here instead of queueing it for a discovery worker."),
          as_json: JsonOption = False) -> None:
    """Crawl the configured source (AUTODETECT_SOURCE) once."""
    commands.crawl(max_listings, wait, as_json)


@app.command()
@_needs_schema
def status(as_json: JsonOption = False) -> None:
    """Counts per stage and state, queue lengths, the active model and the retraining trigger's reason."""
    from autodetect.cli.views import queue_lengths, show_status
    from autodetect.db import session_scope
    from autodetect.pipeline.status import pipeline_status

    with session_scope() as s:
        data = pipeline_status(s)
    data["queues"] = queue_lengths()
    if as_json:
        print_json(data)
    else:
        show_status(console, data)


@app.command()
@_needs_schema
def tag(all_: bool = typer.Option(False, "--all", help="Every unique photo (and retry those that failed)."),
        missing: bool = typer.Option(False, "--missing", help="Photos without a prediction from the version."),
        model: Optional[str] = typer.Option(None, help="Version (default: the active one); alone: --missing."),
        wait: bool = typer.Option(True, help="Follow progress until done."),
        as_json: JsonOption = False) -> None:
    """Tag the catalogue through the inference queue, with a progress bar fed from the database.

    Resumable: run it again after an interruption and it finishes the rest, predicting no photo twice.
    With the embedded default (no broker) the batches run in this process."""
    commands.tag(all_, missing, model, wait, as_json)


@app.command()
@_needs_schema
def train(now: bool = typer.Option(False, "--now", help="Queue a training run now, whatever the trigger says."),
          images: Optional[Path] = typer.Option(None, help="Train on DIR/<class name>/<photo> instead of the catalogue."),
          wait: bool = typer.Option(False, help="Run here instead of on a training worker."),
          as_json: JsonOption = False,
          verbose: bool = typer.Option(False, "--verbose", help="Show TensorFlow's log lines here.")) -> None:
    """Train a candidate model; it is promoted only if it matches or beats the active one."""
    if images is not None:
        from autodetect.cli.folder import train_from_folder

        train_from_folder(console, images)
        return
    commands.train(now, wait, as_json, verbose)


@app.command()
@_needs_schema
def identify(photos: Annotated[list[Path], typer.Argument(exists=True, dir_okay=False, help="Photo files.")],
             top: int = typer.Option(3), as_json: JsonOption = False) -> None:
    """The most likely models for each photo, with the active model; no workers needed. A photo without a
    car, or of a car the model does not know, gets "no car recognised" or "a car, but not a model we know"."""
    commands.identify(photos, top, as_json)


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
def catalogue(as_json: JsonOption = False) -> None:
    """Classes with their photo counts, and which reach the training minimum."""
    from autodetect.cli.views import catalogue_data, show_catalogue

    data = catalogue_data()
    print_json(data) if as_json else show_catalogue(console, data)


@app.command()
def worker(queue: str, extra: Annotated[Optional[list[str]], typer.Argument()] = None) -> None:
    """Start a Celery worker for QUEUE with that queue's declared pool, concurrency and prefetch."""
    from workers.queues import queue_specs

    specs = queue_specs(get_settings())
    if queue not in specs:
        usage(f"unknown queue {queue!r}; queues: {', '.join(specs)}")
    os.execvp(sys.executable, [sys.executable, "-m", "celery", *specs[queue].worker_args(), *(extra or [])])


# --- the registry -----------------------------------------------------------------------------------
@models_app.command("list")
@_needs_schema
def models_list(as_json: JsonOption = False) -> None:
    """The model versions, newest first, with their held-out test metrics."""
    from autodetect.cli.views import models_data, show_models

    versions = models_data()
    print_json(versions) if as_json else show_models(console, versions)


@models_app.command("promote")
@_needs_schema
def models_promote(version: str) -> None:
    from autodetect.db import session_scope
    from autodetect.model.registry import RegistryError, find_version, promote

    with session_scope() as s:
        try:
            promote(s, find_version(s, version))
        except RegistryError as exc:
            usage(str(exc))
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
            fail(str(exc))
        console.print(f"rolled back: {version.name} is active")


@models_app.command("export")
@_needs_schema
def models_export(version: str, format: str = typer.Option("coreml", help="coreml | tflite | onnx"),
                  out: Optional[Path] = typer.Option(None)) -> None:
    """Export a version for phones (Core ML) or servers (TFLite int8, ONNX)."""
    from autodetect.db import session_scope
    from autodetect.model.registry import RegistryError, find_version

    if format not in ("coreml", "tflite", "onnx"):
        usage("format must be coreml, tflite or onnx")
    with session_scope() as s:
        try:
            v = find_version(s, version)
        except RegistryError as exc:
            usage(str(exc))
        directory = get_settings().data_dir / v.artifacts["dir"]
        classes, backbone = list(v.classes), v.backbone
    from autodetect.model import export as ex

    keras_path = directory / "model.keras"
    target = out or directory / {"coreml": "AutoDetect.mlpackage", "tflite": "model.tflite", "onnx": "model.onnx"}[format]
    if format == "coreml":
        ex.export_coreml(keras_path, target, classes, backbone)
    elif format == "tflite":
        ex.export_tflite(keras_path, target)
    else:
        ex.export_onnx(keras_path, target)
    console.print(f"exported {version} as {format}: {target}")


@metrics_app.command("serve")
def metrics_serve(host: Optional[str] = typer.Option(None, help="Default: AUTODETECT_METRICS_HOST (127.0.0.1)."),
                  port: Optional[int] = typer.Option(None, help="Default: AUTODETECT_METRICS_PORT (9108)."),
                  queues: bool = typer.Option(True, help="Also export the broker's queue lengths.")) -> None:
    """The pipeline exporter: photos per stage and state, oldest pending, failures, listings, training
    runs, model metrics, read from the database on every scrape (GET /metrics)."""
    commands.metrics_serve(host, port, queues)


@app.command()
@_needs_schema
def serve(host: str = typer.Option("127.0.0.1"), port: int = typer.Option(8000)) -> None:
    """The HTTP API and the web page (Prometheus metrics at /metrics)."""
    import uvicorn

    from autodetect.observability.logs import configure_logging

    json_logs = get_settings().log_format == "json"
    if json_logs:
        configure_logging(get_settings())  # uvicorn's own lines too, as JSON
    uvicorn.run("autodetect.serving.app:app", host=host, port=port, log_level="info",
                **({"log_config": None} if json_logs else {}))


if __name__ == "__main__":  # pragma: no cover
    app()
