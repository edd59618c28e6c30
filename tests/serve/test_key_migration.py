"""Migration 0004 on a database with keys: each key becomes its own account, with the default rows.

Run on a fresh PostgreSQL database and on SQLite: keys made under 0003 keep working, belong
to an account named like them, get `DEFAULT_MAX_ROWS` and no throttle; the migrated schema is
the one `bastion.db.tables` declares; and the downgrade returns to 0003.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect, text

from bastion.audit import AuditLog
from bastion.db import make_engine, upgrade, writer
from bastion.db.engine import MIGRATIONS
from bastion.db.tables import metadata
from bastion.serve.keys import DEFAULT_MAX_ROWS, KeyStore
from bastion.serve.run import AUDIT_CHAIN
from serve.accounts_env import fresh_database


@pytest.fixture(params=["postgresql", "sqlite"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        made = make_engine(f"sqlite:///{tmp_path / 'keys.db'}")
        yield made
        made.dispose()
        return
    with fresh_database() as url:
        made = make_engine(url)
        yield made
        made.dispose()


def _migrate(engine: Engine, how: str, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with writer(engine).begin() as connection:
        config.attributes["connection"] = connection
        getattr(command, how)(config, revision)


def _old_key(engine: Engine, key_id: str, name: str) -> None:
    with writer(engine).begin() as connection:
        connection.execute(
            text(
                "INSERT INTO serve_keys (key_id, secret_hash, name, created_at, created_by, revoked, models, operations,"
                " output, rate_per_second, burst, daily) VALUES (:key_id, :secret_hash, :name, :at, 'root', false,"
                " :models, :operations, 'label', 10.0, 20, 10000)"
            ),
            {
                "key_id": key_id, "secret_hash": b"\0" * 32, "name": name, "at": datetime.now(UTC),
                "models": json.dumps(["*"]), "operations": json.dumps(["infer"]),
            },
        )


def test_keys_made_before_0004_become_their_own_accounts(engine: Engine) -> None:
    _migrate(engine, "upgrade", "0003")
    _old_key(engine, "aaaa", "mobile-app")
    _old_key(engine, "bbbb", "batch")

    upgrade(engine)

    store = KeyStore(engine, AuditLog(engine, AUDIT_CHAIN))
    keys = {key.key_id: key for key in store.all()}
    assert {k: (v.account, v.max_rows, v.throttle) for k, v in keys.items()} == {
        "aaaa": ("mobile-app", DEFAULT_MAX_ROWS, None),
        "bbbb": ("batch", DEFAULT_MAX_ROWS, None),
    }
    assert store.keys_of_account("batch") == ["bbbb"]
    assert store.snapshot().accounts == {}


def test_the_migrated_schema_is_the_declared_one(engine: Engine) -> None:
    upgrade(engine)
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), metadata)
    assert differences == []


def test_0004_downgrades_to_0003(engine: Engine) -> None:
    upgrade(engine)
    _migrate(engine, "downgrade", "0003")
    schema = inspect(engine)
    assert "serve_accounts" not in schema.get_table_names()
    columns = {c["name"] for c in schema.get_columns("serve_keys")}
    assert not columns & {"account", "max_rows", "throttle_per_second", "throttle_burst", "throttle_reason"}
