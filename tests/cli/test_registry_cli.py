"""`bastion registry`, `gate check` and `audit verify|export` through the real CLI, on a real SQLite registry.

The audit-tampering tests change the database with plain SQL, as an insider with database
access would, and expect `bastion audit verify` to exit 1 naming the entry and the kind.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest


class _RunsOnLoad:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, ("echo pwned",)


def _bastion(home: Path, *args: str | Path, token: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BASTION_REGISTRY": str(home)}
    env.pop("BASTION_TOKEN", None)
    if token:
        env["BASTION_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "bastion.cli.main", *map(str, args)], capture_output=True, text=True, check=False, env=env
    )


def _ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.strip()


@pytest.fixture(scope="module")
def populated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A registry with an admin, a contributor, an approver and one promoted model."""
    root = tmp_path_factory.mktemp("cli-registry")
    home = root / "registry"
    admin = _ok(_bastion(home, "registry", "init", home))
    _ok(_bastion(home, "registry", "user", "add", "carol", "--role", "contributor", token=admin))
    _ok(_bastion(home, "registry", "user", "add", "bob", "--role", "approver", token=admin))
    _ok(_bastion(home, "registry", "user", "add", "rita", "--role", "reader", token=admin))
    tokens = {
        name: _ok(_bastion(home, "registry", "token", "issue", name, token=admin)) for name in ("carol", "bob", "rita")
    }
    model = root / "model"
    model.mkdir()
    np.save(model / "weights.npy", np.arange(32, dtype=np.float32))
    (model / "config.json").write_text('{"layers": 2}')
    _ok(_bastion(home, "registry", "register", "fraud", model, "--licence", "mit", token=tokens["carol"]))
    _ok(_bastion(home, "registry", "promote", "fraud@1", "--stage", "staging", token=tokens["carol"]))
    return {"root": root, "home": home, "admin": admin, "model": model, **tokens}


def _copy(populated: dict[str, object], tmp_path: Path) -> tuple[Path, str]:
    """A private copy of the populated registry, to tamper with."""
    home = tmp_path / "registry"
    shutil.copytree(Path(str(populated["home"])), home)
    config = (home / "registry.yaml").read_text()
    # Paths in registry.yaml are relative to the folder, so the copy is self-contained.
    assert str(populated["home"]) not in config
    return home, str(populated["admin"])


def test_gate_check_exit_codes_and_json(populated: dict[str, object]) -> None:
    home = Path(str(populated["home"]))
    refused = _bastion(home, "gate", "check", "fraud@1", "--stage", "production", "--format", "json", token=str(populated["rita"]))
    assert refused.returncode == 1, refused.stderr
    decision = json.loads(refused.stdout)
    assert decision["allowed"] is False
    assert any(reason.startswith("approvals:") for reason in decision["reasons"])
    stages = json.loads(_ok(_bastion(home, "registry", "show", "fraud@1", "--format", "json", token=str(populated["rita"]))))
    assert stages["stage"] == "staging"  # a gate check changes nothing


def test_reader_cannot_register_or_promote(populated: dict[str, object]) -> None:
    home, model = Path(str(populated["home"])), Path(str(populated["model"]))
    register = _bastion(home, "registry", "register", "fraud", model, token=str(populated["rita"]))
    assert register.returncode == 2 and "needs contributor" in register.stderr
    promote = _bastion(home, "registry", "promote", "fraud@1", "--stage", "production", token=str(populated["rita"]))
    assert promote.returncode == 2 and "needs contributor" in promote.stderr


def test_contributor_cannot_approve_and_nothing_is_anonymous(populated: dict[str, object]) -> None:
    home = Path(str(populated["home"]))
    approve = _bastion(home, "registry", "approve", "fraud@1", "--stage", "production", token=str(populated["carol"]))
    assert approve.returncode == 2 and "needs approver" in approve.stderr
    anonymous = _bastion(home, "registry", "list")
    assert anonymous.returncode == 2 and "no API token" in anonymous.stderr
    forged = _bastion(home, "registry", "list", token="bst_0123456789abcdef_forged")
    assert forged.returncode == 2 and "not valid" in forged.stderr


def test_promotion_refused_after_blob_swap_is_audited(populated: dict[str, object], tmp_path: Path) -> None:
    home, admin = _copy(populated, tmp_path)
    carol, bob = str(populated["carol"]), str(populated["bob"])
    _ok(_bastion(home, "registry", "approve", "fraud@1", "--stage", "production", token=bob))
    version = json.loads(_ok(_bastion(home, "registry", "show", "fraud@1", "--format", "json", token=carol)))
    weights = next(f for f in version["files"] if f["path"] == "weights.npy")
    hexdigest = weights["digest"].removeprefix("sha256:")
    blob = home / "blobs" / "sha256" / hexdigest[:2] / hexdigest[2:]
    blob.write_bytes(pickle.dumps(_RunsOnLoad()))
    promote = _bastion(home, "registry", "promote", "fraud@1", "--stage", "production", token=carol)
    assert promote.returncode == 1
    assert "stored bytes changed since registration" in promote.stdout
    assert "pickle.dangerous-global" in promote.stdout
    exported = _ok(_bastion(home, "audit", "export", token=admin)).splitlines()
    last = json.loads(exported[-1])["body"]
    assert last["action"] == "version.promote.refused" and last["subject"] == "fraud@1"
    failed = {c["name"] for c in last["details"]["checks"] if not c["passed"]}
    assert {"stored-bytes", "scan"} <= failed
    assert _bastion(home, "audit", "verify", token=admin).returncode == 0


def _db(home: Path) -> sqlite3.Connection:
    return sqlite3.connect(home / "registry.db", isolation_level=None)


def _rehash_from(db: sqlite3.Connection, start: int) -> None:
    """Recompute every hash from entry `start` on, as a forger without the signing key would."""
    previous = bytes(db.execute("SELECT entry_hash FROM audit_entries WHERE seq = ?", (start - 1,)).fetchone()[0]) if start > 1 else bytes(32)
    for seq, body in db.execute("SELECT seq, body FROM audit_entries WHERE seq >= ? ORDER BY seq", (start,)).fetchall():
        digest = hashlib.sha256(previous + body.encode()).digest()
        db.execute("UPDATE audit_entries SET prev_hash = ?, entry_hash = ? WHERE seq = ?", (previous, digest, seq))
        previous = digest
    db.execute("UPDATE audit_heads SET entry_hash = ? WHERE chain = 'registry'", (previous,))


def _verify(home: Path, admin: str) -> tuple[int, str]:
    done = _bastion(home, "audit", "verify", token=admin)
    return done.returncode, done.stdout


def test_audit_intact(populated: dict[str, object], tmp_path: Path) -> None:
    home, admin = _copy(populated, tmp_path)
    code, out = _verify(home, admin)
    assert code == 0 and "intact" in out


def test_audit_detects_edited_entry(populated: dict[str, object], tmp_path: Path) -> None:
    home, admin = _copy(populated, tmp_path)
    with _db(home) as db:
        body = db.execute("SELECT body FROM audit_entries WHERE seq = 3").fetchone()[0]
        db.execute("UPDATE audit_entries SET body = ? WHERE seq = 3", (body.replace('"carol"', '"mallory"'),))
    code, out = _verify(home, admin)
    assert code == 1 and "entry 3: [edited]" in out


def test_audit_detects_edit_with_recomputed_hashes(populated: dict[str, object], tmp_path: Path) -> None:
    home, admin = _copy(populated, tmp_path)
    with _db(home) as db:
        body = db.execute("SELECT body FROM audit_entries WHERE seq = 4").fetchone()[0]
        db.execute("UPDATE audit_entries SET body = ? WHERE seq = 4", (body.replace('"bob"', '"mallory"'),))
        _rehash_from(db, 4)
    code, out = _verify(home, admin)
    assert code == 1 and "entry 4: [rewritten]" in out


def test_audit_detects_deleted_entry(populated: dict[str, object], tmp_path: Path) -> None:
    home, admin = _copy(populated, tmp_path)
    with _db(home) as db:
        db.execute("DELETE FROM audit_entries WHERE seq = 5")
    code, out = _verify(home, admin)
    assert code == 1 and "entry 5: [missing]" in out


def test_audit_detects_deleted_last_entries(populated: dict[str, object], tmp_path: Path) -> None:
    home, admin = _copy(populated, tmp_path)
    with _db(home) as db:
        last = db.execute("SELECT max(seq) FROM audit_entries").fetchone()[0]
        db.execute("DELETE FROM audit_entries WHERE seq >= ?", (last - 1,))
        db.execute("DELETE FROM audit_checkpoints WHERE seq >= ?", (last - 1,))
        db.execute("UPDATE audit_heads SET seq = ?", (last - 2,))
        _rehash_from(db, last - 1)  # recomputes the head hash too
    code, out = _verify(home, admin)
    # The database is consistent in itself now: the checkpoints covering the cut entries went
    # with them. The signed witness kept beside the registry's key still names the old head.
    assert code == 1 and f"entry {last}: [truncated]" in out


def test_audit_detects_reordered_entries(populated: dict[str, object], tmp_path: Path) -> None:
    home, admin = _copy(populated, tmp_path)
    with _db(home) as db:
        db.execute("UPDATE audit_entries SET seq = -1 WHERE seq = 6")
        db.execute("UPDATE audit_entries SET seq = 6 WHERE seq = 7")
        db.execute("UPDATE audit_entries SET seq = 7 WHERE seq = -1")
    code, out = _verify(home, admin)
    assert code == 1 and "entry 6: [out-of-place]" in out


def test_audit_detects_inserted_entry(populated: dict[str, object], tmp_path: Path) -> None:
    home, admin = _copy(populated, tmp_path)
    with _db(home) as db:
        last = db.execute("SELECT max(seq) FROM audit_entries").fetchone()[0]
        for seq in range(last, 3, -1):  # make room after entry 3
            db.execute("UPDATE audit_entries SET seq = ? WHERE seq = ?", (seq + 1, seq))
        forged = '{"seq":4,"chain":"registry","at":"2026-01-01T00:00:00.000000+00:00","actor":"admin","action":"access.grant","subject":"mallory","details":{"model":"*","role":"admin"}}'
        previous = bytes(db.execute("SELECT entry_hash FROM audit_entries WHERE seq = 3").fetchone()[0])
        db.execute(
            "INSERT INTO audit_entries (chain, seq, body, prev_hash, entry_hash) VALUES ('registry', 4, ?, ?, ?)",
            (forged, previous, hashlib.sha256(previous + forged.encode()).digest()),
        )
        db.execute("UPDATE audit_heads SET seq = ?", (last + 1,))
    code, out = _verify(home, admin)
    assert code == 1 and "entry 5:" in out


def test_audit_export_is_one_line_per_entry(populated: dict[str, object], tmp_path: Path) -> None:
    home, admin = _copy(populated, tmp_path)
    out = tmp_path / "audit.jsonl"
    _ok(_bastion(home, "audit", "export", "-o", out, token=admin))
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["seq"] for line in lines] == list(range(1, len(lines) + 1))
    assert lines[0]["body"]["action"] == "registry.bootstrap"
    reader = _bastion(home, "audit", "export", token=str(populated["rita"]))
    assert reader.returncode == 2 and "needs admin" in reader.stderr


def test_a_file_beside_the_model_that_the_signature_does_not_cover_blocks_the_gate(tmp_path: Path) -> None:
    """Issue 10, section 3: `--signature` elsewhere, and a stale `model.sig` stored as a model file."""
    from bastion.sign.keys import generate_key, save_keypair  # noqa: PLC0415
    from bastion.sign.ossf import sign_model  # noqa: PLC0415

    home = tmp_path / "registry"
    admin = _ok(_bastion(home, "registry", "init", home))
    key = generate_key("ed25519")
    save_keypair(key, tmp_path / "signer.key")
    (home / "policy.yaml").write_text(
        "version: 1\ngate:\n  separation_of_duties: false\n  require:\n"
        f"    staging:\n      signature_keys: [{tmp_path / 'signer.pub'}]\n",
        encoding="utf-8",
    )
    model = tmp_path / "model"
    model.mkdir()
    np.save(model / "weights.npy", np.arange(8, dtype=np.float32))
    # Signed in place (the statement says model.sig is not part of the model), the bundle then
    # kept apart, and a file put where the signature was: verification ignores that path.
    sign_model(model, key).rename(tmp_path / "release.sig")
    (model / "model.sig").write_text('{"planted": "after signing"}')

    _ok(_bastion(home, "registry", "register", "m", model, "--signature", tmp_path / "release.sig", token=admin))
    checked = _bastion(home, "gate", "check", "m@1", "--stage", "staging", "--format", "json", token=admin)

    assert checked.returncode == 1, checked.stdout + checked.stderr
    reasons = json.loads(checked.stdout)["reasons"]
    assert "signature: stored files the signature does not cover: model.sig" in " ".join(reasons)


def test_a_fresh_registry_is_private_to_its_owner(tmp_path: Path) -> None:
    """Issue 10, section 5: the database (token hashes, the audit log) was created world-readable."""
    home = tmp_path / "registry"
    old_umask = os.umask(0o022)  # the usual default: what a new user has
    try:
        _ok(_bastion(home, "registry", "init", home))
    finally:
        os.umask(old_umask)

    assert home.stat().st_mode & 0o777 == 0o700
    assert (home / "registry.db").stat().st_mode & 0o777 == 0o600
    assert (home / "registry.key").stat().st_mode & 0o777 == 0o600
    for sidecar in (home / "registry.db-wal", home / "registry.db-shm"):
        if sidecar.exists():
            assert sidecar.stat().st_mode & 0o077 == 0, sidecar


def test_an_admin_lists_tokens_removes_a_grant_and_disables_a_user(populated: dict[str, object], tmp_path: Path) -> None:
    home, admin = _copy(populated, tmp_path)
    rita = str(populated["rita"])

    listed = json.loads(_ok(_bastion(home, "registry", "token", "list", "rita", "--format", "json", token=admin)))
    assert [(t["principal"], t["revoked"]) for t in listed] == [("rita", False)]
    assert rita.split("_", 2)[2] not in json.dumps(listed)  # the whole secret: base64url may hold "_"
    assert _bastion(home, "registry", "token", "list", "rita", token=rita).returncode == 2  # readers may not

    _ok(_bastion(home, "registry", "ungrant", "rita", token=admin))
    refused = _bastion(home, "registry", "show", "fraud@1", token=rita)
    assert refused.returncode == 2 and "rita (no role) may not read" in refused.stderr

    _ok(_bastion(home, "registry", "user", "disable", "bob", token=admin))
    disabled = _bastion(home, "registry", "show", "fraud@1", token=str(populated["bob"]))
    assert disabled.returncode == 2 and "principal bob is disabled" in disabled.stderr
    _ok(_bastion(home, "registry", "user", "enable", "bob", token=admin))
    _ok(_bastion(home, "registry", "show", "fraud@1", token=str(populated["bob"])))
