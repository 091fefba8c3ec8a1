"""The checks that need no Celery: the database and its schema, beat's last sweep, the active model,
the data directory and its disk, the source, Flower. ``autodetect doctor`` runs them all;
``GET /health`` runs ``api_probes`` (what the API itself needs)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from autodetect.beats import SWEEP, last_beat
from autodetect.checks import FAIL, OK, WARN, Check, Probe, short_error
from autodetect.db import alembic_config, db_now, engine_for, masked_url, read_scope
from autodetect.settings import Settings
from autodetect.storage import ModelVersion

#: Loads a version's serving model for the model check (doctor: a fresh load; the API: its provider).
Loader = Callable[[Session, ModelVersion], object]

FIX_DATABASE = "start the database, or correct AUTODETECT_DATABASE_URL"
FIX_SCHEMA = "run `autodetect db upgrade`"
FIX_BEAT = "start `celery -A workers beat` and a discovery worker (the sweep runs there)"
FIX_MODEL = "`autodetect models rollback`, or train again (`autodetect train --now`)"


def _db_reason(exc: BaseException, settings: Settings) -> str:
    """The driver's first line, the password masked."""
    reason = short_error(getattr(exc, "orig", None) or exc)
    from sqlalchemy import make_url

    password = make_url(settings.database_url).password
    return reason.replace(str(password), "***") if password else reason


def database_checks(settings: Settings) -> list[Check]:
    """The database answers, and its schema is at the migrations' head."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    url = masked_url(settings.database_url)
    try:
        with engine_for(settings.database_url, readonly=True).connect() as conn:
            conn.execute(text("SELECT 1"))
            current = MigrationContext.configure(conn).get_current_revision()
            dialect = conn.dialect.name
    except SQLAlchemyError as exc:
        return [Check("database", FAIL, f"{url} does not answer: {_db_reason(exc, settings)}", FIX_DATABASE),
                Check("schema", FAIL, "not checked: the database does not answer", FIX_DATABASE)]
    head = ScriptDirectory.from_config(alembic_config(settings)).get_current_head()
    database = Check("database", OK, f"{url} answers ({dialect})")
    if current == head:
        return [database, Check("schema", OK, f"migrations at head ({head})")]
    found = "no schema yet" if current is None else f"schema at {current}, the code needs {head}"
    return [database, Check("schema", FAIL, found, FIX_SCHEMA)]


def beat_check(settings: Settings) -> Check:
    """Beat is alive when the sweeper ran lately (it stamps ``beats.sweep`` on the database's clock)."""
    every = settings.sweeper_interval_s
    if settings.is_embedded:
        return Check("beat", OK, "embedded broker: no beat; `autodetect demo` sweeps in-process")
    try:
        with read_scope(settings) as s:
            last, now = last_beat(s, SWEEP), db_now(s)
    except SQLAlchemyError as exc:
        return Check("beat", FAIL, f"cannot read the last sweep: {_db_reason(exc, settings)}", FIX_DATABASE)
    if last is None:
        return Check("beat", FAIL, "no sweep recorded yet", FIX_BEAT)
    age = (now - last).total_seconds()
    if age > 3 * every + 10:
        return Check("beat", FAIL, f"last sweep {age:.0f} s ago (one every {every} s expected)", FIX_BEAT)
    return Check("beat", OK, f"last sweep {age:.0f} s ago (one every {every} s)")


def model_check(settings: Settings, load: Loader) -> Check:
    """An active model whose artifact loads, and its serving runtime."""
    from autodetect.model.registry import active_version

    try:
        with read_scope(settings) as s:
            version = active_version(s)
            if version is None:
                return Check("model", WARN, "no active model yet",
                             "`autodetect demo`, or `autodetect train --now` once photos are labelled")
            name, backbone, classes = version.name, version.backbone, len(version.classes)
            try:
                model = load(s, version)
            except Exception as exc:  # noqa: BLE001 - a broken artifact is this check's finding
                return Check("model", FAIL, f"{name} does not load: {short_error(exc)}", FIX_MODEL)
    except SQLAlchemyError as exc:
        return Check("model", FAIL, f"cannot read the registry: {_db_reason(exc, settings)}", FIX_DATABASE)
    loaded = getattr(model, "name", None)
    runtime = getattr(model, "format", "?")
    if loaded != name:
        return Check("model", WARN, f"{name} does not load; still serving {loaded or 'nothing'}", FIX_MODEL)
    return Check("model", OK, f"{name} loads ({backbone}, {classes} classes, {runtime} runtime)")


def fresh_loader(settings: Settings) -> Loader:
    """Load the version's serving model here and now, on one thread (doctor)."""
    from autodetect.model.provider import load_serving_model

    return lambda _session, version: load_serving_model(settings, version, threads=1)


def data_dir_check(settings: Settings) -> Check:
    directory = settings.data_dir.resolve()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".doctor-") as f:
            f.write(b"ok")
            f.flush()
    except OSError as exc:
        return Check("data dir", FAIL, f"{directory} is not writable: {exc.strerror or exc}",
                     "make it writable, or set AUTODETECT_DATA_DIR")
    return Check("data dir", OK, f"{directory} is writable")


def disk_check(settings: Settings) -> Check:
    """Free space under the data directory against ``min_free_disk_mb`` (under twice that: a warning)."""
    where = settings.data_dir.resolve()
    while not where.exists() and where != where.parent:
        where = where.parent
    free_mb = shutil.disk_usage(where).free / 2**20
    minimum = settings.min_free_disk_mb
    found = f"{free_mb / 1024:.1f} GiB free under {where} (minimum {minimum} MiB)"
    fix = "free some space, or move AUTODETECT_DATA_DIR"
    if free_mb < minimum:
        return Check("disk space", FAIL, found, fix)
    return Check("disk space", WARN if free_mb < 2 * minimum else OK, found, fix if free_mb < 2 * minimum else "")


def _answers(url: str, settings: Settings, auth: tuple[str, str] | None = None) -> tuple[bool, str]:
    import requests

    timeout = min(3.0, settings.doctor_check_timeout_s)
    try:
        with requests.get(url, timeout=(timeout, timeout), auth=auth, stream=True, allow_redirects=False) as r:
            return r.status_code < 500, f"HTTP {r.status_code}"
    except requests.RequestException as exc:
        return False, _http_reason(exc)


def _http_reason(exc: BaseException) -> str:
    """``connection refused``, ``timed out``...: the root of a ``requests`` error, not its wrapping."""
    import re

    import requests

    if isinstance(exc, requests.Timeout):
        return "no answer in time"
    errno = re.search(r"\[Errno -?\d+\] ([^'\")]+)", str(exc))
    return errno.group(1).strip() if errno else short_error(exc)


def source_check(settings: Settings) -> Check:
    """eBay: its credentials are set. The sandbox or a feed: its URL answers (or the feed file exists)."""
    if settings.source == "ebay":
        if settings.ebay_client_id and settings.ebay_client_secret.get_secret_value():
            return Check("source", OK, f"eBay credentials present (client id …{settings.ebay_client_id[-4:]})")
        return Check("source", FAIL, "eBay credentials missing",
                     "set AUTODETECT_EBAY_CLIENT_ID and AUTODETECT_EBAY_CLIENT_SECRET")
    if settings.source == "feed":
        url, fix = settings.feed_url, "set AUTODETECT_FEED_URL to a reachable URL or an existing file"
        if not url:
            return Check("source", FAIL, "feed: AUTODETECT_FEED_URL is not set", fix)
        if not url.startswith(("http://", "https://")):
            exists = Path(url).is_file()
            return Check("source", OK if exists else FAIL, f"feed file {url} {'exists' if exists else 'is missing'}",
                         "" if exists else fix)
    else:
        url, fix = settings.marketplace_url, "start `autodetect sandbox serve`, or correct AUTODETECT_MARKETPLACE_URL"
    ok, how = _answers(url, settings)
    if not ok and settings.source == "sandbox" and settings.is_embedded:  # the demo starts its own sandbox
        return Check("source", WARN, f"sandbox: {url} does not answer ({how}); `autodetect demo` starts its own",
                     f"for `autodetect crawl`: {fix}")
    return Check("source", OK if ok else FAIL, f"{settings.source}: {url} {'answers' if ok else 'fails'} ({how})",
                 "" if ok else fix)


def flower_check(settings: Settings) -> Check:
    if not settings.flower_url:
        return Check("flower", OK, "not configured (AUTODETECT_FLOWER_URL)")
    user, _, password = settings.flower_basic_auth.partition(":")
    ok, how = _answers(settings.flower_url.rstrip("/") + "/healthcheck", settings,
                       (user, password) if settings.flower_basic_auth else None)
    return Check("flower", OK if ok else FAIL, f"{settings.flower_url} {'answers' if ok else 'fails'} ({how})",
                 "" if ok else "start `celery -A workers flower`, or correct AUTODETECT_FLOWER_URL")


def api_probes(settings: Settings, load: Loader) -> list[Probe]:
    """What the API needs: the database and schema, the model, the data directory and its disk."""
    return [Probe("database", lambda: database_checks(settings), FIX_DATABASE),
            Probe("model", lambda: model_check(settings, load), FIX_MODEL),
            Probe("data dir", lambda: data_dir_check(settings)),
            Probe("disk space", lambda: disk_check(settings))]


def domain_probes(settings: Settings) -> list[Probe]:
    """Every check that needs no Celery (doctor adds the broker and the workers)."""
    api = api_probes(settings, fresh_loader(settings))
    return [api[0], Probe("beat", lambda: beat_check(settings), FIX_BEAT), *api[1:],
            Probe("source", lambda: source_check(settings)), Probe("flower", lambda: flower_check(settings))]
