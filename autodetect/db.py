"""Engines, sessions and migrations. The same Alembic migrations serve SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from autodetect.settings import Settings, get_settings

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schema"


@cache
def engine_for(url: str, readonly: bool = False) -> Engine:
    """The process-wide engine for ``url``. On SQLite, writers take the write lock up front
    (``BEGIN IMMEDIATE``); ``readonly`` engines use plain deferred transactions on ``query_only``
    connections, so readers run side by side in WAL mode instead of queueing behind writers."""
    if not url.startswith("sqlite"):
        return engine_for(url) if readonly else create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)
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
        engine_for(url)  # the writer's engine sets WAL mode (persistent in the file)
    return engine


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
        return f"cannot reach the database {settings.database_url}: {str(exc.orig).strip().splitlines()[0]}"
    if current is None:
        return f"the database {settings.database_url} has no schema yet: run `autodetect db upgrade`"
    if current != head:
        return f"the database schema is at {current}, the code needs {head}: run `autodetect db upgrade`"
    return None


def is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def insert_stmt(session: Session, table):
    """A dialect-specific INSERT that supports ``on_conflict_do_*`` (PostgreSQL and SQLite)."""
    if is_postgres(session):
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(table)
