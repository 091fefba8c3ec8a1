"""Crawl throughput: the sandbox marketplace in-process on a free port, a fresh database, two crawls.

    python benchmarks/crawl_throughput.py [--listings 10000] [--pg postgresql+psycopg2://...]

Each backend (SQLite in a temp dir; PostgreSQL in a scratch database created on the ``--pg`` server and
dropped afterwards) gets a fresh schema; the crawl runs with a no-op dispatcher. Prints listings/s beside
the goal (10,000 listings in under 60 s, database writes included) and checks that the database holds
exactly the marketplace's listings after the second crawl. Exit status 1 if a check or the goal fails.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import func, select

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scratch import scratch_postgres  # noqa: E402
from autodetect.db import engine_for, session_scope, upgrade  # noqa: E402
from autodetect.pipeline.discovery import crawl  # noqa: E402
from autodetect.pipeline.dispatch import no_dispatch  # noqa: E402
from autodetect.sandbox.marketplace import Marketplace  # noqa: E402
from autodetect.sandbox.server import SandboxServer  # noqa: E402
from autodetect.settings import configure  # noqa: E402
from autodetect.sources import open_source  # noqa: E402
from autodetect.storage import Listing  # noqa: E402

GOAL_LISTINGS, GOAL_S = 10_000, 60.0


def run(backend: str, database_url: str, data_dir: Path, args: argparse.Namespace) -> list[dict]:
    marketplace = Marketplace(listings=args.listings, models=args.models, seed=args.seed)
    rows = []
    with SandboxServer(marketplace) as server:
        settings = configure(data_dir=data_dir, database_url=database_url, source="sandbox",
                             marketplace_url=server.url, ebay_client_id="bench", ebay_client_secret="bench")
        upgrade(settings)
        for n in (1, 2):
            before = dict(server.stats)
            started = time.perf_counter()
            stats = crawl(settings, open_source(settings), no_dispatch)
            seconds = time.perf_counter() - started
            with session_scope(settings) as s:
                stored = s.scalar(select(func.count()).select_from(Listing))
            calls = {k: server.stats[k] - before.get(k, 0) for k in ("search", "item")}
            rows.append({"backend": backend, "crawl": n, "state": stats.state, "stored": stored,
                         "new": stats.new_listings, "search": calls["search"], "item": calls["item"],
                         "seconds": seconds, "rate": stats.listings / seconds if seconds else 0.0})
        engine_for(database_url).dispose()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listings", type=int, default=GOAL_LISTINGS)
    parser.add_argument("--models", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pg", metavar="URL", help="also on PostgreSQL, e.g. postgresql+psycopg2://u:p@127.0.0.1/db")
    args = parser.parse_args()

    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        rows += run("sqlite", f"sqlite:///{tmp}/bench.db", Path(tmp), args)
        if args.pg:
            with scratch_postgres(args.pg) as url:
                rows += run("postgresql", url, Path(tmp), args)

    goal_rate = GOAL_LISTINGS / GOAL_S
    print(f"\ncrawl of {args.listings} sandbox listings; goal: {GOAL_LISTINGS} in < {GOAL_S:.0f} s "
          f"(>= {goal_rate:.0f} listings/s)\n")
    print(f"| {'backend':<10} | crawl | {'state':<7} | {'stored':>6} | {'new':>6} | search | {'item':>5} | "
          f"{'seconds':>7} | {'listings/s':>10} | goal |")
    print("|" + "|".join("-" * (w + 2) for w in (10, 5, 7, 6, 6, 6, 5, 7, 10, 4)) + "|")
    ok = True
    for r in rows:
        meets = r["rate"] >= goal_rate
        ok &= meets
        print(f"| {r['backend']:<10} | {r['crawl']:>5} | {r['state']:<7} | {r['stored']:>6} | {r['new']:>6} | "
              f"{r['search']:>6} | {r['item']:>5} | {r['seconds']:>7.1f} | {r['rate']:>10.0f} | "
              f"{'ok' if meets else 'SLOW':<4} |")
    for r in rows:
        if r["crawl"] == 2 and r["stored"] != args.listings:
            print(f"FAIL {r['backend']}: {r['stored']} listings after the second crawl, expected {args.listings}")
            ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
