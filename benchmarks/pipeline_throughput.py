"""The whole pipeline on the real stack, from the crawl to the last listing-level prediction, against the
limit that the stages' own CPU costs set on this machine.

    .venv/bin/python benchmarks/pipeline_throughput.py                  # 2,000 listings, ~5-8 min
    .venv/bin/python benchmarks/pipeline_throughput.py --listings 300   # a quick look
        [--sample 300] [--concurrency inference=2 --concurrency download=32] [--set inference_batch_size=32]
        [--pg postgresql+psycopg2://postgres:postgres@127.0.0.1:5432/postgres] [--redis redis://127.0.0.1:6379/12]

The stack, all on loopback:

* PostgreSQL: a scratch database per part (below), created on ``--pg``'s server with the migrations, dropped
  afterwards.
* Redis: the broker, on database ``--redis`` (flushed before and after).
* The sandbox marketplace (``autodetect.sandbox``), ``--listings`` listings of ``--models`` models, served
  over HTTP by ``SandboxServer`` in a process of its own. Its photos are rendered beforehand, on every
  core, into ``--work`` (kept for later runs) and served from memory: the sandbox's rendering is not the
  pipeline's work.
* The model: InceptionV3 at 224 px with RANDOM weights (no download is possible here; the cost does not
  depend on the weights), one output per sandbox model, exported as training exports (dynamic-range int8
  LiteRT), registered and promoted as a version before anything is measured.
* One ``celery -A workers worker -Q <queue>`` process per queue, each with the pool and prefetch that
  ``workers/queues.py`` declares and its declared concurrency (``--concurrency`` changes one). No beat:
  the crawl is sent once, and nothing in the run needs the sweeper. The inference worker's processes
  load the model before the clock starts, as in a running deployment.

Measured in one run:

1. **Each stage alone**, in this process on a scratch database, on the photos of the first ``--sample``
   listings that the crawl yields: ``download_images``, ``dedup_images`` and ``predict_pending`` (the
   functions the workers call, in the workers' batch sizes, the model on the threads one inference
   worker process gets), each timed in CPU seconds (``getrusage``: this process and its children) per
   photo that it handles. The crawl's own cost is printed too.
2. **The limit**: photos/s = cores / (CPU seconds per crawled photo of download + dedup + inference),
   each stage weighted by the share of the run's photos that reach it (dedup: those downloaded;
   inference: the unique ones), the arithmetic printed.
3. **End to end**: ``discovery.crawl`` is sent; the clock runs from then to the last listing-level
   prediction (the database is polled until every photo is through and every listing with a photo has
   its prediction). listings/s and photos/s, and the ratio photos/s / limit. Goal: >= 0.85.
4. **Where the CPU went** during the run (``/proc``): each worker's process tree, PostgreSQL's processes
   for the scratch database and its shared background processes, Redis, the sandbox, this script; the
   machine's busy and idle seconds (other work on a shared machine shows as the rest).

The machine's load average is printed at the start and the end: on a shared machine the end-to-end rate
suffers from other work and the ratio with it. Exit status 1 when the goal is missed or the run does
not finish.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pipeline_stack as stack  # noqa: E402
from scratch import scratch_postgres, worker_env  # noqa: E402

GOAL_RATIO = 0.85
STAGES = ("download", "dedup", "inference")


def cpu_seconds() -> float:
    """CPU seconds of this process and its waited-for children (user + system)."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def chunks(ids: list[int], size: int) -> list[list[int]]:
    return [ids[k:k + size] for k in range(0, len(ids), size)]


class Recorder:
    """A dispatcher that keeps the ids sent to each stage (the stages in this process hand on by it)."""

    def __init__(self):
        self.sent: dict[str, list[int]] = defaultdict(list)

    def __call__(self, stage, ids) -> None:
        self.sent[getattr(stage, "value", stage)].extend(int(i) for i in ids)

    def take(self, stage: str) -> list[int]:
        return sorted(self.sent.pop(stage, []))


def settings_values(args, data: Path, database_url: str, sandbox_url: str, broker_url: str) -> dict:
    """The run's settings (also the workers' environment): the sandbox as the source, its loopback address
    allowed by the SSRF guard, no retraining; then ``--set`` overrides."""
    if data.exists():
        shutil.rmtree(data)
    values = {"data_dir": str(data), "database_url": database_url, "broker_url": broker_url, "source": "sandbox",
              "marketplace_url": sandbox_url, "download_allow_hosts": [sandbox_url.split("//")[1]],
              "retrain_min_new_photos": 10**9, "retrain_min_new_share": 1000.0, "crawl_interval_s": 3600}
    values.update(args.set)
    return values


def prepare(values: dict, bundle: Path):
    """Settings for ``values``, the schema, the model of ``bundle`` registered and promoted."""
    from autodetect.db import upgrade
    from autodetect.settings import configure

    settings = configure(**values)
    upgrade(settings)
    stack.register_and_promote(settings, bundle)
    return settings


# --- 1. each stage alone -----------------------------------------------------------------------------
def measure_stages(args, sandbox_url: str, work: Path, bundle: Path, inference_share: int) -> dict:
    """Each stage's CPU seconds per photo in this process (and, beside them, PostgreSQL's for its queries)."""
    from sqlalchemy.engine import make_url

    from autodetect.images.fetch import Fetcher
    from autodetect.images.store import ImageStore
    from autodetect.pipeline.dedup import dedup_images
    from autodetect.pipeline.discovery import crawl
    from autodetect.pipeline.download import download_images
    from autodetect.sources import open_source
    from autodetect.pipeline.inference import predict_pending

    with scratch_postgres(args.pg, prefix="autodetect_pipe") as url:
        settings = prepare(settings_values(args, work / "stage-data", url, sandbox_url, args.redis), bundle)
        database = make_url(url).database
        pg = stack.CpuMeter({"pg": lambda pid, cmd: cmd.startswith("postgres: ") and f" {database} " in cmd})
        flow, cpu, pg_cpu = Recorder(), {}, {}

        def timed(stage: str, work) -> None:
            if args.analyze:
                analyze(settings)  # the statistics of a running deployment (see ``analyze``)
            pg.sample()
            before, clock = pg.totals()["pg"], cpu_seconds()
            work()
            cpu[stage] = cpu_seconds() - clock
            pg.sample()
            pg_cpu[stage] = pg.totals()["pg"] - before

        timed("discovery", lambda: crawl(settings, open_source(settings), flow, max_listings=args.sample))
        photos = flow.take("download")
        fetcher, store = Fetcher(settings), ImageStore(settings.data_dir / "images")
        timed("download", lambda: [download_images(settings, b, fetcher, store, flow)
                                   for b in chunks(photos, settings.download_batch_size)])
        downloaded = flow.take("dedup")
        timed("dedup", lambda: [dedup_images(settings, b, flow) for b in chunks(downloaded, settings.dedup_batch_size)])
        provider, threads = load_model(settings, inference_share)
        predicted = []
        timed("inference", lambda: predicted.append(predict_pending(settings, provider, budget_s=1e9).predicted))
        count = {"download": len(photos), "dedup": len(downloaded), "inference": predicted[0]}
    return {"cpu": cpu, "pg": pg_cpu, "count": count, "listings": args.sample, "threads": threads,
            "per_photo": {s: cpu[s] / max(1, count[s]) for s in STAGES}}


def load_model(settings, share: int):
    """The active model, loaded and warmed up as an inference worker process has it, on the threads one
    of ``share`` such processes gets; and that thread count."""
    import numpy as np

    from autodetect.db import session_scope
    from autodetect.model.provider import ModelProvider, serving_threads

    threads = serving_threads(settings, share=share)
    provider = ModelProvider(settings, threads=threads)
    with session_scope(settings) as s:
        model = provider.get(s)
    warm = np.zeros((settings.inference_batch_size, model.image_size, model.image_size, 3), np.uint8)
    for _ in range(2):
        model.predict(warm)
    return provider, threads


# --- 3. end to end -----------------------------------------------------------------------------------
def cpu_groups(procs: dict, sandbox_pid: int, database: str) -> dict:
    """Which processes' CPU is counted under which name (their children with them)."""
    pids = {f"{q} worker": p.pid for q, p in procs.items()}

    def pid_is(pid):
        return lambda p, cmd: p == pid

    def postgres_ours(p, cmd):
        return cmd.startswith("postgres: ") and f" {database} " in cmd

    def postgres_shared(p, cmd):  # checkpointer, WAL writer, autovacuum...: no client connection
        return cmd.startswith("postgres: ") and "(" not in cmd and "[local]" not in cmd

    return {**{name: pid_is(pid) for name, pid in pids.items()},
            "postgres, this database's connections": postgres_ours,
            "postgres, background processes": postgres_shared,
            "redis-server": lambda p, cmd: cmd.startswith("redis-server"),
            "sandbox marketplace": pid_is(sandbox_pid), "this script (polls, meter)": pid_is(os.getpid())}


def warm_inference(app, processes: int, log: Path, timeout: float = 120.0) -> None:
    """Each inference worker process loads the active model (a message with no work to do loads it),
    before the clock starts: a running deployment has it loaded."""
    deadline = time.monotonic() + timeout
    while len(re.findall(r"serving model ", log.read_text(errors="replace"))) < processes:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the inference worker's processes did not load the model:\n{log.read_text()[-3000:]}")
        for _ in range(processes):
            app.send_task("inference.predict", args=(None,))
        time.sleep(2.0)


_PROGRESS = """
SELECT (SELECT count(*) FROM listings) AS listings, count(*) AS photos,
       count(*) FILTER (WHERE state IN ('pending', 'running')) AS busy,
       count(*) FILTER (WHERE stage <> 'download') AS downloaded,
       (SELECT count(*) FROM predictions) AS predicted,
       (SELECT count(*) FROM listing_predictions) AS tagged
FROM images"""
_UNTAGGED = """
SELECT DISTINCT i.listing_id FROM images i
WHERE i.state = 'done' AND NOT EXISTS (SELECT 1 FROM listing_predictions p WHERE p.listing_id = i.listing_id)
ORDER BY 1 LIMIT 10"""
#: Seconds every photo may be through while listings still lack their prediction: then one never will.
_UNTAGGED_GRACE_S = 30.0


_TABLE_STATS = """
SELECT relname, seq_scan, seq_tup_read, idx_scan, idx_tup_fetch FROM pg_stat_user_tables
ORDER BY seq_tup_read + coalesce(idx_tup_fetch, 0) DESC LIMIT 4"""
_DATABASE_STATS = """
SELECT sessions, xact_commit + xact_rollback AS transactions, tup_returned + tup_fetched AS rows_read,
       tup_inserted + tup_updated + tup_deleted AS rows_written
FROM pg_stat_database WHERE datname = current_database()"""


def analyze(settings) -> None:
    """``ANALYZE`` the pipeline's tables in the scratch database. They start empty and fill within
    seconds, so until autovacuum's first pass (a minute apart at the least) the planner has no statistics
    and picks plans that a running deployment's tables, analyzed long ago, never get (a sequential scan
    of ``images`` per dedup lookup, claims read through every pending row). The run measures the
    pipeline, not that cold start. The catalogs are left out (ten times the cost)."""
    from sqlalchemy import text

    from autodetect.db import session_scope

    with session_scope(settings) as s:
        s.execute(text("ANALYZE images, listings, predictions, listing_predictions"))


def wait_settled(settings, listings: int, procs: dict, timeout: float, analyzing: bool) -> dict:
    """Poll (one cheap query a second: the poll's own cost is on the machine too) until every listing
    is stored, no photo is pending or running, and every listing with a photo through has its
    prediction; prints the progress every 10 s. ``analyzing``: ANALYZEs 2, 4, 8, 16, 32 s after the
    start, then every minute (the tables' statistics settle as they fill)."""
    from sqlalchemy import text

    from autodetect.db import session_scope

    started = last = time.monotonic()
    next_analyze, through = 2.0, None
    while True:
        time.sleep(1.0)
        now = time.monotonic()
        if analyzing and now - started >= next_analyze:
            analyze(settings)
            next_analyze = min(2 * next_analyze, next_analyze + 60)
        with session_scope(settings) as s:
            state = dict(s.execute(text(_PROGRESS)).mappings().one())
            untagged = s.scalars(text(_UNTAGGED)).all() if not state["busy"] else None
        if state["listings"] >= listings and state["photos"] and untagged is not None:
            if not untagged:
                return state
            through = through or now
            if now - through > _UNTAGGED_GRACE_S:
                raise RuntimeError(f"every photo is through, but listings {untagged} (the first 10) have no "
                                   f"listing prediction after {_UNTAGGED_GRACE_S:.0f} s")
        if now - last >= 10:
            last = now
            print(f"  {now - started:5.0f} s  " + "  ".join(f"{k} {v}" for k, v in state.items()), flush=True)
        dead = [q for q, p in procs.items() if p.poll() is not None]
        if dead or now - started > timeout:
            raise RuntimeError(f"{'workers exited: ' + ', '.join(dead) if dead else 'timed out'}; last state {state}")


def start_workers(settings, values: dict, concurrency: dict, logs: Path) -> tuple[dict, object]:
    """One worker process per queue, answering pings, the inference processes with the model loaded;
    and a Celery client app."""
    from workers.app import make_app
    from workers.queues import QUEUE_NAMES, queue_specs

    specs, env = queue_specs(settings), worker_env(values)
    procs = {q: stack.spawn_worker(specs[q], concurrency[q], env, logs) for q in QUEUE_NAMES}
    app = make_app()
    deadline = time.monotonic() + 120
    while len(app.control.ping(timeout=1.0)) < len(procs):
        if time.monotonic() > deadline or any(p.poll() is not None for p in procs.values()):
            stack.stop(list(procs.values()))
            raise RuntimeError(f"the workers did not start; see {logs}")
    warm_inference(app, concurrency["inference"], logs / "inference.log")
    return procs, app


def clocked_run(args, settings, app, procs: dict, sandbox_pid: int, database: str) -> dict:
    """Send the crawl, wait until the pipeline settled, metering every process's CPU meanwhile."""
    from sqlalchemy import text

    from autodetect.db import session_scope
    from autodetect.storage import utcnow

    meter = stack.CpuMeter(cpu_groups(procs, sandbox_pid, database))
    meter.start()
    load = os.getloadavg()[0]
    with session_scope(settings) as s:
        before = dict(s.execute(text(_DATABASE_STATS)).mappings().one())
    started = utcnow()
    app.send_task("discovery.crawl")
    state = wait_settled(settings, args.listings, procs, args.timeout, args.analyze)
    spent, busy, idle = meter.finish()
    return {**state, "started": started, "spent": spent, "busy": busy, "idle": idle, "load_before": load,
            "db_before": before, "mains": meter.roots({f"{q} worker": p.pid for q, p in procs.items()})}


def outcome(settings, run: dict, logs: Path) -> dict:
    """The run's seconds (its start to the last listing prediction), the photos' fates, PostgreSQL's
    counters over the run (read after the workers stopped: their backends have flushed them), and the
    messages each worker handled (from its log)."""
    from sqlalchemy import func, select, text

    from autodetect.db import session_scope
    from autodetect.storage import Image, ListingPrediction

    with session_scope(settings) as s:
        database = dict(s.execute(text(_DATABASE_STATS)).mappings().one())
        tables = [tuple(r) for r in s.execute(text(_TABLE_STATS)).all()]
        end = s.scalar(select(func.max(ListingPrediction.updated_at)))
        states = dict(s.execute(select(Image.state, func.count()).group_by(Image.state)).all())
        duplicates = s.scalar(select(func.count()).select_from(Image).where(Image.duplicate_of_id.is_not(None)))
    messages = {f"{q.stem} worker": len(re.findall(r"\] succeeded in ", q.read_text(errors="replace")))
                for q in logs.glob("*.log")}
    return {"seconds": (end - run["started"]).total_seconds(), "failed": states.get("failed", 0),
            "duplicates": duplicates, "messages": messages, "logs": logs, "tables": tables,
            "database": {k: v - run["db_before"][k] for k, v in database.items()}}


def run_pipeline(args, sandbox_url: str, sandbox_pid: int, work: Path, bundle: Path, concurrency: dict) -> dict:
    import redis
    from sqlalchemy.engine import make_url

    with scratch_postgres(args.pg, prefix="autodetect_pipe") as url:
        values = settings_values(args, work / "e2e-data", url, sandbox_url, args.redis)
        settings = prepare(values, bundle)
        broker = redis.Redis.from_url(args.redis)
        broker.flushdb()
        logs = work / "logs"
        shutil.rmtree(logs, ignore_errors=True)
        logs.mkdir()
        procs, app = start_workers(settings, values, concurrency, logs)
        try:
            run = clocked_run(args, settings, app, procs, sandbox_pid, make_url(url).database)
        finally:
            stack.stop(list(procs.values()))
            app.close()
            broker.flushdb()
        return {**run, **outcome(settings, run, logs)}


# --- the report --------------------------------------------------------------------------------------
def report(args, stages: dict, e2e: dict, cores: int, concurrency: dict) -> bool:
    per = stages["per_photo"]
    photos = e2e["photos"]
    shares = {"download": 1.0, "dedup": e2e["downloaded"] / photos, "inference": e2e["predicted"] / photos}
    per_crawled = {s: per[s] * shares[s] for s in STAGES}
    limit = cores / sum(per_crawled.values())
    rate = photos / e2e["seconds"]
    ratio = rate / limit
    print(f"\neach stage alone, in one process (first {stages['listings']} listings the crawl yields; the workers' "
          f"batch sizes; the model on {stages['threads']} thread(s), as in one of {concurrency['inference']} "
          "inference worker processes):")
    print(f"  {'stage':<10} {'photos':>7} {'CPU s':>8} {'CPU ms/photo':>13}   beside it, PostgreSQL for its queries")
    for s in STAGES:
        n = max(1, stages["count"][s])
        print(f"  {s:<10} {stages['count'][s]:>7} {stages['cpu'][s]:>8.2f} {per[s] * 1000:>13.2f}   "
              f"{stages['pg'][s]:6.2f} s, {stages['pg'][s] / n * 1000:5.2f} ms/photo")
    print(f"  (the crawl itself: {stages['cpu']['discovery']:.2f} CPU s for {stages['listings']} listings, PostgreSQL "
          f"{stages['pg']['discovery']:.2f} s; not part of the limit, nor is PostgreSQL)")
    terms = " + ".join(f"{per[s] * 1000:.2f} ms x {shares[s]:.3f}" for s in STAGES)
    print(f"\nlimit on this machine: {cores} cores / ({terms}) = {cores} / {sum(per_crawled.values()) * 1000:.2f} ms "
          f"= {limit:.1f} photos/s  ({limit / (photos / e2e['listings']):.2f} listings/s at "
          f"{photos / e2e['listings']:.2f} photos per listing)")
    print(f"  shares: dedup {e2e['downloaded']}/{photos} photos downloaded, inference {e2e['predicted']}/{photos} "
          "unique and predicted (from the end-to-end run)")
    print(f"\nend to end: {e2e['listings']} listings, {photos} photos ({e2e['duplicates']} duplicates, "
          f"{e2e['failed']} failed: the sandbox's bad input), {e2e['tagged']} listings tagged, in {e2e['seconds']:.1f} s")
    print(f"  {e2e['listings'] / e2e['seconds']:.2f} listings/s, {rate:.1f} photos/s; "
          f"{e2e['tagged'] / e2e['seconds']:.2f} listing predictions/s")
    met = ratio >= GOAL_RATIO
    print(f"  ratio end to end / limit: {rate:.1f} / {limit:.1f} = {ratio:.3f}   goal >= {GOAL_RATIO}: "
          f"{'MET' if met else 'MISSED'}")
    print_cpu(e2e, photos, sum(per_crawled.values()) * photos)
    return met


def print_cpu(e2e: dict, photos: int, stage_cpu: float) -> None:
    spent = e2e["spent"]
    ours = sum(spent.values())
    print(f"\nCPU seconds during the run (meter from the crawl's message to the settled poll, "
          f"{e2e['busy'] + e2e['idle']:.0f} core-seconds on the machine):")
    for name, s in sorted(spent.items(), key=lambda kv: -kv[1]):
        detail = ""
        if name in e2e["mains"]:
            detail = f"  ({e2e['messages'][name]} messages; main process {e2e['mains'][name]:.1f} s)"
        print(f"  {name:<40} {s:8.1f} s  {s / photos * 1000:7.2f} ms/photo{detail}")
    print(f"  {'all of the above':<40} {ours:8.1f} s  {ours / photos * 1000:7.2f} ms/photo "
          f"(the stages alone: {stage_cpu:.1f} s, {stage_cpu / photos * 1000:.2f} ms/photo)")
    print(f"  {'other processes on the machine':<40} {max(0.0, e2e['busy'] - ours):8.1f} s")
    print(f"  {'idle':<40} {e2e['idle']:8.1f} s")
    if ours + e2e["idle"] > 0:
        print(f"  the stages' share of the CPU the pipeline had (ours + idle): {stage_cpu / (ours + e2e['idle']):.3f} "
              "(the ratio to expect where nothing else runs)")
    db = e2e["database"]
    print("PostgreSQL during the run (pg_stat_database): " + ", ".join(
        f"{k.replace('_', ' ')} {v} ({v / photos:.1f}/photo)" for k, v in db.items()))
    print("  most read tables (since the database was made): " + "; ".join(
        f"{name} {seq} seq scans ({seq_rows} rows), {idx} index scans ({idx_rows} rows)"
        for name, seq, seq_rows, idx, idx_rows in e2e["tables"]))


def parse_pairs(values: list[str], kind=str) -> dict:
    out = {}
    for item in values:
        key, _, value = item.partition("=")
        out[key.strip()] = kind(value)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listings", type=int, default=2000)
    parser.add_argument("--models", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sample", type=int, default=300, help="listings for the stages measured alone")
    parser.add_argument("--concurrency", action="append", default=[], metavar="QUEUE=N")
    parser.add_argument("--set", action="append", default=[], metavar="SETTING=VALUE",
                        help="a setting for the run (and the workers), e.g. inference_batch_size=32")
    parser.add_argument("--analyze", action=argparse.BooleanOptionalAction, default=True,
                        help="ANALYZE the scratch database's tables as they fill (see analyze())")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds the end-to-end run may take")
    parser.add_argument("--pg", default="postgresql+psycopg2://postgres:postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/12")
    parser.add_argument("--work", type=Path, default=Path("/tmp/autodetect-bench-pipeline"))
    args = parser.parse_args()
    args.set = parse_pairs(args.set)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a timeout's SIGTERM still stops the workers
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    from autodetect.sandbox.marketplace import Marketplace
    from autodetect.settings import configure
    from workers.queues import queue_specs

    cores = len(os.sched_getaffinity(0))
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {cores} cores", flush=True)
    settings = configure(**args.set)
    concurrency = {q: s.concurrency for q, s in queue_specs(settings).items()} | parse_pairs(args.concurrency, int)
    bundle = stack.ensure_bundle(work, Marketplace(0, args.models, args.seed).classes(), size=settings.image_size)
    photos = stack.prerender(work, args.listings, args.models, args.seed, settings.photos_per_listing)
    sandbox, url = stack.start_sandbox(args.listings, args.models, args.seed, photos, work / "sandbox.log")
    try:
        stages = measure_stages(args, url, work, bundle, concurrency["inference"])
        print("stages alone, CPU ms/photo: " + ", ".join(f"{k} {v * 1000:.2f}" for k, v in stages["per_photo"].items()),
              flush=True)
        print(f"end to end: {args.listings} listings; workers (processes or threads): {concurrency}", flush=True)
        e2e = run_pipeline(args, url, sandbox.pid, work, bundle, concurrency)
    finally:
        stack.stop([sandbox])
    e2e["listings"] = args.listings
    met = report(args, stages, e2e, cores, concurrency)
    print(f"\nload average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
          f"(1-min at the clock's start: {e2e['load_before']:.2f}); worker logs in {e2e['logs']}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
