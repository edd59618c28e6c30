"""Registries on real backends: SQLite or PostgreSQL metadata, blobs in a folder or in S3 (moto).

A test gets the sqlite+folder registry unless it is parametrised over `backend` (see
`backends.on_all_backends`). Each registry has a home of its own; on PostgreSQL a fresh
`bastion_reg_<hex>` database, dropped afterwards; on S3 a fresh prefix in one bucket of a moto
server started once per session. PostgreSQL missing: skipped locally, a failure under CI=true.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from bastion.registry import Registry, init_registry
from corpus.hang_guard import HANG_GUARD
from registry.backends import (
    BUCKET,
    PG_ADMIN_URL,
    SQLITE_LOCAL,
    Backend,
    BlobProbe,
    MakeRegistry,
    S3Endpoint,
    under_ci,
)
from registry.people import Team, make_team


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    """The maintenance database's URL, once PostgreSQL is known to answer."""
    try:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=int(HANG_GUARD)) as admin:
            admin.execute("SELECT 1")
    except psycopg.OperationalError as err:
        message = f"PostgreSQL is not reachable at {PG_ADMIN_URL}: {err}"
        if under_ci():
            pytest.fail(message)
        pytest.skip(message)
    return PG_ADMIN_URL


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[S3Endpoint]:
    """A moto S3 server on 127.0.0.1 with one bucket; fake AWS credentials for the session."""
    import boto3  # noqa: PLC0415
    from moto.server import ThreadedMotoServer  # noqa: PLC0415

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        url = f"http://{host}:{port}"
        with pytest.MonkeyPatch.context() as env:
            for name, value in {
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_DEFAULT_REGION": "us-east-1",
            }.items():
                env.setenv(name, value)
            env.delenv("AWS_PROFILE", raising=False)
            client = boto3.client(
                "s3",
                endpoint_url=url,
                region_name="us-east-1",
                aws_access_key_id="testing",
                aws_secret_access_key="testing",
            )
            client.create_bucket(Bucket=BUCKET)
            yield S3Endpoint(url, client)
    finally:
        server.stop()


def _create_database(admin_url: str) -> tuple[str, str]:
    name = f"bastion_reg_{secrets.token_hex(6)}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    return name, make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def _drop_database(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> Backend:
    backend: Backend = getattr(request, "param", SQLITE_LOCAL)
    return backend


@pytest.fixture
def make_registry(request: pytest.FixtureRequest, tmp_path: Path, backend: Backend) -> Iterator[MakeRegistry]:
    """Build registries on `backend`; `policy` (YAML text) replaces the default before it opens."""
    opened: list[Registry] = []
    databases: list[str] = []
    admin_url = request.getfixturevalue("postgres_admin_url") if backend.database == "postgresql" else ""
    s3: S3Endpoint | None = request.getfixturevalue("s3_endpoint") if backend.blobs == "s3" else None

    def _make(policy: str | None = None) -> Registry:
        home = tmp_path / f"registry-{len(opened)}"
        database = None
        if backend.database == "postgresql":
            name, database = _create_database(admin_url)
            databases.append(name)
        blobs, options = None, None
        if s3 is not None:
            blobs, options = f"s3://{BUCKET}/{secrets.token_hex(6)}", s3.options()
        config = init_registry(home, database=database, blobs=blobs, blob_options=options)
        if policy is not None:
            config.policy.write_text(policy, encoding="utf-8")
        registry = Registry(config)
        opened.append(registry)
        return registry

    yield _make
    for registry in opened:
        registry.close()
    for name in databases:
        _drop_database(admin_url, name)


@pytest.fixture
def registry(make_registry: MakeRegistry) -> Registry:
    return make_registry()


@pytest.fixture
def team(registry: Registry) -> Team:
    return make_team(registry)


@pytest.fixture
def probe(request: pytest.FixtureRequest, registry: Registry, backend: Backend) -> BlobProbe:
    s3 = request.getfixturevalue("s3_endpoint") if backend.blobs == "s3" else None
    return BlobProbe(registry, backend, s3)
