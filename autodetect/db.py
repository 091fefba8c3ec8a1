"""Engines, sessions and migrations. The same Alembic migrations serve SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, func, make_url, select
from sqlalchemy.orm import Session, sessionmaker

from autodetect.settings import Settings, get_settings
from autodetect.storage import utcnow

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schema"


def masked_url(url: str) -> str:
    """``url`` with its password replaced by ``***``, for every message and log line."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not even a URL: show its scheme only
        return url.split(":", 1)[0] + ":<unparsable URL>"


@dataclass(frozen=True)
class _PostgresOptions:
    pool_size: int
    max_overflow: int
    connect_timeout_s: int
    statement_timeout_ms: int
    lock_timeout_ms: int
    idle_in_transaction_ms: int

    @classmethod
    def of(cls, settings: Settings) -> "_PostgresOptions":
        return cls(settings.db_pool_size, settings.db_max_overflow, settings.db_connect_timeout_s,
                   int(settings.db_statement_timeout_s * 1000), int(settings.db_lock_timeout_s * 1000),
                   int(settings.db_idle_in_transaction_timeout_s * 1000))

    def engine(self, url: str) -> Engine:
        """Every statement, lock wait and idle transaction has a deadline; connecting has one too."""
        options = (f"-c statement_timeout={self.statement_timeout_ms} -c lock_timeout={self.lock_timeout_ms} "
                   f"-c idle_in_transaction_session_timeout={self.idle_in_transaction_ms}")
        return create_engine(url, pool_pre_ping=True, pool_size=self.pool_size, max_overflow=self.max_overflow,
                             pool_timeout=30, connect_args={"connect_timeout": self.connect_timeout_s,
                                                            "options": options})


def engine_for(url: str, readonly: bool = False) -> Engine:
    """The process-wide engine for ``url``; PostgreSQL engines take their pool sizes and timeouts
    from the process-wide settings."""
    return _engine(url, readonly, None if url.startswith("sqlite") else _PostgresOptions.of(get_settings()))


@cache
def _engine(url: str, readonly: bool, postgres: _PostgresOptions | None) -> Engine:
    """On SQLite, writers take the write lock up front (``BEGIN IMMEDIATE``); ``readonly`` engines use
    plain deferred transactions on ``query_only`` connections, so readers run side by side in WAL
    mode instead of queueing behind writers. PostgreSQL readers share the writers' engine."""
    if postgres is not None:
        return _engine(url, False, postgres) if readonly else postgres.engine(url)
    path = url.split("///", 1)[-1]
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_conn, _record) -> None:  # many threads, one file: WAL + waits
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves, below
        cur = dbapi_conn.cursor()
        if readonly:
            cur.execute("PRAGMA query_only=ON")
        else:
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn) -> None:
        # A deferred transaction that reads and then writes fails at once ("database is locked")
        # when another thread wrote in between; a writer that takes the lock up front waits instead.
        conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")

    if readonly:
        _engine(url, False, None)  # the writer's engine sets WAL mode (persistent in the file)
    return engine


def forget_engines() -> None:
    """Forget this process's engines (a benchmark's scratch database is about to be dropped)."""
    _engine.cache_clear()


def engine(settings: Settings | None = None) -> Engine:
    return engine_for((settings or get_settings()).database_url)


@cache
def _factory(url: str, readonly: bool = False) -> sessionmaker[Session]:
    return sessionmaker(engine_for(url, True) if readonly else engine_for(url), expire_on_commit=False)


@contextmanager
def session_scope(settings: Settings | None = None) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    session = _factory((settings or get_settings()).database_url)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


@contextmanager
def read_scope(settings: Settings | None = None) -> Iterator[Session]:
    """A session for reading only (the API, status, reports)."""
    session = _factory((settings or get_settings()).database_url, True)()
    try:
        yield session
    finally:
        session.rollback()
        session.close()


def alembic_config(settings: Settings | None = None):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(SCHEMA_DIR))
    cfg.set_main_option("sqlalchemy.url", (settings or get_settings()).database_url.replace("%", "%%"))
    return cfg


def upgrade(settings: Settings | None = None, revision: str = "head") -> None:
    """Bring the database to the newest schema (``autodetect db upgrade``)."""
    from alembic import command

    settings = settings or get_settings()
    engine_for(settings.database_url)  # creates the SQLite file's directory
    command.upgrade(alembic_config(settings), revision)


def embedded_sqlite_path(settings: Settings) -> Path | None:
    """The SQLite file of ``settings.database_url`` (the embedded database), or None for a server database."""
    url = make_url(settings.database_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return Path(url.database)


def prepare_schema(settings: Settings | None = None) -> bool:
    """On the embedded SQLite database, create or upgrade the schema on first use (the same Alembic
    migrations), under a file lock beside the file, so that two processes starting together do not
    race: the second waits for the first, then finds the schema at head. Returns whether it upgraded.
    On PostgreSQL it does nothing: ``autodetect db upgrade`` stays an explicit step."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from filelock import FileLock

    settings = settings or get_settings()
    path = embedded_sqlite_path(settings)
    if path is None:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    head = ScriptDirectory.from_config(alembic_config(settings)).get_current_head()
    with FileLock(f"{path}.lock", timeout=settings.schema_lock_timeout_s):
        with engine_for(settings.database_url).connect() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
        if current == head:
            return False
        upgrade(settings)
        return True


def schema_problem(settings: Settings | None = None) -> str | None:
    """None when the database is at the newest schema; otherwise what is wrong and what to run."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from sqlalchemy.exc import OperationalError

    settings = settings or get_settings()
    head = ScriptDirectory.from_config(alembic_config(settings)).get_current_head()
    try:
        with engine_for(settings.database_url, readonly=True).connect() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
    except OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0].replace(str(make_url(settings.database_url).password), "***")
        return f"cannot reach the database {masked_url(settings.database_url)}: {reason}"
    if current is None:
        return f"the database {masked_url(settings.database_url)} has no schema yet: run `autodetect db upgrade`"
    if current != head:
        return f"the database schema is at {current}, the code needs {head}: run `autodetect db upgrade`"
    return None


def db_now(session: Session, after_s: float = 0.0) -> datetime:
    """The database's clock (naive UTC) plus ``after_s`` seconds. On PostgreSQL it is read from the
    server (``now()``: the transaction's start), so that every process compares leases and due times
    on one clock; on SQLite (the embedded default: one machine) it is this machine's clock."""
    if is_postgres(session):
        now = session.execute(select(func.timezone("UTC", func.now()))).scalar_one()
    else:
        now = utcnow()
    return now + timedelta(seconds=after_s)


def is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def insert_stmt(session: Session, table):
    """A dialect-specific INSERT that supports ``on_conflict_do_*`` (PostgreSQL and SQLite)."""
    if is_postgres(session):
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(table)
