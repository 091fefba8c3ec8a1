"""How every command answers: tables on the console by default, one JSON document with ``--json``,
errors as one line on stderr, and the same exit statuses everywhere (``EXIT_STATUSES``)."""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

import typer
from rich.console import Console

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2

EXIT_STATUSES = (
    "Exit status, every command: 0 success; 1 failure (the command ran and could not do its work: the database "
    "does not answer or has no schema, no active model, a doctor check failed, training failed); 2 usage "
    "(bad options or arguments, a photo or version that does not exist, a malformed setting such as "
    "AUTODETECT_DATABASE_URL). With --json, the JSON document is the only thing on stdout."
)

console = Console()
#: Errors, and progress bars while stdout carries JSON.
err_console = Console(stderr=True)


def fail(message: str, code: int = EXIT_FAILURE) -> NoReturn:
    """One line on stderr, then exit with ``code`` (1: failure)."""
    err_console.print(f"[bold red]error:[/] {message}", soft_wrap=True)
    raise typer.Exit(code)


def usage(message: str) -> NoReturn:
    fail(message, EXIT_USAGE)


def print_json(data: Any) -> None:
    """``data`` as JSON on stdout, plain (no colours, no wrapping), so that scripts can parse it."""
    sys.stdout.write(json.dumps(data, default=str, indent=2) + "\n")
    sys.stdout.flush()


def progress_console(as_json: bool) -> Console:
    """Where progress goes: the console, or stderr when stdout carries JSON."""
    return err_console if as_json else console


def configuration_problem() -> str | None:
    """One line naming the setting and what is wrong with it, or None: invalid settings, a database URL
    that does not parse, a broker URL with no transport Celery knows."""
    from pydantic import ValidationError

    from autodetect.settings import get_settings

    try:
        settings = get_settings()
    except ValidationError as exc:
        err = exc.errors()[0]
        name = ".".join(str(p) for p in err.get("loc", ())) or "settings"
        return f"AUTODETECT_{name.upper()}: {err.get('msg', 'invalid')}"
    from sqlalchemy import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        make_url(settings.database_url)
    except ArgumentError:
        return "AUTODETECT_DATABASE_URL: not a database URL (e.g. postgresql+psycopg2://user:pass@host/db)"
    return broker_url_problem(settings.broker_url)


def broker_url_problem(url: str) -> str | None:
    from kombu.transport import TRANSPORT_ALIASES

    scheme, sep, _rest = url.partition("://")
    if not sep or scheme.split("+")[0] not in TRANSPORT_ALIASES:
        shown = f"scheme {scheme[:20]!r}" if sep else "no scheme://"
        return (f"AUTODETECT_BROKER_URL: not a broker URL ({shown}; "
                "e.g. redis://host:6379/0, amqp://user:pass@host:5672//, memory://)")
    return None
