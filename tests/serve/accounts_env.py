"""Registries on a real PostgreSQL for the key, account and budget tests: one fresh database each.

PostgreSQL is reached at BASTION_TEST_POSTGRES (default: the `test` database on 127.0.0.1 as
`postgres`, trust auth); each registry gets a `bastion_keys_<hex>` database, dropped afterwards.
Unreachable: skipped locally, a failure under CI=true. Models are small numpy folders,
registered with an assessment (or none) and promoted to production by an administrator.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
import yaml
from sqlalchemy.engine import make_url

from bastion.audit import AuditLog
from bastion.registry import Principal, Registry, init_registry
from bastion.registry.records import ModelVersion
from bastion.registry.roles import Role
from bastion.serve.keys import KeyStore
from bastion.serve.run import AUDIT_CHAIN
from corpus.hang_guard import HANG_GUARD
from corpus.redis_env import under_ci
from registry.backends import PG_ADMIN_URL


def postgres_reachable() -> None:
    """Skip (fail under CI) unless PostgreSQL answers."""
    try:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=int(HANG_GUARD)) as admin:
            admin.execute("SELECT 1")
    except psycopg.OperationalError as err:
        message = f"PostgreSQL is not reachable at {PG_ADMIN_URL}: {err}"
        if under_ci():
            pytest.fail(message)
        pytest.skip(message)


@contextmanager
def fresh_database() -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database, dropped on exit."""
    postgres_reachable()
    name = f"bastion_keys_{secrets.token_hex(6)}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class KeysEnv:
    """A registry on PostgreSQL, its gateway key store and its first administrator."""

    home: Path
    registry: Registry
    store: KeyStore
    admin: Principal
    admin_token: str

    def principal(self, name: str, role: str, model: str = "*") -> Principal:
        self.registry.add_principal(self.admin, name)
        self.registry.grant(self.admin, name, Role.parse(role), model)
        return self.registry.authenticate(self.registry.issue_token(self.admin, name))

    def token_of(self, name: str, role: str, model: str = "*") -> str:
        self.registry.add_principal(self.admin, name)
        self.registry.grant(self.admin, name, Role.parse(role), model)
        return self.registry.issue_token(self.admin, name)

    def audited(self) -> list[tuple[str, str, str, dict[str, Any]]]:
        return [(e.actor, e.action, e.subject, dict(e.details)) for e in self.store.audit.entries()]

    def publish(
        self, name: str, assessment: dict[str, Any] | bytes | None, stages: tuple[str, ...] = ("staging", "production")
    ) -> ModelVersion:
        """Register a small model as the next version of `name`, with `assessment`, and promote it."""
        folder = self.home.parent / f"{name}-{secrets.token_hex(4)}"
        folder.mkdir(parents=True)
        np.save(folder / "weights.npy", np.random.default_rng(len(name)).standard_normal((4, 3)).astype(np.float32))
        (folder / "config.json").write_text(json.dumps({"name": name}), encoding="utf-8")
        report = None
        if assessment is not None:
            report = folder.parent / f"{folder.name}.assessment.json"
            if not isinstance(assessment, bytes):  # bound to the model it prices, as bastion assess writes it
                measured = "sha256:" + hashlib.sha256((folder / "weights.npy").read_bytes()).hexdigest()
                assessment = json.dumps({**assessment, "model_digest": measured}).encode()
            report.write_bytes(assessment)
        version = self.registry.register(self.admin, name, folder, assessment=report)
        for stage in stages:
            decision = self.registry.promote(self.admin, name, version.number, stage)
            assert decision.allowed, [f"{c.name}: {c.detail}" for c in decision.checks if not c.passed]
        return version


def assessment(queries_95: float, *, output: str = "label", max_queries: int = 5000) -> dict[str, Any]:
    """An assessment report as `bastion assess --only extraction` writes it (the numbers that matter here)."""
    return {
        "schema": "bastion.assessment/1",
        "extraction_queries_90": queries_95 * 0.8,
        "extraction_queries_95": queries_95,
        "extraction_queries_99": queries_95 * 2,
        "extraction": {"output": output, "max_queries": max_queries, "curves": []},
    }


def write_policy(home: Path, budget_action: str | None) -> None:
    """The registry's policy: no approvals, duties not separated, and the serve section if given."""
    policy: dict[str, Any] = {"version": 1, "gate": {"separation_of_duties": False}}
    if budget_action is not None:
        policy["serve"] = {"budget_over_extraction_cost": budget_action}
    (home / "policy.yaml").write_text(yaml.safe_dump(policy), encoding="utf-8")


@contextmanager
def keys_env(tmp_path: Path, *, budget_action: str | None = None, database: str | None = None) -> Iterator[KeysEnv]:
    """A registry whose database is a fresh PostgreSQL one (or `database`, e.g. a SQLite URL)."""
    with fresh_database() if database is None else _given(database) as url:
        home = tmp_path / "registry"
        config = init_registry(home, database=url)
        write_policy(home, budget_action)
        registry = Registry(config)
        try:
            token = registry.bootstrap("root")
            admin = registry.authenticate(token)
            store = KeyStore(registry.engine, AuditLog(registry.engine, AUDIT_CHAIN))
            yield KeysEnv(home, registry, store, admin, token)
        finally:
            registry.close()


@contextmanager
def _given(url: str) -> Iterator[str]:
    yield url
