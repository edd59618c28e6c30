"""Engines for SQLite (the default: nothing to start) and PostgreSQL, and schema migration.

SQLite runs in WAL mode with `synchronous=FULL`, so a committed row survives a power cut.
Transactions opened through `writer(engine)` start with `BEGIN IMMEDIATE`, so writers queue
instead of failing half-way with "database is locked"; reads start a deferred transaction,
a snapshot that neither blocks writers nor is blocked by them. PostgreSQL is reached
through psycopg 3.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError

from bastion.errors import BackendUnavailable, ConfigError

MIGRATIONS = Path(__file__).with_name("migrations")


def make_engine(url: str) -> Engine:
    """An engine for `url` (sqlite:///path or postgresql://...), checked to be reachable."""
    try:
        parsed = make_url(url)
    except ArgumentError as err:
        raise ConfigError(f"not a database URL: {url!r}", hint="Use sqlite:///PATH or postgresql://HOST/DB.") from err
    if parsed.drivername in {"postgresql", "postgres"}:
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() == "sqlite":
        engine = _sqlite_engine(url)
    elif parsed.get_backend_name() == "postgresql":
        engine = create_engine(parsed, pool_pre_ping=True, pool_size=5, max_overflow=10)
    else:
        raise ConfigError(
            f"unsupported database {parsed.get_backend_name()!r}", hint="Use SQLite or PostgreSQL."
        )
    try:
        with engine.connect():
            pass
    except OperationalError as err:
        raise BackendUnavailable(f"cannot reach the database at {parsed.render_as_string()}: {err.orig}") from err
    return engine


DATABASE_FILE_MODE = 0o600


def _sqlite_engine(url: str) -> Engine:
    database = make_url(url).database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
        # Created by us, readable by the owner only: token hashes and the audit log live in it.
        # SQLite gives its -wal and -shm files the mode of the database file.
        with contextlib.suppress(FileExistsError):
            os.close(os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL, DATABASE_FILE_MODE))
    engine = create_engine(url, connect_args={"timeout": 30})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # let SQLAlchemy's "begin" event issue BEGIN
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        immediate = connection.get_execution_options().get(_WRITE_OPTION)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


_WRITE_OPTION = "bastion_writes"
_MIGRATION_LOCK = 0x62617374  # "bast": the PostgreSQL advisory lock held while migrating


def writer(engine: Engine) -> Engine:
    """The same engine (same pool), for transactions that will write.

    On SQLite they take the write lock at BEGIN; on PostgreSQL nothing changes.
    """
    return engine.execution_options(**{_WRITE_OPTION: True})


def snapshot(engine: Engine) -> Engine:
    """The same engine, for reads that must see one consistent state across statements."""
    if engine.dialect.name == "postgresql":
        return engine.execution_options(isolation_level="REPEATABLE READ")
    return engine  # a SQLite transaction in WAL mode is a snapshot already


def upgrade(engine: Engine) -> None:
    """Bring the schema to the newest Alembic revision (creates it on an empty database)."""
    from alembic import command  # noqa: PLC0415 - Alembic is only needed when migrating
    from alembic.config import Config  # noqa: PLC0415

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with writer(engine).begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def connect(url: str) -> Engine:
    """An engine whose schema is current: what every command opens.

    Processes starting together on a new database migrate it once: on PostgreSQL they take
    turns on an advisory lock, on SQLite the write lock of the migration's transaction.
    """
    engine = make_engine(url)
    if engine.dialect.name != "postgresql":
        if _behind(engine):
            upgrade(engine)
        return engine
    with engine.connect() as lock:
        lock.exec_driver_sql(f"SELECT pg_advisory_lock({_MIGRATION_LOCK})")
        lock.commit()
        try:
            if _behind(engine):
                upgrade(engine)
        finally:
            lock.exec_driver_sql(f"SELECT pg_advisory_unlock({_MIGRATION_LOCK})")
            lock.commit()
    return engine


def _behind(engine: Engine) -> bool:
    from alembic.runtime.migration import MigrationContext  # noqa: PLC0415
    from alembic.script import ScriptDirectory  # noqa: PLC0415

    if "alembic_version" not in inspect(engine).get_table_names():
        return True
    script = ScriptDirectory(str(MIGRATIONS))
    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
    return current != script.get_current_head()
