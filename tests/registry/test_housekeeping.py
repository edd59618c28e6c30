"""Issue 10, section 5: what a parent reveals, what a gate check costs, what a killed process leaves.

- `parent` named a model the caller has no role on: "not in this registry" or success told it
  which versions exist. Now reading a parent needs read access on its model.
- A reader could make the registry copy and re-scan a model as often as it asked. The evidence
  of the same bytes under the same policy is reused for a while: checkouts are counted, not timed.
- `kill -9` during an upload or a check left partial files behind for good. A registry removes
  leftovers of dead processes when it opens, and leaves those of live ones alone.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from bastion.errors import AccessDenied
from bastion.registry import Registry, Role
from bastion.registry.records import Lineage
from registry.artifacts import numpy_folder
from registry.backends import MakeRegistry, on_both_databases
from registry.people import Team, make_team

HOURS = 3600.0


@on_both_databases
def test_a_parent_on_a_model_the_caller_cannot_read_is_refused_whether_or_not_it_exists(
    registry: Registry, team: Team, tmp_path: Path
) -> None:
    registry.register(team.contributor, "secret", numpy_folder(tmp_path / "s"))
    registry.add_principal(team.admin, "outsider")
    registry.grant(team.admin, "outsider", Role.CONTRIBUTOR, "mine")
    outsider = registry.authenticate(registry.issue_token(team.admin, "outsider"))
    folder = numpy_folder(tmp_path / "m")

    for parent in ("secret@1", "secret@2"):  # one exists, one does not: the answers must not differ
        with pytest.raises(AccessDenied, match=r"outsider \(no role\) may not read on model 'secret'"):
            registry.register(outsider, "mine", folder, lineage=Lineage(parent=parent))

    assert [m.name for m in registry.models(team.admin)] == ["secret"]  # nothing registered


@on_both_databases
def test_a_hundred_gate_checks_copy_and_scan_the_model_once(registry: Registry, team: Team, tmp_path: Path) -> None:
    registry.register(team.contributor, "m", numpy_folder(tmp_path))
    before = registry.checkouts

    decisions = [registry.check_gate(team.reader, "m", 1, "staging") for _ in range(100)]

    assert registry.checkouts - before == 1
    assert all(d.allowed for d in decisions)
    assert len([e for e in registry.audit.entries() if e.action == "gate.check"]) == 100


def test_cached_evidence_expires_and_a_promotion_never_uses_it(make_registry: MakeRegistry, tmp_path: Path) -> None:
    now = [1_000_000.0]
    registry = make_registry()
    clocked = Registry(registry.config, clock=lambda: now[0])
    try:
        team = make_team(clocked)
        clocked.register(team.contributor, "m", numpy_folder(tmp_path))
        clocked.check_gate(team.reader, "m", 1, "staging")
        clocked.check_gate(team.reader, "m", 1, "staging")
        assert clocked.checkouts == 1
        now[0] += clocked.evidence_ttl
        clocked.check_gate(team.reader, "m", 1, "staging")
        assert clocked.checkouts == 2
        clocked.promote(team.contributor, "m", 1, "staging")
        assert clocked.checkouts == 3
    finally:
        clocked.close()


def _age(path: Path, seconds: float) -> None:
    stamp = path.stat().st_mtime - seconds
    os.utime(path, (stamp, stamp))


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])  # our own interpreter
    child.wait()
    return child.pid


def test_leftovers_of_killed_processes_are_removed_at_open_and_live_ones_kept(registry: Registry) -> None:
    home = registry.config.home
    incoming = Path(registry.blobs.root) / "incoming"
    incoming.mkdir(exist_ok=True)
    stale_upload, fresh_upload = incoming / "0f1e2d", incoming / "3c4b5a"
    stale_upload.write_bytes(b"half an upload")
    fresh_upload.write_bytes(b"an upload in progress elsewhere")
    _age(stale_upload, 7 * HOURS)
    host = socket.gethostname().replace("-", "_")
    dead = home / "work" / f"checkout-{host}-{_dead_pid()}-0123456789ab"
    live = home / "work" / f"checkout-{host}-{os.getpid()}-ba9876543210"
    old = home / "work" / "register-otherhost-1-cafecafecafe"
    for folder in (dead, live, old):
        (folder / "model").mkdir(parents=True)
        (folder / "model" / "weights.bin").write_bytes(b"a private copy")
    _age(old, 7 * HOURS)

    reopened = Registry.open(home)
    reopened.close()

    assert not stale_upload.exists() and fresh_upload.exists()
    assert not dead.exists() and not old.exists()
    assert live.exists()
