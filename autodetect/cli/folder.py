"""``autodetect train --images DIR``: train on a folder of DIR/<class name>/<photo>."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

from autodetect.db import session_scope
from autodetect.model.folder_dataset import FolderError, scan_folder
from autodetect.settings import get_settings
from autodetect.pipeline.retraining import request_run
from autodetect.pipeline.training import NotEnoughData, run_training


def train_from_folder(console: Console, root: Path) -> None:
    from autodetect.cli.views import epoch_printer

    settings = get_settings()
    try:
        scan = scan_folder(settings, root)
    except FolderError as exc:
        console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    for message in scan.messages():
        console.print(f"[yellow]{message}[/]")
    counts = scan.counts()
    minimum = settings.min_photos_per_class
    below = sorted(c for c, n in counts.items() if n < minimum)
    for name in below:
        console.print(f"[yellow]class {name!r} has {counts[name]} photos, below the minimum of {minimum}; left out[/]")
    if len(counts) - len(below) < 2:
        console.print(f"[bold red]error:[/] {len(counts) - len(below)} class(es) with at least {minimum} photos; "
                      "at least 2 are needed to train (see AUTODETECT_MIN_PHOTOS_PER_CLASS)")
        raise typer.Exit(2)
    with session_scope(settings) as s:
        run = request_run(s, "manual", f"autodetect train --images {root}", {"images": str(Path(root).resolve())})
        if not run.params.get("images"):
            console.print(f"[bold red]error:[/] training run {run.id} ({run.reason}) is {run.state}; try again after it")
            raise typer.Exit(2)
        run_id = run.id
    try:
        outcome = run_training(settings, run_id, lambda *_: None, progress=epoch_printer(console))
    except NotEnoughData as exc:
        console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    console.print_json(json.dumps({k: v for k, v in outcome.items() if k != "metrics"}, default=str))
