"""Structured logs: with ``AUTODETECT_LOG_FORMAT=json`` every process writes one JSON object per line
(``python-json-logger``) with ``time``, ``level``, ``logger``, ``message`` and, inside a task, the
``task_name``, ``task_id``, ``stage`` and the ``image_ids`` (or ``training_run_id``) it works on.

The task fields come from a per-thread (per-context) binding: the Celery layer binds them when a task
starts and clears them when it ends (``workers/app.py``); this module knows nothing of Celery. Any
line logged meanwhile, by our code or a library, carries them."""

from __future__ import annotations

import contextvars
import logging
import sys
from collections.abc import Iterable, Mapping
from typing import Any

from pythonjsonlogger.json import JsonFormatter

from autodetect.settings import Settings

CONTEXT_FIELDS = ("task_name", "task_id", "stage", "image_ids", "training_run_id")
_context: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar("autodetect_log_context", default={})


def bind(**fields: Any) -> None:
    """Fields added to every record logged in this thread (context) until ``clear``."""
    _context.set({k: v for k, v in fields.items() if v is not None})


def clear() -> None:
    _context.set({})


def bound() -> Mapping[str, Any]:
    return _context.get()


class ContextFilter(logging.Filter):
    """Copies the bound fields onto each record (a handler filter: it sees every logger's records)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _context.get().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


def json_formatter() -> logging.Formatter:
    return JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s",
                         rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
                         datefmt="%Y-%m-%dT%H:%M:%S%z", json_ensure_ascii=False)


def use_json(handlers: Iterable[logging.Handler]) -> None:
    """Switch ``handlers`` to JSON lines with the bound task fields."""
    for handler in handlers:
        handler.setFormatter(json_formatter())
        if not any(isinstance(f, ContextFilter) for f in handler.filters):
            handler.addFilter(ContextFilter())


def configure_logging(settings: Settings) -> None:
    """For processes that set up logging themselves (the exporter, the API): one stderr handler on the
    root logger, JSON lines when ``settings.log_format`` is ``json``."""
    root = logging.getLogger()
    root.setLevel(settings.log_level.upper())
    if not root.handlers:
        root.addHandler(logging.StreamHandler(sys.stderr))
    if settings.log_format == "json":
        use_json(root.handlers)
        for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
            use_json(logging.getLogger(name).handlers)
    else:
        for handler in root.handlers:
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))


def task_fields(task_name: str, args: Iterable[Any] | None, kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
    """The log fields of a task call: its stage (the name's prefix) and the row ids it was given."""
    args, kwargs = list(args or ()), dict(kwargs or {})
    stage = task_name.split(".", 1)[0]
    fields: dict[str, Any] = {"task_name": task_name, "stage": stage}
    lists = [a for a in [kwargs.get("image_ids"), *args] if isinstance(a, (list, tuple))
             and all(isinstance(i, int) for i in a)]
    ints = [a for a in [kwargs.get("image_id"), *args] if isinstance(a, int) and not isinstance(a, bool)]
    if stage == "training" and ints:
        fields["training_run_id"] = ints[0]
    elif lists:
        fields["image_ids"] = list(lists[0])
    elif ints:
        fields["image_ids"] = [ints[0]]  # inference.predict: one photo id, a hint
    return fields
