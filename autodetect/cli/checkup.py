"""``autodetect doctor``: is everything up? The domain's checks (``autodetect.checks.domain``) plus the
two that need Celery, which live here in the composition root: the broker answers, and for each of
the five queues, workers answer Celery's ``inspect`` (by the queues they consume), with their pool
and concurrency. All checks run side by side, each within ``doctor_check_timeout_s``."""

from __future__ import annotations

import threading
import time
from typing import Any

from rich.console import Console
from rich.table import Table

from autodetect.checks import FAIL, OK, WARN, Check, Probe, run_probes, worst
from autodetect.checks.domain import domain_probes
from autodetect.settings import Settings

FIX_BROKER = "start the broker (Redis or RabbitMQ), or correct AUTODETECT_BROKER_URL"
_STYLE = {OK: "green", WARN: "yellow", FAIL: "bold red"}
_POOLS = {"prefork": "prefork", "thread": "threads", "solo": "solo", "eventlet": "eventlet", "gevent": "gevent"}


def _wait_s(settings: Settings) -> float:
    """How long one broker call or broadcast may take: well inside the check's deadline."""
    return max(0.5, min(2.0, settings.doctor_check_timeout_s / 2 - 0.25))


def broker_check(settings: Settings) -> Check:
    from kombu import Connection

    if settings.is_embedded:
        return Check("broker", OK, "embedded in-process broker (memory://): the demo and `tag` work in-process")
    wait = _wait_s(settings)
    with Connection(settings.broker_url, connect_timeout=wait,
                    transport_options={"socket_connect_timeout": wait, "socket_timeout": wait}) as conn:
        where = conn.as_uri()  # the password masked
        try:
            conn.connect()
        except Exception as exc:  # noqa: BLE001 - any transport's error: the finding
            from autodetect.checks import short_error

            return Check("broker", FAIL, f"{where} does not answer: {short_error(exc)}", FIX_BROKER)
    return Check("broker", OK, f"{where} answers")


def _broadcast(app, method: str, wait: float, out: dict[str, Any]) -> None:
    try:
        with app.connection_for_read() as conn:
            conn.ensure_connection(max_retries=1, timeout=wait)
            out[method] = getattr(app.control.inspect(timeout=wait, connection=conn), method)() or {}
    except Exception as exc:  # noqa: BLE001 - reported by the workers check
        out[f"{method} error"] = exc


def _inspect(app, wait: float) -> tuple[dict, dict]:
    """Celery's ``inspect active_queues`` and ``inspect stats``, side by side: (queues, stats) by worker."""
    out: dict[str, Any] = {}
    threads = [threading.Thread(target=_broadcast, args=(app, m, wait, out), daemon=True)
               for m in ("active_queues", "stats")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(wait + 1.5)
    if "active_queues" not in out:
        from autodetect.checks import short_error

        error = out.get("active_queues error")
        raise ConnectionError(f"the broker does not answer: {short_error(error)}" if error else
                              "the broker did not carry Celery's inspect broadcast in time")
    return out["active_queues"], out.get("stats", {})


def worker_checks(settings: Settings) -> list[Check]:
    """One check per queue: the workers that consume it and answered, with their pool and concurrency."""
    from workers.app import app
    from workers.queues import QUEUE_NAMES, queue_specs

    if settings.is_embedded:
        return [Check("workers", OK, "embedded: the demo and `tag` run every stage in-process")]
    queues, stats = _inspect(app, _wait_s(settings))
    specs = queue_specs(settings)
    checks = []
    for q in QUEUE_NAMES:
        names = sorted(w for w, qs in queues.items() if q in {x.get("name") for x in qs or []})
        fix = f"start one: `autodetect worker {q}` (or `celery -A workers worker -Q {q}`)"
        if not names:
            checks.append(Check(f"workers: {q}", FAIL, f"no worker answers on '{q}'", fix))
            continue
        pools = {w: _pool(stats.get(w, {})) for w in names}
        found = f"{len(names)} answering: " + ", ".join(f"{w} ({p} ×{c})" for w, (p, c) in pools.items())
        odd = [w for w, (p, _c) in pools.items() if p not in ("?", specs[q].pool)]
        checks.append(Check(f"workers: {q}", WARN if odd else OK, found,
                            f"'{q}' is declared with the {specs[q].pool} pool: `autodetect worker {q}`" if odd else ""))
    return checks


def _pool(stats: dict) -> tuple[str, str]:
    pool = stats.get("pool") or {}
    impl = str(pool.get("implementation", "?")).split(":")[0].rsplit(".", 1)[-1]
    return _POOLS.get(impl, impl), str(pool.get("max-concurrency", "?"))


def run_checks(settings: Settings) -> tuple[list[Check], float]:
    """Every check, side by side; (checks, seconds taken)."""
    started = time.monotonic()
    probes = domain_probes(settings)
    probes[1:1] = [Probe("broker", lambda: broker_check(settings), FIX_BROKER),
                   Probe("workers", lambda: worker_checks(settings), FIX_BROKER)]
    checks = run_probes(probes, settings.doctor_check_timeout_s)
    return checks, time.monotonic() - started


def report(checks: list[Check], seconds: float) -> dict[str, Any]:
    status = worst(checks)
    return {"ok": status != FAIL, "status": status, "seconds": round(seconds, 2),
            "checks": [c.as_dict() for c in checks]}


def show(console: Console, checks: list[Check], seconds: float) -> None:
    table = Table(title="autodetect doctor")
    for col in ("check", "status", "found", "fix"):
        table.add_column(col, overflow="fold")
    for c in checks:
        table.add_row(c.name, f"[{_STYLE[c.status]}]{c.status}[/]", c.found, c.fix)
    console.print(table)
    counts = {s: sum(1 for c in checks if c.status == s) for s in (OK, WARN, FAIL)}
    console.print(f"{counts[OK]} ok, {counts[WARN]} warnings, {counts[FAIL]} failed in {seconds:.1f} s")
