"""Health checks: each says ok, warn or fail, what it found and the fix, within a deadline.

``autodetect doctor`` runs all of them (the Celery ones live in ``autodetect/cli/checkup.py``, the
composition root); ``GET /health`` runs those that apply to the API (``domain.api_probes``). Every
probe runs in its own daemon thread and all run side by side, so the whole run takes about one
deadline (``doctor_check_timeout_s``) whatever is down: a probe still waiting then is a failure
("no answer within N s"), and its thread is left behind rather than waited for."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

OK, WARN, FAIL = "ok", "warn", "fail"


@dataclass
class Check:
    name: str
    status: str  # ok | warn | fail
    found: str
    fix: str = ""
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Probe:
    """``run()`` returns one check or several (e.g. one per queue); ``fix`` is the advice when it
    does not answer in time."""

    name: str
    run: Callable[[], Check | list[Check]]
    fix: str = ""


def run_probes(probes: Sequence[Probe], timeout_s: float) -> list[Check]:
    """Run ``probes`` side by side; their checks in the probes' order. A probe that raises is a
    failed check with the error; one still running after ``timeout_s`` is a failed check too."""
    results: list[list[Check] | None] = [None] * len(probes)
    started = time.monotonic()

    def work(i: int, probe: Probe) -> None:
        t = time.monotonic()
        try:
            out = probe.run()
            checks = out if isinstance(out, list) else [out]
        except Exception as exc:  # noqa: BLE001 - a check reports, it never raises
            checks = [Check(probe.name, FAIL, short_error(exc), probe.fix)]
        for c in checks:
            c.seconds = round(time.monotonic() - t, 3)
        results[i] = checks

    threads = [threading.Thread(target=work, args=(i, p), name=f"check-{p.name}", daemon=True)
               for i, p in enumerate(probes)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.0, started + timeout_s - time.monotonic()))
    out: list[Check] = []
    for probe, checks in zip(probes, results):
        out.extend(checks if checks is not None else
                   [Check(probe.name, FAIL, f"no answer within {timeout_s:g} s", probe.fix, round(timeout_s, 3))])
    return out


def short_error(exc: BaseException) -> str:
    """One line: the exception's type and the first line of its message."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300]}" if text else type(exc).__name__


def worst(checks: Sequence[Check]) -> str:
    statuses = {c.status for c in checks}
    return FAIL if FAIL in statuses else WARN if WARN in statuses else OK
