"""The fault suite (issue 11): nothing lost, nothing looping, under the faults an operator meets.

Every scenario runs the real pipeline: a PostgreSQL cluster, a Redis (or RabbitMQ) broker and photo
host of its own (``fault_services``: the machine's shared services are never restarted), a separate
``celery -A workers worker -Q <queue>`` process per queue and beat with short intervals (sweeper 1 s,
``stale_after_s`` 5 s, backoff [2, 4, 8, 16, 32] s). It crawls the 60 listings of the sandbox
marketplace (photos served from a second loopback port, so the photo host can fail on its own),
injects its fault mid-run, waits until the pipeline settles and then counts rows:

- every photo of every listing has a row; every listing once (no listing lost, none twice);
- nothing is left ``pending`` or ``running``, no training run is open, one version is active;
- every unique photo has exactly one prediction by the active version, duplicates none, or it is
  ``failed`` with a reason, and only the photos meant to fail do (the sandbox's 404 photo and the
  scenario's poison): no photo failed for the fault itself;
- no two predictions for one (photo, version), no two listings for one (source, external id).

Each scenario prints its counts and the seconds from fault to settled; with ``AUTODETECT_FAULTS_REPORT``
naming a file, it appends them there as a JSON line (``benchmarks/faults.py`` makes the table); with
``AUTODETECT_FAULTS_LOGS`` naming a directory, every scenario's worker logs are kept there.

Leases: a photo claimed by a worker that dies waits for its lease (``Settings.stage_lease_s``: the
stage's task time limit plus half of ``task_margin_s``) before the sweeper takes it back. The suite
sets small batches, per-photo limits and margin, so leases are 15-32 s, not minutes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.pool import NullPool

from autodetect.storage import Image, Listing, ModelVersion, Prediction, TrainingCheck, TrainingRun
from tests.integration.conftest import Stack, client_app, make_stack
from tests.integration.fault_services import (
    CORRUPT_JPEG,
    REDIRECT_MALFORMED,
    FaultMarketplace,
    PostgresCluster,
    RabbitNode,
    RedisServer,
    TmpfsMount,
    alive,
    children,
    forget_cleanup,
    group_members,
    register_cleanup,
    terminate_on_sigterm,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LISTINGS = 60
REPORT_ENV = "AUTODETECT_FAULTS_REPORT"
#: A directory to keep each scenario's worker logs in (pytest's temporary directories are pruned).
LOGS_ENV = "AUTODETECT_FAULTS_LOGS"

#: Every scenario's settings: short intervals, short leases, short backoff (see the module's doc).
BASE = {
    "crawl_interval_s": 3600, "retrain_check_interval_s": 3600,
    "sweeper_interval_s": 1, "stale_after_s": 5,
    "retry_backoff_s": [2, 4, 8, 16, 32], "retry_jitter": 0.1, "max_attempts": 6,
    "download_connect_timeout_s": 1, "download_read_timeout_s": 2, "download_total_timeout_s": 3,
    "download_batch_size": 8, "dedup_batch_size": 8,
    "inference_batch_size": 8, "inference_batch_wait_s": 0.1, "inference_task_budget_s": 3,
    "inference_model_retry_s": 2, "crawl_lease_s": 30,
    # Short task limits, so short leases: a photo claimed by a worker that died is taken back in
    # seconds (download 8 x 3 + 5 s, dedup 8 x 1 + 5 s, inference 3 + 10 + 5 s; a lease is the limit
    # plus half the margin).
    "task_margin_s": 5, "dedup_photo_limit_s": 1, "inference_batch_limit_s": 10,
    "training_heartbeat_s": 1, "training_max_requeues": 2, "training_max_failures": 3,
    "db_statement_timeout_s": 30, "db_lock_timeout_s": 10, "db_connect_timeout_s": 2,
    "dependency_retries": 10, "dependency_backoff_max_s": 4, "db_pool_size": 3, "db_max_overflow": 4,
}
#: Scenarios that train for real: tiny (compact CNN, 48 px, no pretrained weights, a few seconds).
TRAINING = {"retrain_check_interval_s": 2, "train_time_budget_s": 6,
            "train_epochs_head": 30, "min_photos_per_class": 10}
#: Worker processes per queue (pool size) when a scenario does not say otherwise: sized for 2 cores.
WORKERS = {"discovery": 2, "download": 8, "dedup": 1, "inference": 1}


# --- services, one set per module ---------------------------------------------------------------
class Services:
    """The module's throwaway services; RabbitMQ only when a scenario asks for it."""

    def __init__(self):
        from autodetect.sandbox.marketplace import Marketplace

        self.pg = PostgresCluster().start()
        self.redis = RedisServer().start()
        self._rabbit: RabbitNode | None = None
        self.market = Marketplace(listings=LISTINGS, models=3, seed=7)

    @property
    def rabbit(self) -> RabbitNode:
        if self._rabbit is None:
            self._rabbit = RabbitNode().start()
        return self._rabbit

    def ensure_up(self) -> None:
        """After a scenario that stopped a service and failed before starting it again."""
        if not self.pg.running():
            print(f"[faults] PostgreSQL was down: starting it\n{self.pg.log_tail(10)}")
            self.pg.start()
        if self.redis.proc is None or self.redis.proc.poll() is not None:
            print(f"[faults] Redis was down (exit {self.redis.proc and self.redis.proc.returncode}): starting it\n"
                  f"{self.redis.log_tail(10)}")
            self.redis.start()
        if self._rabbit is not None and (self._rabbit.proc is None or self._rabbit.proc.poll() is not None):
            print("[faults] RabbitMQ was down: starting it")
            self._rabbit.start()

    def close(self) -> None:
        for service in (self._rabbit, self.redis, self.pg):
            if service is not None:
                try:
                    service.close()
                except Exception as exc:  # noqa: BLE001 - close the others anyway
                    print(f"[faults] closing {type(service).__name__}: {exc}")


@pytest.fixture(scope="module")
def services():
    restore = terminate_on_sigterm()
    s = Services()
    register_cleanup(s)
    try:
        yield s
    finally:
        s.close()
        forget_cleanup(s)
        restore()


@pytest.fixture
def fault_run(services, tmp_path):
    """Builds one scenario's ``FaultRun`` (its own database, data directory, workers); stops every
    process and drops the database afterwards, whatever happened."""
    runs: list[FaultRun] = []

    def make(name: str, **kwargs) -> FaultRun:
        services.ensure_up()
        run = FaultRun(name, tmp_path / name, services, **kwargs)
        runs.append(run)
        return run

    yield make
    for run in runs:
        run.close()
    services.ensure_up()


# --- one scenario's stack ------------------------------------------------------------------------
class FaultRun:
    def __init__(self, name: str, root: Path, services: Services, *, broker: str = "redis",
                 training: bool = False, poison: dict[str, str] | None = None, **overrides):
        self.name = name
        self.services = services
        self.market = services.market
        self.broker_kind = broker
        if broker == "redis":
            services.redis.flushall()
            broker_url = services.redis.url(0)
        else:
            broker_url = services.rabbit.url
        self.db = f"faults_{name[:30]}_{uuid.uuid4().hex[:8]}"
        self.db_url = services.pg.create_database(self.db)
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.host = FaultMarketplace(self.market, poison=poison).start()
        values = {**BASE, **(TRAINING if training else {}), **overrides,
                  "download_allow_hosts": self.host.allow_hosts}
        self.stack: Stack = make_stack(root, self.db_url, broker_url, self.host.url, **values)
        self.settings = self.stack.settings
        self.app = client_app(self.settings)
        self.engine = create_engine(self.db_url, poolclass=NullPool, connect_args={"connect_timeout": 2})
        self.expected_dead: set[str] = set()
        self.faults: list[dict] = []
        self.t_fault: float | None = None
        self.started = time.monotonic()
        self.notes: dict = {}
        self.problems: list[str] = []
        self.closed = False
        register_cleanup(self)

    # --- processes ------------------------------------------------------------------------------
    def worker(self, queue: str, concurrency: int, name: str | None = None, **env) -> subprocess.Popen:
        from workers.queues import queue_specs

        spec = queue_specs(self.settings)[queue]
        name = name or queue
        self.stack.env.update({k: str(v) for k, v in env.items()})
        return self.stack.spawn(name, ["celery", "-A", "workers", "worker", "-Q", queue, "-P", spec.pool,
                                       "-c", str(concurrency), "--prefetch-multiplier", str(spec.prefetch),
                                       "-n", f"{name}@faults", "-l", "INFO", "--without-gossip", "--without-mingle"])

    def start(self, workers: dict[str, int] | None = None, training: bool = False) -> None:
        workers = dict(workers or WORKERS)
        if training:
            workers.setdefault("training", 1)
        for queue, concurrency in workers.items():
            self.worker(queue, concurrency)
        self.stack.start_beat()
        self.wait(lambda: len(self.app.control.ping(timeout=1.0)) >= len(workers), 120,
                  f"{len(workers)} workers to answer")

    def crawl(self) -> None:
        self.app.send_task("discovery.crawl")

    def kill_worker(self, name: str) -> int:
        """SIGKILL a whole worker (its parent and its pool): the process group."""
        proc = self.stack.procs[name]
        self.expected_dead.add(name)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=20)
        return proc.pid

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        forget_cleanup(self)
        procs = list(self.stack.procs.items())
        for _, proc in procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 10
        for _, proc in procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for _, proc in procs:  # the parent or any pool process still there
            for pid in [proc.pid, *group_members(proc.pid)]:
                try:
                    os.killpg(pid, signal.SIGKILL) if pid == proc.pid else os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        left = [pid for _, proc in procs for pid in group_members(proc.pid)]
        try:
            self.app.close()
        except Exception:  # noqa: BLE001
            pass
        self.host.close()
        self.engine.dispose()
        try:
            self.services.ensure_up()
            self.services.pg.drop_database(self.db)
        except Exception as exc:  # noqa: BLE001 - reported, the cluster goes at the module's end anyway
            print(f"[faults] could not drop {self.db}: {exc}")
        assert not left, f"processes left running after the scenario: {left}"

    # --- waiting --------------------------------------------------------------------------------
    def wait(self, predicate, timeout: float, what: str, poll: float = 0.5, fail: bool = True):
        """``predicate()`` until true. An error from the database or the broker (an outage, a cut
        connection) counts as not yet. A worker that exits unexpectedly fails the scenario at once."""
        deadline = time.monotonic() + timeout
        last_error = None
        while time.monotonic() < deadline:
            try:
                value = predicate()
            except Exception as exc:  # noqa: BLE001 - SQLAlchemy, kombu, redis, socket errors alike
                value, last_error = None, exc
            if value:
                return value
            for name, proc in self.stack.procs.items():
                if name not in self.expected_dead and proc.poll() is not None:
                    pytest.fail(f"{name} exited with {proc.returncode} while waiting for {what}\n{self.log_tail()}")
            time.sleep(poll)
        if fail:
            error = f" (last error: {type(last_error).__name__}: {last_error})" if last_error else ""
            pytest.fail(f"[{self.name}] timed out after {timeout:.0f}s waiting for {what}{error}\n"
                        f"{self.describe()}\n{self.log_tail()}")
        return None

    def scalar(self, sql, **params):
        with self.engine.connect() as conn:
            return conn.execute(sql if not isinstance(sql, str) else text(sql), params).scalar()

    def count(self, *where, model=Image) -> int:
        with self.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(model).where(*where)).scalar_one()

    def db_now(self) -> datetime:
        return self.scalar("SELECT timezone('UTC', now())")

    def wait_downloaded(self, n: int, timeout: float = 120) -> None:
        self.wait(lambda: self.count(Image.stage != "download") >= n, timeout,
                  f"{n} photos past the download stage", poll=0.1)

    def wait_predicted(self, n: int, timeout: float = 120) -> None:
        self.wait(lambda: self.count(model=Prediction) >= n, timeout, f"{n} predictions", poll=0.1)

    def fault(self, what: str, **details) -> None:
        now = time.monotonic()
        if self.t_fault is None:
            self.t_fault = now
        self.faults.append({"what": what, "at_s": round(now - self.started, 1), **details})
        print(f"[faults] {self.name}: {what} at {now - self.started:.1f}s {details or ''}", flush=True)

    # --- the model ------------------------------------------------------------------------------
    def register_colour_model(self, name: str = "v1", classes: list[str] | None = None, *, active: bool = True,
                              broken: bool = False, photos: int = 1_000_000) -> int:
        """A TensorFlow-free ONNX model (``tests/unit/test_inference_support.colour_onnx``) registered
        with the sandbox's classes (accuracy does not matter); ``photos`` in its dataset keeps the
        retraining trigger quiet. ``broken``: its artifact is garbage and cannot be loaded."""
        from autodetect.db import session_scope
        from tests.unit.test_inference_support import register_version

        version_id = register_version(self.settings, name, classes or self.market.classes(), active=active)
        directory = self.settings.data_dir / "models" / name
        if broken:
            (directory / "model.onnx").write_bytes(b"\x08\x07this is not an ONNX model" * 40)
        with session_scope(self.settings) as s:
            s.get(ModelVersion, version_id).dataset = {"photos": photos}
        return version_id

    # --- counting -------------------------------------------------------------------------------
    def expected(self) -> dict:
        """What the marketplace holds: listings, photo URLs (the first ``photos_per_listing`` of each
        listing) and those of them that answer 404 (the sandbox's broken photo)."""
        per = self.settings.photos_per_listing
        listings = {item.item_id: item for item in self.market.listings()}
        paths = [p.path for item in listings.values() for p in item.photos[:per]]
        gone = {p for p in paths if self.market.photo_bytes(p) is None}
        return {"listings": len(listings), "photos": len(paths), "gone": gone}

    def counts(self) -> dict:
        with self.engine.connect() as conn:
            q = lambda stmt: conn.execute(stmt).scalar_one()  # noqa: E731
            active = conn.execute(select(ModelVersion.id, ModelVersion.name)
                                  .where(ModelVersion.status == "active")).all()
            active_id = active[0].id if len(active) == 1 else None
            unique_done = (Image.duplicate_of_id.is_(None), Image.stage == "done", Image.state == "done")
            predicted = select(Prediction.image_id).where(Prediction.model_version_id == active_id)
            by_state = dict(((f"{r[0]}/{r[1]}"), r[2]) for r in conn.execute(
                select(Image.stage, Image.state, func.count()).group_by(Image.stage, Image.state)).all())
            return {
                "listings": q(select(func.count()).select_from(Listing)),
                "photos": q(select(func.count()).select_from(Image)),
                "done": q(select(func.count()).select_from(Image).where(Image.state == "done")),
                "unique": q(select(func.count()).select_from(Image).where(*unique_done)),
                "duplicates": q(select(func.count()).select_from(Image).where(Image.duplicate_of_id.is_not(None))),
                "failed": q(select(func.count()).select_from(Image).where(Image.state == "failed")),
                "failed_with_reason": q(select(func.count()).select_from(Image).where(
                    Image.state == "failed", Image.error.is_not(None), Image.error != "")),
                "in_flight": q(select(func.count()).select_from(Image).where(Image.state.in_(("pending", "running")))),
                "predictions": q(select(func.count()).select_from(Prediction).where(
                    Prediction.model_version_id == active_id)),
                "unpredicted": q(select(func.count()).select_from(Image).where(
                    *unique_done, Image.id.not_in(predicted))),
                "active": [r.name for r in active],
                "open_runs": q(select(func.count()).select_from(TrainingRun).where(
                    TrainingRun.state.in_(("pending", "running")))),
                "runs": q(select(func.count()).select_from(TrainingRun)),
                "by_state": by_state,
            }

    def settled(self) -> bool:
        c = self.counts()
        e = self.expected()
        return (c["listings"] >= e["listings"] and c["photos"] >= e["photos"] and c["in_flight"] == 0
                and c["open_runs"] == 0 and len(c["active"]) == 1 and c["unpredicted"] == 0)

    def settle(self, timeout: float | None = None) -> float:
        """Wait until settled (twice in a row, a second apart); seconds from the first fault."""
        lease = getattr(self.settings, "stage_lease_s", None) or (lambda st: self.settings.stage_time_limit(st) + 30)
        timeout = timeout or 100 + max(lease(st) for st in ("download", "dedup", "inference"))
        streak = {"n": 0}

        def twice() -> bool:
            streak["n"] = streak["n"] + 1 if self.settled() else 0
            return streak["n"] >= 2

        self.wait(twice, timeout, "the pipeline to settle", poll=1.0)
        return time.monotonic() - (self.t_fault or self.started)

    def check(self, allowed_failures: set[str] = frozenset()) -> dict:
        """The suite's row counts (see the module's doc). Problems go to ``self.problems``; returns
        the counts."""
        e = self.expected()
        c = self.counts()
        p = self.problems
        with self.engine.connect() as conn:
            if c["listings"] != e["listings"]:
                p.append(f"{c['listings']} listings stored, the marketplace has {e['listings']}")
            twice = conn.execute(select(Listing.source, Listing.external_id)
                                 .group_by(Listing.source, Listing.external_id).having(func.count() > 1)).all()
            if twice:
                p.append(f"listings stored twice: {twice[:5]}")
            if c["photos"] != e["photos"]:
                p.append(f"{c['photos']} photo rows, the listings have {e['photos']} photos")
            if c["in_flight"]:
                p.append(f"{c['in_flight']} photos left pending or running: {c['by_state']}")
            if len(c["active"]) != 1:
                p.append(f"active versions: {c['active']}")
            if c["open_runs"]:
                p.append(f"{c['open_runs']} training runs left pending or running")
            active_id = conn.execute(select(ModelVersion.id).where(ModelVersion.status == "active")).scalars().first()
            per_photo = dict(conn.execute(select(Prediction.image_id, func.count()).where(
                Prediction.model_version_id == active_id).group_by(Prediction.image_id)).all())
            rows = conn.execute(select(Image.id, Image.url, Image.stage, Image.state, Image.error,
                                       Image.duplicate_of_id, Image.attempts)).all()
            doubled = conn.execute(select(Prediction.image_id, Prediction.model_version_id)
                                   .group_by(Prediction.image_id, Prediction.model_version_id)
                                   .having(func.count() > 1)).all()
            if doubled:
                p.append(f"photos predicted twice by one version: {doubled[:5]}")
        allowed = set(e["gone"]) | set(allowed_failures)
        unexpected = Counter()
        unpredicted, predicted_twice, duplicates_predicted, no_reason = [], [], [], []
        for r in rows:
            path = urlsplit(r.url).path
            if r.state == "failed":
                if not r.error:
                    no_reason.append(r.id)
                if path not in allowed:
                    unexpected[f"{r.stage}: {r.error}"] += 1
            elif r.state == "done" and r.stage == "done":
                n = per_photo.get(r.id, 0)
                if r.duplicate_of_id is None and n != 1:
                    (unpredicted if n == 0 else predicted_twice).append(r.id)
                if r.duplicate_of_id is not None and n:
                    duplicates_predicted.append(r.id)
            if path in e["gone"] and r.state != "failed":
                p.append(f"photo {r.id} ({path}) answers 404 but ended {r.stage}/{r.state}")
        for ids, what in ((no_reason, "failed without a reason"),
                          (unpredicted, "unique and done, without a prediction by the active version"),
                          (predicted_twice, "unique and done, with several predictions by the active version"),
                          (duplicates_predicted, "duplicates predicted themselves")):
            if ids:
                p.append(f"{len(ids)} photos {what} (e.g. {sorted(ids)[:5]})")
        if unexpected:
            p.append(f"{sum(unexpected.values())} photos failed that should not have: "
                     f"{dict(unexpected.most_common(5))}")
        c["failure_reasons"] = dict(Counter(r.error for r in rows if r.state == "failed").most_common(6))
        return c

    def finish(self, allowed_failures: set[str] = frozenset(), settle_timeout: float | None = None,
               extra=None) -> dict:
        """Settle, count, run the scenario's own checks (``extra(counts)``, which may add to
        ``problems`` and ``notes``), print and report; then fail with every problem found."""
        try:
            seconds = self.settle(settle_timeout)
        except pytest.fail.Exception as exc:
            seconds = None
            self.problems.append(f"did not settle: {str(exc).splitlines()[0]}")
        c = self.check(allowed_failures)
        if extra is not None:
            try:
                extra(c)
            except Exception as exc:  # noqa: BLE001 - reported with the rest
                self.problems.append(f"scenario check raised {type(exc).__name__}: {exc}")
        line = {
            "scenario": self.name, "broker": self.broker_kind, "listings": c["listings"], "photos": c["photos"],
            "done": c["done"], "unique": c["unique"], "duplicates": c["duplicates"], "failed": c["failed"],
            "failed_with_reason": c["failed_with_reason"], "predictions": c["predictions"],
            "active": c["active"], "training_runs": c["runs"],
            "fault_to_settled_s": None if seconds is None else round(seconds, 1),
            "wall_s": round(time.monotonic() - self.started, 1), "faults": self.faults,
            "failure_reasons": c["failure_reasons"], "notes": self.notes, "problems": self.problems,
            "passed": not self.problems, "at": datetime.now().isoformat(timespec="seconds"),
        }
        print(f"\n[faults] {self.name} ({self.broker_kind}): listings {c['listings']}, photos {c['photos']}: "
              f"done {c['done']} (unique {c['unique']}, duplicates {c['duplicates']}), failed {c['failed']} "
              f"({c['failed_with_reason']} with a reason), predictions {c['predictions']} by {c['active']}; "
              f"fault -> settled {line['fault_to_settled_s']} s; wall {line['wall_s']} s", flush=True)
        if self.notes:
            print(f"[faults] {self.name} notes: {json.dumps(self.notes, default=str)}", flush=True)
        keep = os.environ.get(LOGS_ENV)
        if keep:
            import shutil

            target = Path(keep) / f"{self.name}-{datetime.now():%Y%m%d-%H%M%S}"
            shutil.copytree(self.stack.logs, target, dirs_exist_ok=True)
            (target / "describe.txt").write_text(self.describe())
            line["logs"] = str(target)
        report = os.environ.get(REPORT_ENV)
        if report:
            with open(report, "a") as fh:
                fh.write(json.dumps(line, default=str) + "\n")
        if self.problems:
            pytest.fail(f"[{self.name}] " + "\n".join(self.problems) + f"\n{self.describe()}\n{self.log_tail()}",
                        pytrace=False)
        return c

    # --- diagnostics ----------------------------------------------------------------------------
    def describe(self) -> str:
        try:
            c = self.counts()
            with self.engine.connect() as conn:
                reasons = conn.execute(select(Image.stage, Image.state, Image.error, func.count())
                                       .where(Image.error.is_not(None))
                                       .group_by(Image.stage, Image.state, Image.error).limit(12)).all()
                runs = conn.execute(select(TrainingRun.id, TrainingRun.state, TrainingRun.error)).all()
                versions = conn.execute(select(ModelVersion.name, ModelVersion.status)).all()
            return (f"counts: {c}\nreasons: {[tuple(r) for r in reasons]}\nruns: {[tuple(r) for r in runs]}\n"
                    f"versions: {[tuple(r) for r in versions]}")
        except Exception as exc:  # noqa: BLE001 - the database may be the fault
            return f"(counts unavailable: {exc})"

    def log_tail(self, lines: int = 25) -> str:
        """The last lines of every process's log, after its count of tracebacks and its CRITICAL
        lines (a worker whose consumer died without exiting shows only there)."""
        out = []
        for f in sorted(self.stack.logs.glob("*.log")):
            text_ = f.read_text(errors="replace")
            critical = [line[:300] for line in text_.splitlines() if "CRITICAL/" in line]
            out.append(f"--- {f.name} ({text_.count('Traceback')} tracebacks)\n"
                       + "".join(f"    {line}\n" for line in critical[:3])
                       + "\n".join(text_.splitlines()[-lines:]))
        return "\n".join(out)

    # --- prefork children -----------------------------------------------------------------------
    def busy_child(self, worker: str) -> int | None:
        """The pool process of ``worker`` that is running a task: the one burning CPU (30 ms of
        samples), else the worker's own answer (``inspect active``: ``worker_pid``, about a second)."""
        parent = self.stack.procs[worker].pid
        pool = children(parent)

        def cpu(pid: int) -> int:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                return int(fields[11]) + int(fields[12])
            except OSError:
                return 0

        before = {pid: cpu(pid) for pid in pool}
        time.sleep(0.03)
        used = {pid: cpu(pid) - before[pid] for pid in pool}
        if used and max(used.values()) > 0:
            return max(used, key=used.get)
        try:
            active = self.app.control.inspect(destination=[f"{worker}@faults"], timeout=1.0, limit=1).active() or {}
        except Exception:  # noqa: BLE001 - the broker may be busy
            active = {}
        for tasks in active.values():
            for task in tasks:
                if task.get("worker_pid") in pool:
                    return task["worker_pid"]
        return None

    def kill_child_mid_batch(self, worker: str, stage: str, tries: int = 8, check_after_s: float = 3.0) -> dict:
        """SIGKILL one pool process of ``worker`` while it holds claimed rows of ``stage``: shown
        when rows claimed before the kill are still ``running`` ``check_after_s`` later (a live
        process finishes its batch sooner). A kill that orphans nothing is tried again while the
        stage has work. If no row of ``stage`` is ever seen claimed, the busy pool process is killed
        anyway (the kill is then not known to be mid-batch). Returns what happened."""
        earlier = {"download": ("download",), "dedup": ("download", "dedup"),
                   "inference": ("download", "dedup", "inference")}[stage]
        result = {"pid": None, "orphaned_rows": 0, "tries": 0, "claims_seen": False}
        for attempt in range(1, tries + 1):
            result["tries"] = attempt
            claimed = self.wait(lambda: self.count(Image.stage == stage, Image.state == "running") > 0, 30,
                                f"{stage} rows being worked on", poll=0.01, fail=False)
            result["claims_seen"] = result["claims_seen"] or bool(claimed)
            if not claimed and not self.count(Image.stage.in_(earlier), Image.state.in_(("pending", "running"))):
                break  # the stage has no work left: too late
            pid, search_until = None, time.monotonic() + 3
            while pid is None and time.monotonic() < search_until:
                pid = self.busy_child(worker)
            if pid is None:
                continue
            at = self.db_now()
            os.kill(pid, signal.SIGKILL)
            self.fault(f"SIGKILL pool process of {worker}", pid=pid, attempt=attempt)
            result["pid"] = pid
            if not claimed:
                break
            time.sleep(check_after_s)
            orphans = self.count(Image.stage == stage, Image.state == "running", Image.updated_at <= at)
            if orphans:
                result["orphaned_rows"] = orphans
                break
        return result


def _send_ids(app, settings, stage: str, ids) -> None:
    """What ``workers.dispatch`` does, from the test process (its app is this scenario's)."""
    ids = [int(i) for i in ids]
    if stage == "inference":
        for i in ids[:: max(1, settings.inference_batch_size)]:
            app.send_task("inference.predict", args=(i,))
    else:
        size = {"download": settings.download_batch_size, "dedup": settings.dedup_batch_size}[stage]
        for k in range(0, len(ids), size):
            app.send_task(f"{stage}.{'fetch' if stage == 'download' else 'check'}", args=(ids[k:k + size],))


def _photo_paths(market, *, listing_from: int, count: int, position: int = 0) -> list[str]:
    """Photo paths of ``count`` ordinary listings from ``listing_from`` on (a car photo at
    ``position``, not a copy of another listing's photo, not the sandbox's broken one)."""
    out = []
    for i in range(listing_from, len(market)):
        listing = market.listing(i)
        if len(listing.photos) <= position or listing.relist_of is not None:
            continue
        photo = listing.photos[position]
        if photo.kind != "car" or photo.original or market.photo_bytes(photo.path) is None:
            continue
        if any(p.original == photo.path for other in market.listings() for p in other.photos):
            continue  # a later listing copies it: keep the duplicate bookkeeping out of this
        out.append(photo.path)
        if len(out) == count:
            return out
    raise AssertionError("not enough ordinary listings for the poison photos")


# --- 1. prefork children -------------------------------------------------------------------------
def test_sigkill_one_prefork_child_of_inference_and_of_dedup(fault_run):
    """One pool process of the dedup worker and one of the inference worker are SIGKILLed while they
    hold claimed batches; the workers themselves live on (a new pool process replaces the dead one).
    The claimed rows wait for their lease, then the sweeper counts the loss and sends them again.
    The photo host answers slowly (0.3 s a photo) so that dedup batches keep arriving for a while,
    and each inference batch pauses 1.5 s (``inference_test_delay_s``) so that it is killed inside one."""
    delay = 1.5
    run = fault_run("prefork_children_killed", inference_test_delay_s=delay)
    run.register_colour_model()
    run.start({"discovery": 2, "download": 8, "dedup": 2, "inference": 2})
    run.host.photos.delay_s = 0.3
    run.crawl()
    run.wait_downloaded(8)
    dedup = run.kill_child_mid_batch("dedup", "dedup")
    run.host.photos.delay_s = 0.0
    inference = run.kill_child_mid_batch("inference", "inference", check_after_s=2 * delay + 2)
    run.notes.update(dedup=dedup, inference=inference)
    for worker in ("dedup", "inference"):
        parent = run.stack.procs[worker].pid
        if not alive(parent):
            run.problems.append(f"the {worker} worker itself died with its pool process")
        elif not run.wait(lambda p=parent: len(children(p)) >= 2, 30, f"the {worker} pool to refill", fail=False):
            run.problems.append(f"the {worker} worker did not replace its killed pool process")
    for what, kill in (("dedup", dedup), ("inference", inference)):
        if kill["pid"] is None:
            run.problems.append(f"no busy {what} pool process found to kill ({kill['tries']} tries)")
        elif not kill["claims_seen"]:
            run.problems.append(f"no {what} row was ever seen claimed (state running with a lease): the pool "
                                "process was killed busy, but not provably mid-batch")
        elif not kill["orphaned_rows"]:
            run.problems.append(f"no {what} pool process was killed holding claimed rows ({kill['tries']} tries)")
    run.finish()


# --- 2. whole workers ----------------------------------------------------------------------------
def test_sigkill_whole_download_worker_mid_batch(fault_run):
    """The download worker (parent and threads) is SIGKILLed while its batches are half fetched; a new
    download worker starts. The claimed photos wait for their lease and are sent again."""
    run = fault_run("download_worker_killed")
    run.register_colour_model()
    run.start()
    run.host.photos.delay_s = 0.15  # a batch of 8 takes over a second
    run.crawl()
    run.wait_downloaded(8)
    run.wait(lambda: run.count(Image.stage == "download", Image.state == "running") > 0, 60,
             "downloads being worked on", poll=0.02)
    claimed = run.count(Image.stage == "download", Image.state == "running")
    pid = run.kill_worker("download")
    run.fault("SIGKILL download worker", pid=pid, claimed_rows=claimed)
    run.host.photos.delay_s = 0.0
    run.worker("download", WORKERS["download"], name="download2")
    run.notes["claimed_at_kill"] = claimed
    run.finish()


def test_sigkill_training_worker_mid_run(fault_run):
    """No model yet: the first training run starts (real, tiny); its worker is SIGKILLed mid-run and
    a new training worker started. The sweeper finds the run's heartbeat silent and puts it back (a
    bounded number of times); it trains again and is promoted; every photo is then predicted."""
    run = fault_run("training_worker_killed", training=True)
    run.start(training=True)
    run.crawl()
    run.wait(lambda: run.count(TrainingRun.state == "running", model=TrainingRun) > 0, 300, "a training run to start")
    started = time.monotonic()
    # mid-run: past TensorFlow's import and the dataset (a heartbeat, or a few seconds), before the end
    run.wait(lambda: run.count(TrainingRun.heartbeat_at.is_not(None), model=TrainingRun) > 0
             or time.monotonic() - started > 8, 60, "the run's first heartbeat")
    time.sleep(2)
    running = run.count(TrainingRun.state == "running", model=TrainingRun)
    pid = run.kill_worker("training")
    run.fault("SIGKILL training worker", pid=pid, running_runs=running)
    run.worker("training", 1, name="training2")

    def runs_bounded(c):
        with run.engine.connect() as conn:
            runs = conn.execute(select(TrainingRun.id, TrainingRun.state, TrainingRun.requeues,
                                       TrainingRun.error)).all()
        run.notes["runs"] = [tuple(r) for r in runs]
        if running != 1:
            run.problems.append(f"{running} runs were running when the worker was killed (expected 1)")
        if any(r.requeues > run.settings.training_max_requeues for r in runs):
            run.problems.append(f"a run was re-queued more than {run.settings.training_max_requeues} times")
        if not any(r.state == "done" for r in runs):
            run.problems.append("no training run finished after the kill")

    run.finish(extra=runs_bounded)


# --- 3-5. restarts of PostgreSQL and the brokers -------------------------------------------------
def test_postgresql_restarted_mid_run(fault_run, services):
    """PostgreSQL stops (every connection cut) in the middle of the run, stays down 20 s, starts."""
    run = fault_run("postgresql_restarted")
    run.register_colour_model()
    run.start()
    run.crawl()
    run.wait_downloaded(30)
    run.fault("PostgreSQL stopped")
    services.pg.stop("fast")
    time.sleep(20)
    services.pg.start()
    run.faults.append({"what": "PostgreSQL started", "at_s": round(time.monotonic() - run.started, 1)})
    run.finish()


def test_redis_restarted_mid_run_with_nothing_persisted(fault_run, services):
    """The Redis broker is killed mid-run and started empty: every queued and unacknowledged
    message is gone; the sweeper re-sends from the rows."""
    run = fault_run("redis_restarted")
    run.register_colour_model()
    run.start()
    run.crawl()
    run.wait_downloaded(30)
    run.fault("Redis killed")
    services.redis.restart(down_s=3)
    run.finish()


def test_rabbitmq_restarted_mid_run(fault_run, services):
    """The same run on RabbitMQ as broker; the node stops mid-run and starts again."""
    run = fault_run("rabbitmq_restarted", broker="amqp")
    run.register_colour_model()
    run.start()
    run.crawl()
    run.wait_downloaded(30)
    run.fault("RabbitMQ stopped")
    services.rabbit.restart(down_s=3)
    run.finish()


# --- 6. the photo host down ----------------------------------------------------------------------
def test_photo_host_down_for_60s(fault_run):
    """The photo host refuses connections for 60 s mid-run (the API stays up), then comes back: the
    photos tried meanwhile back off and finish; none fails for the outage."""
    run = fault_run("photo_host_down_60s", max_attempts=10)  # 2+4+8+16+32+32+... s: past the outage
    run.register_colour_model()
    run.start()
    run.host.photos.delay_s = 0.03
    run.crawl()
    run.wait_downloaded(20)
    run.fault("photo host down")
    run.host.photos.stop()
    time.sleep(30)
    refused = run.count(Image.stage == "download", Image.error.is_not(None))
    time.sleep(30)
    run.host.photos.start()
    run.host.photos.delay_s = 0.0
    run.faults.append({"what": "photo host back", "at_s": round(time.monotonic() - run.started, 1)})
    run.notes["waiting_with_a_reason_during_outage"] = refused
    if not refused:
        run.problems.append("no photo recorded a reason while the photo host was down")
    run.finish()


# --- 7. poison ----------------------------------------------------------------------------------
def test_poison_inputs_fail_alone(fault_run, services):
    """Two photos redirect to ``http://[::1`` (a malformed URL), two are JPEGs that raise inside decode,
    and mid-run a version whose artifact cannot be loaded is promoted. Each poison ends ``failed`` with
    a reason within the bounded attempts; no other photo waits more than one retry interval (30 s
    here) longer than the others from its download to its prediction; the version that cannot load
    ends ``failed`` with a reason and the loadable one is active again and predicts every photo."""
    from autodetect.db import session_scope
    from autodetect.model.registry import promote

    backoff = [30, 60, 120]
    market = services.market
    poison = {p: REDIRECT_MALFORMED for p in _photo_paths(market, listing_from=5, count=2, position=1)}
    poison.update({p: CORRUPT_JPEG for p in _photo_paths(market, listing_from=30, count=2, position=0)})
    run = fault_run("poison_inputs", poison=poison, retry_backoff_s=backoff, max_attempts=3)
    interval = backoff[0] * (1 + run.settings.retry_jitter)
    run.register_colour_model("v1")
    run.start()
    run.crawl()
    run.fault("poison photos served", photos=len(poison))
    run.wait_predicted(24)
    broken = run.register_colour_model("v2-broken", active=False, broken=True)
    with session_scope(run.settings) as s:
        promote(s, s.get(ModelVersion, broken))
    run.fault("a version whose artifact cannot load promoted", version="v2-broken")

    def poison_checks(c):
        with run.engine.connect() as conn:
            rows = conn.execute(select(Image.id, Image.url, Image.state, Image.error, Image.attempts,
                                       Image.duplicate_of_id)).all()
            created = dict(conn.execute(select(Prediction.image_id, func.min(Prediction.created_at))
                                        .group_by(Prediction.image_id)).all())
            versions = {r.name: r for r in conn.execute(select(ModelVersion)).all()}
        by_path = {urlsplit(r.url).path: r for r in rows}
        for path, kind in poison.items():
            r = by_path.get(path)
            if r is None or r.state != "failed" or not r.error:
                run.problems.append(f"poison {kind} {path} ended {r and (r.state, r.error)}")
            elif r.attempts > run.settings.max_attempts:
                run.problems.append(f"poison {kind} {path} tried {r.attempts} times (max {run.settings.max_attempts})")
        run.notes["poison"] = {kind + " " + p: by_path[p] and (by_path[p].state, by_path[p].error, by_path[p].attempts)
                               for p, kind in poison.items() if p in by_path}
        # From the photo host's first answer for a photo to the first prediction of it (or of its original).
        delays = []
        for path, t0 in run.host.photos.first_request().items():
            r = by_path.get(path)
            if r is None or path in poison or r.state != "done":
                continue
            image_id = r.duplicate_of_id or r.id
            if image_id in created:
                delays.append((created[image_id] - datetime.utcfromtimestamp(t0)).total_seconds())
        delays.sort()
        if delays:
            median = delays[len(delays) // 2]
            run.notes["delay_s"] = {"median": round(median, 1), "max": round(delays[-1], 1),
                                    "one_interval": round(interval, 1)}
            if delays[-1] > median + interval + 15:
                run.problems.append(f"a photo waited {delays[-1]:.0f}s from download to prediction (median "
                                    f"{median:.0f}s, one retry interval {interval:.0f}s)")
        v2 = versions.get("v2-broken")
        reason = v2 is not None and (getattr(v2, "error", None) or getattr(v2, "reason", None)
                                     or (v2.metrics or {}).get("error") or (v2.metrics or {}).get("load_error"))
        run.notes["broken_version"] = v2 and {"status": v2.status, "reason": reason}
        if v2 is None or v2.status != "failed" or not reason:
            run.problems.append(f"the version that cannot load ended {v2 and v2.status!r} with reason {reason!r}; "
                                "expected 'failed' with a reason")
        if c["active"] != ["v1"]:
            run.problems.append(f"active after the broken promotion: {c['active']} (expected the loadable v1 back)")

    run.finish(allowed_failures=set(poison), extra=poison_checks)


# --- 8. the image store's disk full --------------------------------------------------------------
@pytest.mark.skipif(not TmpfsMount.available(), reason="mounting a tmpfs needs root")
def test_image_store_disk_full_then_freed(fault_run):
    """The image store is a 64 MiB tmpfs; mid-run a filler file takes all its space (ENOSPC), 20 s
    later it is deleted. The photos tried meanwhile wait with a reason that says so and finish."""
    run = fault_run("image_store_full")
    mount = TmpfsMount(run.settings.data_dir / "images", size_mb=64).start()
    try:
        run.register_colour_model()
        run.start()
        run.host.photos.delay_s = 0.15  # downloads keep coming for a while after the disk fills
        run.crawl()
        run.wait_downloaded(20)
        run.fault("image store full")
        mount.fill()

        def waiting_for_space():
            with run.engine.connect() as conn:
                return conn.execute(select(func.count()).select_from(Image).where(
                    Image.state.in_(("pending", "running", "failed")), Image.error.ilike("%space%"))).scalar_one()
        seen = run.wait(waiting_for_space, 60, "a photo waiting for space with a reason", poll=0.2, fail=False) or 0
        with run.engine.connect() as conn:
            reasons = conn.execute(select(Image.error).where(Image.error.is_not(None)).distinct()
                                   .limit(5)).scalars().all()
        time.sleep(20)
        mount.free()
        run.host.photos.delay_s = 0.0
        run.faults.append({"what": "space freed", "at_s": round(time.monotonic() - run.started, 1)})
        run.notes.update(waiting_with_reason=seen, reasons_while_full=reasons)
        if not seen:
            run.problems.append(f"no photo recorded running out of space (reasons seen: {reasons})")
        run.finish()
    finally:
        # the workers may hold files on the mount: stop them before unmounting
        for proc in run.stack.procs.values():
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for proc in run.stack.procs.values():
            proc.wait(timeout=20)
        mount.close()


# --- 9. two promotions at once --------------------------------------------------------------------
def test_two_promotions_at_once(fault_run):
    """Mid-run two versions are promoted at the same moment from two transactions: the schema lets
    exactly one win, the other gets a clear ``RegistryError``; the winner re-tags the catalogue and
    the pipeline goes on."""
    from autodetect.db import session_scope
    from autodetect.model.registry import RegistryError, promote
    from autodetect.pipeline.tagging import queue_for_tagging

    run = fault_run("two_promotions")
    run.register_colour_model("v1")
    run.start()
    run.crawl()
    run.wait_predicted(16)
    v2 = run.register_colour_model("v2", active=False)
    v3 = run.register_colour_model("v3", active=False)
    outcome: dict[str, object] = {}

    def second():
        try:
            with session_scope(run.settings) as s:
                promote(s, s.get(ModelVersion, v3))
            outcome["v3"] = "promoted"
        except RegistryError as exc:
            outcome["v3"] = exc
        except Exception as exc:  # noqa: BLE001 - anything else is a finding
            outcome["v3"] = exc

    run.fault("two promotions at once", versions=["v2", "v3"])
    other = threading.Thread(target=second)
    with session_scope(run.settings) as s:
        promote(s, s.get(ModelVersion, v2))  # retired v1, v2 active: not committed yet
        other.start()
        # the second promotion waits on the first one's row locks: both transactions are open
        waiting = "SELECT count(*) FROM pg_stat_activity WHERE datname = :d AND wait_event_type = 'Lock'"
        run.wait(lambda: run.scalar(waiting, d=run.db) >= 1 or not other.is_alive(), 15,
                 "the second promotion to wait on the first")
        outcome["v2"] = "promoted"
    other.join(timeout=30)
    run.notes["promotions"] = {k: str(v) for k, v in outcome.items()}
    with run.engine.connect() as conn:
        statuses = dict(conn.execute(select(ModelVersion.name, ModelVersion.status)).all())
    assert [n for n, st in statuses.items() if st == "active"] == ["v2"], statuses
    assert isinstance(outcome.get("v3"), RegistryError), f"the second promotion: {outcome.get('v3')!r}"
    assert "v3" in str(outcome["v3"]) and "another version" in str(outcome["v3"]), str(outcome["v3"])
    with session_scope(run.settings) as s:  # what `autodetect tag` does after a promotion
        ids = queue_for_tagging(s, "missing", v2)
    _send_ids(run.app, run.settings, "inference", ids)
    run.notes["retagged"] = len(ids)
    run.finish()


# --- 10. a training run that fails deterministically -----------------------------------------------
def test_deterministic_training_failure_is_retried_a_bounded_number_of_times(fault_run):
    """The active version knows two of the three classes, so every retraining check wants a new
    model; every run fails the same way (an unknown backbone: ``ValueError`` once TensorFlow is
    loaded). The training worker starts once every photo is through (so every run sees the same
    data). Time is compressed by settings, not faked: the check runs every second instead of every
    5 minutes and the backoff between failed runs is [2, 4, 8, 16, 32] s; the suite waits for at
    least 36 checks after the first failure (3 hours of checks at the production interval, well over
    30 minutes). At most ``training_max_failures`` runs may start on the same data."""
    run = fault_run("training_fails_deterministically", training=True, backbone="no_such_backbone",
                    retrain_check_interval_s=1)
    classes = run.market.classes()
    run.register_colour_model("v1", classes[:2], photos=0)
    run.start()
    run.crawl()
    run.wait(lambda: run.settled(), 180, "every photo through the pipeline")
    run.worker("training", 1)
    run.wait(lambda: run.count(TrainingRun.state == "failed", model=TrainingRun) > 0, 300, "the first failed run")
    run.fault("first training run failed")
    first_failed = run.scalar(select(func.min(TrainingRun.finished_at)))
    run.wait(lambda: run.count(TrainingCheck.at > first_failed, model=TrainingCheck) >= 36, 180,
             "36 retraining checks after the first failure", poll=1.0)

    def bounded(c):
        with run.engine.connect() as conn:
            runs = conn.execute(select(TrainingRun.id, TrainingRun.state, TrainingRun.error,
                                       TrainingRun.data_key)).all()
            checks = conn.execute(select(func.count()).select_from(TrainingCheck)).scalar_one()
            fired = conn.execute(select(func.count()).select_from(TrainingCheck).where(TrainingCheck.fire)).scalar_one()
            last = conn.execute(select(TrainingCheck.reason).order_by(TrainingCheck.id.desc()).limit(1)).scalar()
        run.notes.update(runs=len(runs), checks=checks, fired=fired, last_reason=last,
                         data_keys=dict(Counter(r.data_key for r in runs)),
                         errors=sorted({(r.error or "")[:120] for r in runs}))
        if len(runs) > run.settings.training_max_failures:
            run.problems.append(f"{len(runs)} training runs over {checks} checks "
                                f"(at most {run.settings.training_max_failures} on the same data)")
        if not all(r.state == "failed" and r.error for r in runs):
            run.problems.append(f"runs not failed with a reason: {[tuple(r) for r in runs]}")
        if c["active"] != ["v1"]:
            run.problems.append(f"active: {c['active']}")

    run.finish(settle_timeout=150, extra=bounded)
