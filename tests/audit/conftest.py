"""Real databases for the audit tests: a fresh SQLite file or a fresh PostgreSQL database each.

PostgreSQL is reached at BASTION_TEST_POSTGRES (default: the `test` database on 127.0.0.1 as
`postgres`, trust auth); each test process migrates one `bastion_test_<random>` database, whose
audit tables are emptied before each test, and drops it at the end. If PostgreSQL is unreachable
its cases are skipped, except under CI, where they fail.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from bastion.db import connect
from bastion.sign.keys import PrivateKey, generate_key
from corpus.hang_guard import HANG_GUARD

PG_ADMIN_URL = os.environ.get("BASTION_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def _under_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in {"", "0", "false", "no"}


def _admin() -> psycopg.Connection:
    try:
        return psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=int(HANG_GUARD))
    except psycopg.OperationalError as err:
        message = f"PostgreSQL is not reachable at {PG_ADMIN_URL}: {err}"
        if _under_ci():
            pytest.fail(message)
        pytest.skip(message)


def _drop_postgres(name: str) -> None:
    with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=int(HANG_GUARD)) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def _fresh_postgres_database() -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database, dropped on exit."""
    name = f"bastion_test_{secrets.token_hex(6)}"
    with _admin() as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        _drop_postgres(name)


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """One migrated database per test process: creating one costs more than most tests."""
    with _fresh_postgres_database() as url:
        connect(url).dispose()
        yield url


@pytest.fixture
def empty_postgres_url() -> Iterator[str]:
    """A new PostgreSQL database with no schema at all."""
    with _fresh_postgres_database() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a database of each kind whose audit tables are empty."""
    if request.param == "sqlite":
        # In a folder of its own, so that removing the folder makes the database unreachable.
        return f"sqlite:///{tmp_path / 'db' / 'audit.db'}"
    url: str = request.getfixturevalue("postgres_database")
    with psycopg.connect(url, autocommit=True, connect_timeout=int(HANG_GUARD)) as connection:
        connection.execute("SET lock_timeout = '10s'")
        connection.execute("TRUNCATE audit_entries, audit_checkpoints, audit_heads")
    return url


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """An engine on `database_url` with the schema migrated."""
    migrated = connect(database_url)
    yield migrated
    migrated.dispose()


@pytest.fixture
def make_unreachable(database_url: str) -> Iterator[Callable[[Engine], None]]:
    """Take the database away under a running engine: remove its folder (SQLite), or refuse
    connections and end the open ones (PostgreSQL; allowed again afterwards)."""
    url = make_url(database_url)
    name = url.database
    assert name is not None
    refused = False

    def _take_away(engine: Engine) -> None:
        nonlocal refused
        if url.get_backend_name() == "sqlite":
            engine.dispose()  # pooled connections would keep the unlinked file open
            shutil.rmtree(Path(name).parent)
            return
        with _admin() as admin:
            admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
            refused = True
            admin.execute(
                "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )

    yield _take_away
    if refused:
        with _admin() as admin:
            admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')


@pytest.fixture(scope="session")
def signing_key() -> PrivateKey:
    return generate_key("ed25519")


@pytest.fixture(scope="session")
def other_key() -> PrivateKey:
    return generate_key("ed25519")


# --- whole registries, for the anchored-verification tests --------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def registry_database(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """None for the default SQLite file inside the registry folder, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield None
        return
    with _fresh_postgres_database() as url:
        yield url


@dataclass(frozen=True)
class S3Server:
    url: str
    client: Any  # a boto3 S3 client on the moto server
    bucket: str  # object lock on, compliance mode

    def options(self) -> dict[str, Any]:
        return {"endpoint_url": self.url, "key": "testing", "secret": "testing"}


WITNESS_BUCKET = "bastion-audit-witness"


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """A moto S3 server on 127.0.0.1 with one object-locked bucket, as a witness would be kept."""
    import boto3  # noqa: PLC0415
    from moto.server import ThreadedMotoServer  # noqa: PLC0415

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        url = f"http://{host}:{port}"
        client = boto3.client(
            "s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing"
        )
        client.create_bucket(Bucket=WITNESS_BUCKET, ObjectLockEnabledForBucket=True)
        client.put_object_lock_configuration(
            Bucket=WITNESS_BUCKET,
            ObjectLockConfiguration={
                "ObjectLockEnabled": "Enabled",
                "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": 1}},
            },
        )
        yield S3Server(url, client, WITNESS_BUCKET)
    finally:
        server.stop()
