"""What the CLI shows: rich tables and progress bars over the domain's data."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from sqlalchemy import func, select

from autodetect.db import session_scope
from autodetect.settings import get_settings


def queue_lengths() -> dict[str, Any]:
    """Messages waiting per queue, read from the broker (empty for the embedded broker)."""
    if get_settings().is_embedded:
        return {}
    from workers.app import app
    from workers.queues import queue_lengths as lengths

    try:
        return lengths(app)
    except Exception as exc:  # noqa: BLE001 - status must still show the database's side
        return {"error": f"broker unreachable: {exc}"}


def show_status(console: Console, data: dict[str, Any]) -> None:
    listings = data["listings"]
    console.print(f"[bold]listings[/] {listings['total']} ({listings.get('active', 0)} active, "
                  f"{listings.get('ended', 0)} ended, {listings['labelled']} labelled, {listings['tagged']} tagged)")
    table = Table(title="photos per stage and state")
    for col in ("stage", "state", "photos"):
        table.add_column(col, justify="right" if col == "photos" else "left")
    for row in data["photos"]:
        table.add_row(row["stage"], row["state"], str(row["photos"]))
    console.print(table)
    console.print(f"duplicates {data['duplicates']} (label conflicts {data['label_conflicts']})")
    console.print("excluded from training: " + ", ".join(f"{k} {n}" for k, n in data["excluded_from_training"].items()))
    for err in data["errors"]:
        console.print(f"  failed in {err['stage']}: {err['photos']} × {err['error']}")
    for err in data.get("retrying", []):
        console.print(f"  retrying in {err['stage']}: {err['photos']} × {err['error']}")
    if data.get("queues"):
        console.print("queues: " + ", ".join(f"{k} {v}" for k, v in data["queues"].items()))
    model = data["model"]
    if model:
        m = model["metrics"]
        console.print(f"[bold]active model[/] {model['name']} ({model['backbone']}, {model['classes']} classes): "
                      + ", ".join(f"{k} {v:.3f}" for k, v in m.items() if isinstance(v, float)))
    else:
        console.print("[bold]active model[/] none yet")
    if data["last_trigger"]:
        t = data["last_trigger"]
        console.print(f"last retraining trigger {t['at']}: {t['trigger']} — {t['reason']}")
    if data["last_check"]:
        c = data["last_check"]
        console.print(f"last retraining check {c['at']}: {'fired' if c['fire'] else 'not due'} — {c['reason']}")
    if data["suspects"]:
        table = Table(title="suspect listings (the model confidently disagrees with the seller)")
        for col in ("listing", "title", "seller_label", "model_says", "probability"):
            table.add_column(col)
        for row in data["suspects"]:
            table.add_row(*(str(row[c]) for c in ("listing", "title", "seller_label", "model_says", "probability")))
        console.print(table)


def models_data() -> list[dict[str, Any]]:
    """The registry's versions, newest first, with their held-out test metrics."""
    from autodetect.model.registry import list_versions

    with session_scope() as s:
        return [{"version": v.name, "status": v.status, "backbone": v.backbone, "image_size": v.image_size,
                 "classes": len(v.classes), **{k: (v.metrics or {}).get(k) for k in ("top1", "top3", "mean_per_class")},
                 "created_at": v.created_at.isoformat(timespec="seconds")} for v in list_versions(s)]


def show_models(console: Console, versions: list[dict[str, Any]]) -> None:
    table = Table(title="model versions")
    for col in ("version", "status", "backbone", "size", "classes", "top-1", "top-3", "mean/class", "created"):
        table.add_column(col)
    for v in versions:
        table.add_row(v["version"], v["status"], v["backbone"], str(v["image_size"]), str(v["classes"]),
                      *(f"{v[k]:.3f}" if isinstance(v[k], float) else "-" for k in ("top1", "top3", "mean_per_class")),
                      v["created_at"])
    console.print(table)


def catalogue_data() -> dict[str, Any]:
    """Classes with their listings and unique photos, and whether they reach the training minimum."""
    from autodetect.storage import CarClass, Image, Listing

    minimum = get_settings().min_photos_per_class
    with session_scope() as s:
        rows = s.execute(
            select(CarClass.name, func.count(func.distinct(Listing.id)), func.count(Image.id))
            .join(Listing, Listing.class_id == CarClass.id)
            .outerjoin(Image, (Image.listing_id == Listing.id) & Image.duplicate_of_id.is_(None)
                       & Image.normalized_key.is_not(None))
            .group_by(CarClass.name).order_by(func.count(Image.id).desc())
        ).all()
    classes = [{"class": name, "listings": n_listings, "photos": n_photos, "trainable": n_photos >= minimum}
               for name, n_listings, n_photos in rows]
    return {"min_photos_per_class": minimum, "trainable": sum(c["trainable"] for c in classes), "classes": classes}


def show_catalogue(console: Console, data: dict[str, Any]) -> None:
    table = Table(title=f"classes (training minimum: {data['min_photos_per_class']} unique photos)")
    for col in ("class", "listings", "photos", "trainable"):
        table.add_column(col)
    for c in data["classes"]:
        table.add_row(c["class"], str(c["listings"]), str(c["photos"]), "yes" if c["trainable"] else "no")
    console.print(table)
    console.print(f"{data['trainable']} of {len(data['classes'])} classes reach the minimum")


def show_mapping(console: Console, title: str, data: dict[str, Any]) -> None:
    """A two-column table of ``data`` (nested values as JSON)."""
    import json

    table = Table(title=title, show_header=False)
    table.add_column("what")
    table.add_column("value", overflow="fold")
    for key, value in data.items():
        table.add_row(str(key), value if isinstance(value, str) else json.dumps(value, default=str))
    console.print(table)


def follow_tagging(console: Console, version_id: int, *, poll_s: float = 0.5, idle_timeout_s: float = 600,
                   work: Callable[[], bool] | None = None) -> tuple[int, int]:
    """A live progress bar fed from the database until every unique photo has a prediction from
    ``version_id``. ``work`` (embedded mode, tests) does one batch in this process per call and says
    whether there was any; without it, workers do the work and this only watches. Returns (done, total)."""
    from autodetect.pipeline.tagging import tagging_failures, tagging_progress

    with Progress(TextColumn("tagging"), BarColumn(), MofNCompleteColumn(), TextColumn("photos"),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=console) as bar:
        task = bar.add_task("tag", total=None)
        last, last_change, polled = -1, time.monotonic(), 0.0
        while True:
            more = work() if work is not None else False
            if work is not None and more and time.monotonic() - polled < poll_s:
                continue
            polled = time.monotonic()
            with session_scope() as s:
                done, total = tagging_progress(s, version_id)
                failed = tagging_failures(s)
            bar.update(task, completed=done, total=total)
            if (not more) if work is not None else done >= total:  # here: until the work runs out
                break
            if done != last:
                last, last_change = done, time.monotonic()
            elif time.monotonic() - last_change > idle_timeout_s:
                console.print("[yellow]no progress: are inference workers running? "
                              "(`autodetect tag --missing` resumes)[/]")
                break
            if work is None:
                time.sleep(poll_s)
    if failed:
        console.print(f"[yellow]{failed} photos failed inference[/] (see `autodetect status`; "
                      "`autodetect tag --all` retries them)")
    return done, total


def epoch_printer(console: Console) -> Callable[[dict], None]:
    """One line per epoch: phase, epoch k of N (and the time budget), accuracies, losses, time left."""
    from autodetect.model.progress import describe_epoch

    def show(metrics: dict) -> None:
        console.print(describe_epoch(metrics), highlight=False, soft_wrap=True)

    return show
