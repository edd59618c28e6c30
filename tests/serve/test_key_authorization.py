"""Who may manage the gateway's keys is checked by the library (`KeyStore`), not only by the CLI.

A library caller holds an authenticated registry `Principal`; a reader's principal cannot create,
revoke, suspend or resume keys, or flip the kill switch, and an admin's can, with its name in the
audit entry. Run on a real registry (SQLite) and its real audit chain.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bastion.audit import AuditLog
from bastion.errors import AccessDenied, NotFound
from bastion.registry import Principal, Registry, init_registry
from bastion.registry.roles import Role
from bastion.serve.keys import KeySpec, KeyStore
from bastion.serve.run import AUDIT_CHAIN
from corpus.hang_guard import HANG_GUARD


@dataclass
class World:
    registry: Registry
    store: KeyStore
    admin: Principal

    def principal(self, name: str, role: str, model: str = "*") -> Principal:
        self.registry.add_principal(self.admin, name)
        self.registry.grant(self.admin, name, Role.parse(role), model)
        return self.registry.authenticate(self.registry.issue_token(self.admin, name))

    def audited(self) -> list[tuple[str, str, str]]:
        return [(e.actor, e.action, e.subject) for e in self.store.audit.entries()]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    registry = Registry(init_registry(tmp_path / "reg"))
    try:
        admin = registry.authenticate(registry.bootstrap("root"))
        store = KeyStore(registry.engine, AuditLog(registry.engine, AUDIT_CHAIN))
        yield World(registry, store, admin)
    finally:
        registry.close()


def test_a_reader_cannot_create_a_key(world: World) -> None:
    reader = world.principal("rita", "reader")
    with pytest.raises(AccessDenied, match=r"rita \(role reader\) may not token.issue on every model"):
        world.store.create(reader, KeySpec("app"))
    with pytest.raises(AccessDenied, match=r"rita \(role reader\) may not token.issue on model 'fraud'"):
        world.store.create(reader, KeySpec("app", models=("fraud",)))
    assert world.store.all() == []
    assert world.audited() == []


@pytest.mark.parametrize("method", ["revoke", "suspend", "resume"])
def test_a_reader_cannot_change_a_key(world: World, method: str) -> None:
    key, _text = world.store.create(world.admin, KeySpec("app"))
    reader = world.principal("rita", "reader")
    with pytest.raises(AccessDenied, match=r"rita may not token.revoke on any model: it needs admin"):
        getattr(world.store, method)(reader, key.key_id, "because")
    after = world.store.get(key.key_id)
    assert (after.revoked, after.suspended_reason) == (False, None)
    assert [action for _actor, action, _subject in world.audited()] == ["key.create"]


def test_a_reader_learns_nothing_about_unknown_keys(world: World) -> None:
    reader = world.principal("rita", "reader")
    with pytest.raises(AccessDenied, match=r"may not token.revoke on any model"):
        world.store.revoke(reader, "0123456789abcdef", "probing")
    with pytest.raises(NotFound, match=r"no key '0123456789abcdef'"):
        world.store.revoke(world.admin, "0123456789abcdef", "no such key")


def test_an_admin_manages_keys_and_the_audit_names_it(world: World) -> None:
    key, text = world.store.create(world.admin, KeySpec("app"))
    assert text.startswith(f"bsk_{key.key_id}_")
    world.store.suspend(world.admin, key.key_id, "looks like a crawler")
    assert world.store.get(key.key_id).suspended_reason == "looks like a crawler"
    world.store.resume(world.admin, key.key_id, "checked")
    assert world.store.get(key.key_id).suspended_reason is None
    world.store.revoke(world.admin, key.key_id, "leaked")
    assert world.store.get(key.key_id).revoked
    assert world.audited() == [
        ("root", "key.create", key.key_id),
        ("root", "key.suspend", key.key_id),
        ("root", "key.resume", key.key_id),
        ("root", "key.revoke", key.key_id),
    ]


def test_a_model_admin_manages_only_keys_for_its_models(world: World) -> None:
    owner = world.principal("olga", "admin", "fraud")
    mine, _ = world.store.create(owner, KeySpec("fraud-app", models=("fraud",)))
    with pytest.raises(AccessDenied, match=r"olga .* may not token.issue on every model"):
        world.store.create(owner, KeySpec("any-app"))
    with pytest.raises(AccessDenied, match=r"olga .* may not token.issue on model 'sentiment'"):
        world.store.create(owner, KeySpec("both", models=("fraud", "sentiment")))
    theirs, _ = world.store.create(world.admin, KeySpec("any-app"))
    with pytest.raises(AccessDenied, match=r"olga .* may not token.revoke on every model"):
        world.store.revoke(owner, theirs.key_id, "not mine")
    assert [k.key_id for k in world.store.listed(owner)] == [mine.key_id]
    assert {k.key_id for k in world.store.listed(world.admin)} == {mine.key_id, theirs.key_id}
    world.store.revoke(owner, mine.key_id, "rotated")
    assert world.store.get(mine.key_id).revoked and not world.store.get(theirs.key_id).revoked


def test_a_reader_cannot_list_keys(world: World) -> None:
    world.store.create(world.admin, KeySpec("app"))
    with pytest.raises(AccessDenied, match=r"rita may not token.issue on any model"):
        world.store.listed(world.principal("rita", "reader"))


def test_the_kill_switch_needs_admin_on_the_model(world: World) -> None:
    reader = world.principal("rita", "reader")
    owner = world.principal("olga", "admin", "fraud")
    with pytest.raises(AccessDenied, match=r"rita \(role reader\) may not token.revoke on model 'fraud'"):
        world.store.disable_model(reader, "fraud", "no")
    with pytest.raises(AccessDenied, match=r"olga \(no role\) may not token.revoke on model 'sentiment'"):
        world.store.disable_model(owner, "sentiment", "not hers")
    world.store.disable_model(owner, "fraud", "drill")
    with pytest.raises(AccessDenied, match=r"rita .* may not token.revoke on model 'fraud'"):
        world.store.enable_model(reader, "fraud", "no")
    assert world.store.disabled_models() == {"fraud": "drill"}
    world.store.enable_model(owner, "fraud", "drill over")
    assert world.store.disabled_models() == {}
    assert [(a, s) for a, _action, s in world.audited()] == [("olga", "fraud"), ("olga", "fraud")]


def test_a_name_string_is_not_an_actor(world: World) -> None:
    with pytest.raises(TypeError, match=r"must be an authenticated Principal, not str"):
        world.store.create("root", KeySpec("app"))  # type: ignore[arg-type]  # what old callers passed


def test_an_alarm_suspends_as_the_gateway(world: World) -> None:
    key, _ = world.store.create(world.admin, KeySpec("app"))
    world.store.suspend_on_alarm(key.key_id, "extraction pattern")
    assert world.store.get(key.key_id).suspended_reason == "extraction pattern"
    assert world.audited()[-1] == ("gateway", "key.suspend", key.key_id)


def _keys_cli(world: World, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BASTION_TOKEN": token, "BASTION_REGISTRY": str(world.registry.config.home)}
    return subprocess.run(
        [sys.executable, "-m", "bastion.cli.main", "keys", *args],
        env=env, capture_output=True, text=True, timeout=HANG_GUARD, check=False,
    )


def test_the_keys_commands_pass_the_caller_to_the_library(world: World) -> None:
    """`bastion keys ...` as a user runs it: a reader is refused by the library's check, an admin is not."""
    world.principal("rita", "reader")
    reader_token = world.registry.issue_token(world.admin, "rita")
    admin_token = world.registry.issue_token(world.admin, "root")
    refused = _keys_cli(world, reader_token, "create", "app")
    assert refused.returncode == 2, refused.stderr
    assert "rita (role reader) may not token.issue on every model" in refused.stderr
    created = _keys_cli(world, admin_token, "create", "app", "--model", "fraud", "--format", "json")
    assert created.returncode == 0, created.stderr
    key_id = json.loads(created.stdout)["key_id"]
    refused = _keys_cli(world, reader_token, "revoke", key_id)
    assert refused.returncode == 2 and "rita may not token.revoke on any model" in refused.stderr
    assert not world.store.get(key_id).revoked
    revoked = _keys_cli(world, admin_token, "revoke", key_id)
    assert revoked.returncode == 0, revoked.stderr
    assert world.store.get(key_id).revoked
    assert world.audited() == [("root", "key.create", key_id), ("root", "key.revoke", key_id)]
