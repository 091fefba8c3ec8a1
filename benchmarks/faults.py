"""The fault suite in reporting mode: what survives what, with the numbers.

    .venv/bin/python benchmarks/faults.py [-k EXPR] [--results benchmarks/RESULTS.md] [--logs DIR]

Runs ``pytest tests/integration/test_faults.py`` (real PostgreSQL, Redis and RabbitMQ of their own,
separate Celery workers per queue, beat, the sandbox marketplace; see that module's doc) with
``AUTODETECT_FAULTS_REPORT`` naming a file, into which every scenario appends a JSON line with its
counts and the seconds from its fault to a settled pipeline. Then writes the table (scenario, photos,
done, failed with a reason, predictions by the active version, seconds from fault to settled, the
scenario's wall time, the result) into the "Faults" section of ``benchmarks/RESULTS.md``, with the
command that produced it, replacing the section's previous contents. ``-k`` selects scenarios as in
pytest (the table then holds those only). Exit status: pytest's.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SUITE = "tests/integration/test_faults.py"
SECTION = "## Faults"

#: The scenarios' names (``FaultRun.name``) in the issue's order, with what each one does.
SCENARIOS = {
    "prefork_children_killed": "1. SIGKILL one prefork child of dedup and of inference, mid-batch",
    "download_worker_killed": "2a. SIGKILL the whole download worker mid-batch, start a new one",
    "training_worker_killed": "2b. SIGKILL the training worker mid-run, start a new one",
    "postgresql_restarted": "3. PostgreSQL stopped mid-run, down 20 s, started",
    "redis_restarted": "4. Redis killed mid-run, started empty (nothing persisted)",
    "rabbitmq_restarted": "5. RabbitMQ (as broker) stopped mid-run and started",
    "photo_host_down_60s": "6. Photo host refuses connections for 60 s mid-run",
    "poison_inputs": "7. Poison: 2 redirects to `http://[::1`, 2 JPEGs that raise in decode, "
                     "a version that cannot load",
    "image_store_full": "8. Image store's file system full (tmpfs) mid-run, freed 20 s later",
    "two_promotions": "9. Two promotions at once (two open transactions)",
    "training_fails_deterministically": "10. Training fails deterministically; 36+ checks after the first failure",
}


def _reasons(reasons: dict) -> str:
    return "; ".join(f"{k} ×{v}" for k, v in reasons.items())[:160] or "-"


def table(lines: list[dict]) -> str:
    order = {name: i for i, name in enumerate(SCENARIOS)}
    lines = sorted(lines, key=lambda x: order.get(x["scenario"], len(order)))
    out = ["| scenario | broker | photos | done | failed (with reason) | predictions | fault → settled s | wall s "
           "| result |",
           "|---|---|---:|---:|---|---:|---:|---:|---|"]
    for x in lines:
        settled = "not settled" if x.get("fault_to_settled_s") is None else f"{x['fault_to_settled_s']:.1f}"
        failed = f"{x['failed']} ({x['failed_with_reason']}): {_reasons(x.get('failure_reasons') or {})}"
        problems = "; ".join(p.splitlines()[0] for p in x.get("problems", []))
        result = "ok" if x.get("passed") else f"FAILED: {problems[:300]}"
        out.append(f"| {SCENARIOS.get(x['scenario'], x['scenario'])} | {x['broker']} | {x['photos']} | {x['done']} | "
                   f"{failed} | {x['predictions']} by {', '.join(x.get('active') or []) or '-'} | {settled} | "
                   f"{x['wall_s']:.0f} | {result.replace('|', '/')} |")
    return "\n".join(out)


def section(lines: list[dict], command: str, seconds: float, status: int, missing: list[str]) -> str:
    passed = sum(bool(x.get("passed")) for x in lines)
    photos = max((x["photos"] for x in lines), default="their")
    parts = [
        SECTION, "",
        f"`{command}` ({datetime.now():%Y-%m-%d %H:%M}; {os.cpu_count()} CPUs; the suite's wall time "
        f"{seconds / 60:.1f} min, pytest exit status {status}; {passed} of {len(lines)} scenarios passed).",
        "",
        f"Each scenario crawls the 60 listings of the sandbox marketplace ({photos} photos; one answers 404 "
        "and fails on purpose) through separate `celery -A workers worker -Q <queue>` processes and beat "
        "(sweeper every 1 s, `stale_after_s` 5 s, backoff [2, 4, 8, 16, 32] s) on a PostgreSQL cluster, "
        "Redis or RabbitMQ node and photo host of its own, injects the fault mid-run and waits until "
        "nothing is pending or running; then counts rows: every unique photo predicted once by the "
        "active version or failed with a reason, only the photos meant to fail failed, no listing "
        "lost or stored twice. \"fault → settled\": seconds from the (first) fault to that state.",
        "",
        table(lines),
    ]
    if missing:
        parts += ["", "No report line (the scenario errored before counting, or was not selected): "
                  + ", ".join(missing) + "."]
    return "\n".join(parts) + "\n"


def update_results(path: Path, text: str) -> None:
    old = path.read_text() if path.exists() else "# Benchmark results\n"
    start = old.find(f"\n{SECTION}\n")
    if start < 0:
        new = old.rstrip("\n") + "\n\n" + text
    else:
        end = old.find("\n## ", start + len(SECTION) + 2)
        new = old[: start + 1] + text + ("" if end < 0 else "\n" + old[end + 1:])
    path.write_text(new)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-k", dest="select", help="pytest -k expression: only these scenarios")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "RESULTS.md")
    parser.add_argument("--logs", type=Path, help="keep every scenario's worker logs under this directory")
    parser.add_argument("--no-write", action="store_true", help="print the table, leave RESULTS.md alone")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="autodetect-faults-report-") as tmp:
        report = Path(tmp) / "faults.jsonl"
        env = {**os.environ, "AUTODETECT_FAULTS_REPORT": str(report)}
        if args.logs:
            args.logs.mkdir(parents=True, exist_ok=True)
            env["AUTODETECT_FAULTS_LOGS"] = str(args.logs.resolve())
        cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", SUITE, "-s", "-rA"]
        if args.select:
            cmd += ["-k", args.select]
        started = time.monotonic()
        status = subprocess.call(cmd, cwd=ROOT, env=env)
        seconds = time.monotonic() - started
        lines = [json.loads(x) for x in report.read_text().splitlines() if x.strip()] if report.exists() else []

    shown = ["benchmarks/faults.py"] + (["-k", args.select] if args.select else [])
    command = ".venv/bin/python " + " ".join(shlex.quote(a) for a in shown)
    ran = {x["scenario"] for x in lines}
    missing = [name for name in SCENARIOS if name not in ran] if not args.select else []
    text = section(lines, command, seconds, status, missing)
    print("\n" + text)
    if not args.no_write and lines:
        update_results(args.results, text)
        print(f"written to {args.results}")
    return status


if __name__ == "__main__":
    sys.exit(main())
