"""`bastion audit verify` against an attacker who can write the registry folder and its database.

Issue 10, section 4: each of these tamperings left `bastion audit verify` at exit 0:
(1) the tail of the chain deleted with its checkpoints, its head and its witness; (2) the database
and the witness rolled back to an old backup; (3) a rewritten history re-signed with the registry's
own key, which sits in the folder; (4) `registry.pub` swapped for the attacker's key; (5) the last
300 entries of the gateway's chain cut. The verifier here holds what the attacker cannot reach: its
own copy of the public key (`--trusted-key`) and the witness the registry appends to, kept outside
the folder (`--witness`). Every attack runs on real SQLite and PostgreSQL through the real CLI.

The attacker is modelled in full: plain SQL on the audit tables, the registry's own key read from
the folder, `registry.yaml` edited to point at a witness of the attacker's making. Where the attack
succeeds against a verifier that trusts the folder, the test shows that too: that is why the
anchor is needed, and the output says "UNANCHORED" so nobody mistakes one check for the other.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import Engine, select, text

from bastion.audit import AuditEvent, AuditLog
from bastion.audit.model import checkpoint_message
from bastion.audit.witness import Witness, WitnessedHead
from bastion.db.tables import audit_checkpoints
from bastion.registry import Registry, init_registry
from bastion.registry.config import load_config
from bastion.sign.keys import PrivateKey, generate_key, load_private_key, save_keypair
from bastion.sign.raw import key_id, sign_bytes
from corpus.clocks import ManualClock
from registry.artifacts import numpy_folder
from registry.people import Team, make_team


@dataclass
class Deployment:
    """A registry whose folder (and database) the attacker can write, and a verifier's own anchors."""

    home: Path  # the registry folder: key, config, and (SQLite) the database
    registry: Registry
    team: Team
    witness: str  # where the registry appends its witness: outside the folder
    pinned_key: Path  # the verifier's own copy of registry.pub, taken when the registry was set up
    env: dict[str, str] = field(default_factory=dict)

    @property
    def engine(self) -> Engine:
        return self.registry.engine

    def reopen(self) -> Registry:
        """The registry as the next command would open it: from its (possibly edited) folder."""
        self.registry.close()
        self.registry = Registry(load_config(self.home))
        return self.registry


def make_deployment(
    root: Path,
    database: str | None,
    witness: str,
    env: dict[str, str] | None = None,
    witness_options: dict[str, Any] | None = None,
) -> Deployment:
    home = root / "registry"
    config = init_registry(home, database=database, audit_witness=witness)
    if witness_options:
        settings = yaml.safe_load((home / "registry.yaml").read_text())
        (home / "registry.yaml").write_text(yaml.safe_dump({**settings, "audit_witness_options": witness_options}))
        config = load_config(home)
    pinned = root / "verifier" / "registry.pub"
    pinned.parent.mkdir()
    shutil.copyfile(config.public_key, pinned)
    registry = Registry(config)
    team = make_team(registry)
    registry.register(team.contributor, "fraud", numpy_folder(root))
    registry.promote(team.contributor, "fraud", 1, "staging")
    return Deployment(home, registry, team, witness, pinned, dict(env or {}))


@pytest.fixture
def deployment(tmp_path: Path, registry_database: str | None) -> Iterator[Deployment]:
    made = make_deployment(tmp_path, registry_database, str(tmp_path / "witness-vault"))
    yield made
    made.registry.close()


def audit_verify(d: Deployment, *args: str, anchored: bool = True) -> subprocess.CompletedProcess[str]:
    """`bastion audit verify` as the verifier runs it: its own key and witness unless `anchored=False`."""
    anchors = ["--trusted-key", str(d.pinned_key), "--witness", d.witness] if anchored else []
    env = {**os.environ, **d.env, "BASTION_REGISTRY": str(d.home), "BASTION_TOKEN": d.team.tokens["admin"]}
    for name in ("BASTION_AUDIT_KEY", "BASTION_AUDIT_WITNESS", "BASTION_AUDIT_REQUIRE_ANCHOR"):
        env.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "bastion.cli.main", "audit", "verify", *args, *anchors],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )


# --- what the attacker does --------------------------------------------------------------------


def sql(engine: Engine, statement: str, **params: Any) -> Any:
    with engine.begin() as connection:
        return connection.execute(text(statement), params)


def last_seq(engine: Engine, chain: str = "registry") -> int:
    return int(sql(engine, "SELECT max(seq) FROM audit_entries WHERE chain = :c", c=chain).scalar_one())


def cover_tracks(d: Deployment) -> None:
    """What an attacker with the folder and the database does to the witness they can reach:
    forget the counter the database keeps, and point `registry.yaml` at a witness of their own."""
    sql(d.engine, "DELETE FROM audit_heads WHERE chain LIKE '%/witness/%'")
    config = yaml.safe_load((d.home / "registry.yaml").read_text())
    config["audit_witness"] = "audit-witness"
    (d.home / "registry.yaml").write_text(yaml.safe_dump(config))
    shutil.rmtree(d.home / "audit-witness", ignore_errors=True)


def cut_tail(engine: Engine, chain: str, keep: int) -> None:
    """Delete every entry after `keep` with the checkpoints over them, and move the head back."""
    with engine.begin() as connection:
        params = {"c": chain, "keep": keep}
        connection.execute(text("DELETE FROM audit_entries WHERE chain = :c AND seq > :keep"), params)
        connection.execute(text("DELETE FROM audit_checkpoints WHERE chain = :c AND seq > :keep"), params)
        kept = connection.execute(
            text("SELECT entry_hash FROM audit_entries WHERE chain = :c AND seq = :keep"), params
        ).scalar_one()
        connection.execute(
            text("UPDATE audit_heads SET seq = :keep, entry_hash = :h, checkpoint_seq = :keep WHERE chain = :c"),
            {**params, "h": kept},
        )


def rewrite_from(engine: Engine, seq: int, old: str, new: str, signer: PrivateKey, chain: str = "registry") -> None:
    """Edit entry `seq`, re-chain everything after it, and re-sign every checkpoint with `signer`."""
    with engine.begin() as connection:
        params = {"c": chain}
        rows = connection.execute(
            text("SELECT seq, body FROM audit_entries WHERE chain = :c ORDER BY seq"), params
        ).all()
        previous = bytes(32)
        hashes: dict[int, bytes] = {}
        for number, stored in rows:
            body = stored.replace(old, new) if number == seq else stored
            assert number != seq or body != stored, f"{old!r} is not in entry {seq}"
            digest = hashlib.sha256(previous + body.encode()).digest()
            connection.execute(
                text("UPDATE audit_entries SET body = :b, prev_hash = :p, entry_hash = :h WHERE chain = :c AND seq = :s"),
                {"b": body, "p": previous, "h": digest, "c": chain, "s": number},
            )
            hashes[number] = previous = digest
        connection.execute(text("UPDATE audit_heads SET entry_hash = :h WHERE chain = :c"), {"h": previous, "c": chain})
        checkpoints = connection.execute(  # through the table, for the time as a datetime on SQLite too
            select(audit_checkpoints.c.seq, audit_checkpoints.c.signed_at).where(audit_checkpoints.c.chain == chain)
        ).all()
        for number, signed_at in checkpoints:
            message = checkpoint_message(chain, number, hashes[number], signed_at)
            connection.execute(
                text(
                    "UPDATE audit_checkpoints SET entry_hash = :h, key_id = :k, signature = :sig"
                    " WHERE chain = :c AND seq = :s"
                ),
                {
                    "h": hashes[number],
                    "k": key_id(signer.public_key()),
                    "sig": sign_bytes(signer, message),
                    "c": chain,
                    "s": number,
                },
            )


def seq_of(engine: Engine, action: str, chain: str = "registry") -> int:
    rows = sql(engine, "SELECT seq, body FROM audit_entries WHERE chain = :c ORDER BY seq", c=chain).all()
    return next(int(seq) for seq, body in rows if json.loads(body)["action"] == action)


# --- the honest case, and what an unanchored check says ---------------------------------------


def test_honest_registry_verifies_anchored(deployment: Deployment) -> None:
    heads = sorted(p.name for p in (Path(deployment.witness) / "registry").iterdir())
    done = audit_verify(deployment)

    assert done.returncode == 0, done.stdout + done.stderr
    assert ": intact" in done.stdout
    assert "anchored: the key and the witness come from the verifier's own configuration" in done.stdout
    as_json = json.loads(audit_verify(deployment, "--format", "json").stdout)
    assert as_json["ok"] is True and as_json["anchored"] is True
    assert as_json["witness_heads"] >= 1
    assert as_json["last_witnessed_seq"] == as_json["last_seq"] == last_seq(deployment.engine)
    assert as_json["unwitnessed_tail"] == 0
    assert sorted(p.name for p in (Path(deployment.witness) / "registry").iterdir()) == heads  # verifying writes nothing


def test_verify_without_anchors_says_unanchored_and_require_anchor_fails(deployment: Deployment) -> None:
    loose = audit_verify(deployment, anchored=False)
    strict = audit_verify(deployment, "--require-anchor", anchored=False)
    half = audit_verify(deployment, "--require-anchor", "--trusted-key", str(deployment.pinned_key), anchored=False)

    assert loose.returncode == 0, loose.stdout + loose.stderr
    assert "UNANCHORED: this check trusts the registry folder's own key (registry.pub)" in loose.stdout
    assert strict.returncode == 1 and "UNANCHORED" in strict.stdout
    assert half.returncode == 1
    assert "holds no witness of its own outside the registry folder" in half.stdout
    assert "registry folder's own key" not in half.stdout


def test_anchors_and_bounds_from_the_verifiers_environment(deployment: Deployment, tmp_path: Path) -> None:
    rotated = tmp_path / "verifier" / "next.pub"
    save_keypair(generate_key("ed25519"), tmp_path / "verifier" / "next.key")  # a second trusted key, unused yet
    deployment.env.update(
        BASTION_AUDIT_KEY=f"{rotated}{os.pathsep}{deployment.pinned_key}",
        BASTION_AUDIT_WITNESS=deployment.witness,
        BASTION_AUDIT_REQUIRE_ANCHOR="1",
        BASTION_AUDIT_MAX_UNWITNESSED="0",
    )
    done = _verify_with_env(deployment)

    assert done.returncode == 0, done.stdout + done.stderr
    assert "anchored: the key and the witness come from the verifier's own configuration" in done.stdout


def _verify_with_env(d: Deployment) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **d.env, "BASTION_REGISTRY": str(d.home), "BASTION_TOKEN": d.team.tokens["admin"]}
    return subprocess.run(
        [sys.executable, "-m", "bastion.cli.main", "audit", "verify"], capture_output=True, text=True, check=False, env=env
    )


# --- the five tamperings -----------------------------------------------------------------------


def test_tail_cut_with_its_checkpoints_head_and_witness_is_behind_the_witness(deployment: Deployment) -> None:
    end = last_seq(deployment.engine)
    cut_tail(deployment.engine, "registry", end - 3)
    cover_tracks(deployment)

    unanchored = audit_verify(deployment, anchored=False)
    done = audit_verify(deployment)

    assert unanchored.returncode == 0 and "UNANCHORED" in unanchored.stdout  # what the issue found, now labelled
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"entry {end}: [truncated] the log is behind its witness" in done.stdout
    assert f"saw entry {end}" in done.stdout and f"ends at entry {end - 3}" in done.stdout


def test_database_rolled_back_to_a_backup_is_behind_the_witness_then_forked(deployment: Deployment) -> None:
    tables = ("audit_entries", "audit_checkpoints", "audit_heads")
    backup = {table: [dict(row._mapping) for row in sql(deployment.engine, f"SELECT * FROM {table}")] for table in tables}
    backed_up_at = last_seq(deployment.engine)
    registry, team = deployment.registry, deployment.team
    registry.approve(team.approver, "fraud", 1, "production")
    registry.promote(team.contributor, "fraud", 1, "production")
    end = last_seq(deployment.engine)
    with deployment.engine.begin() as connection:  # the backup restored: every audit row as it was
        for table in tables:
            connection.execute(text(f"DELETE FROM {table}"))
        for table, rows in backup.items():
            for row in rows:
                names = ", ".join(row)
                connection.execute(text(f"INSERT INTO {table} ({names}) VALUES ({', '.join(':' + n for n in row)})"), row)
    cover_tracks(deployment)

    rolled_back = audit_verify(deployment)
    # The registry carries on from the restored state: its next entries take numbers the witness
    # has already seen with other contents.
    deployment.reopen().add_principal(team.admin, "dave")
    carried_on = audit_verify(deployment)

    assert backed_up_at < end
    assert rolled_back.returncode == 1, rolled_back.stdout + rolled_back.stderr
    assert f"entry {end}: [truncated] the log is behind its witness" in rolled_back.stdout
    assert carried_on.returncode == 1
    assert f"entry {backed_up_at + 1}: [forked]" in carried_on.stdout


def test_history_rewritten_and_resigned_with_the_registrys_own_key_forks_from_the_witness(
    deployment: Deployment,
) -> None:
    stolen = load_private_key(deployment.home / "registry.key")  # it sits in the folder
    edited = seq_of(deployment.engine, "access.grant")
    rewrite_from(deployment.engine, edited, '"role":"contributor"', '"role":"admin"', stolen)
    cover_tracks(deployment)

    unanchored = audit_verify(deployment, anchored=False)
    done = audit_verify(deployment)

    assert unanchored.returncode == 0  # every checkpoint verifies: the key is the registry's own
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"entry {edited}: [forked] entry {edited} is not the entry witnessed at {deployment.witness}" in done.stdout
    assert "[bad-signature]" not in done.stdout and "[unknown-key]" not in done.stdout


def test_registry_pub_swapped_for_the_attackers_key_is_not_trusted(deployment: Deployment, tmp_path: Path) -> None:
    attacker = generate_key("ed25519")
    edited = seq_of(deployment.engine, "version.register")
    rewrite_from(deployment.engine, edited, '"actor":"carol"', '"actor":"admin"', attacker)
    (deployment.home / "registry.key").unlink()
    (deployment.home / "registry.pub").unlink()
    save_keypair(attacker, deployment.home / "registry.key")
    cover_tracks(deployment)
    Witness(deployment.home / "audit-witness").advance(  # a witness of the attacker's own, signed to match
        attacker, "registry", last_seq(deployment.engine), _head_hash(deployment.engine), now=datetime.now(UTC)
    )

    unanchored = audit_verify(deployment, anchored=False)
    done = audit_verify(deployment)

    assert unanchored.returncode == 0 and "UNANCHORED" in unanchored.stdout
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"is signed by key {key_id(attacker.public_key())}, which is not trusted here" in done.stdout
    assert f"entry {edited}: [forked]" in done.stdout


def _head_hash(engine: Engine, chain: str = "registry") -> bytes:
    return bytes(sql(engine, "SELECT entry_hash FROM audit_heads WHERE chain = :c", c=chain).scalar_one())




def test_last_300_gateway_entries_cut_are_behind_the_witness(deployment: Deployment) -> None:
    clock = ManualClock()
    registry = deployment.registry
    # The gateway's chain as the gateway writes it: checkpoints every 1,000 entries, its
    # witness from the registry's configuration.
    gateway = AuditLog(
        registry.engine,
        "gateway",
        signing_key=registry.signing_key,
        checkpoint_every=1000,
        witness=registry.config.open_witness(),
        clock=clock,
        scheduler=clock.schedule,
    )
    for start in range(0, 1300, 100):
        gateway.append_many([AuditEvent(f"key-{n % 7}", "infer", "fraud@1", {"n": n}) for n in range(start, start + 100)])
        clock.advance(1)
    clock.advance(60)  # the gateway goes quiet; the timer signs and witnesses the waiting tail
    end = last_seq(registry.engine, "gateway")
    cut_tail(registry.engine, "gateway", end - 300)
    cover_tracks(deployment)

    done = audit_verify(deployment, "--chain", "gateway")

    assert end == 1300
    assert done.returncode == 1, done.stdout + done.stderr
    assert "entry 1300: [truncated] the log is behind its witness" in done.stdout
    assert "ends at entry 1000" in done.stdout


def test_witness_redirected_then_later_entries_rewritten_fails_a_bound_on_the_unwitnessed_tail(
    deployment: Deployment,
) -> None:
    """The attacker points `registry.yaml` at a witness of their own, lets the registry work, then
    rewrites what it wrote since: nothing the verifier's witness saw changed, so no fork shows.
    What shows is the tail the verifier's witness never saw; on the registry chain, witnessed at
    every change, any such tail is suspect."""
    witnessed_up_to = last_seq(deployment.engine)
    cover_tracks(deployment)
    registry, team = deployment.reopen(), deployment.team
    registry.approve(team.approver, "fraud", 1, "production")
    edited = seq_of(deployment.engine, "version.approve")
    rewrite_from(deployment.engine, edited, '"actor":"alex"', '"actor":"carol"', load_private_key(deployment.home / "registry.key"))

    loose = audit_verify(deployment)
    bounded = audit_verify(deployment, "--max-unwitnessed", "0")

    assert edited > witnessed_up_to
    assert loose.returncode == 0
    assert f"note: the last {last_seq(deployment.engine) - witnessed_up_to} entries are not yet witnessed" in loose.stdout
    assert bounded.returncode == 1
    assert f"fail: {last_seq(deployment.engine) - witnessed_up_to} entries after the last witnessed head" in bounded.stderr


# --- the witness in S3 with object lock --------------------------------------------------------


@pytest.fixture
def s3_deployment(tmp_path: Path, s3_server: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Deployment]:
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "FSSPEC_S3_ENDPOINT_URL": s3_server.url,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    home = tmp_path / "registry"
    witness = f"s3://{s3_server.bucket}/{tmp_path.name}"
    made = make_deployment(tmp_path, None, witness, env, {"endpoint_url": s3_server.url})
    assert yaml.safe_load((home / "registry.yaml").read_text())["audit_witness"] == witness
    yield made
    made.registry.close()


def test_s3_witness_with_object_lock_catches_a_cut_tail(s3_deployment: Deployment, s3_server: Any) -> None:
    prefix = s3_deployment.witness.removeprefix(f"s3://{s3_server.bucket}/")
    listed = s3_server.client.list_objects_v2(Bucket=s3_server.bucket, Prefix=f"{prefix}/registry/")
    honest = audit_verify(s3_deployment)
    end = last_seq(s3_deployment.engine)
    cut_tail(s3_deployment.engine, "registry", end - 2)
    cover_tracks(s3_deployment)

    done = audit_verify(s3_deployment)

    assert [item["Key"].rsplit("/", 1)[1] for item in listed["Contents"]][:2] == ["000000000001.json", "000000000002.json"]
    assert honest.returncode == 0, honest.stdout + honest.stderr
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"entry {end}: [truncated] the log is behind its witness: {s3_deployment.witness}" in done.stdout


def test_s3_heads_overwritten_or_deleted_with_the_registrys_credentials_are_seen(
    s3_deployment: Deployment, s3_server: Any
) -> None:
    """The adaptive attacker: the registry's key from the folder and its S3 credentials (it must
    be able to write heads), so they rewrite the history, re-sign it, overwrite every witnessed
    head to match, and hide the newest behind a delete marker. Object lock keeps the old versions."""
    d = s3_deployment
    stolen = load_private_key(d.home / "registry.key")
    edited = seq_of(d.engine, "access.grant")
    rewrite_from(d.engine, edited, '"role":"contributor"', '"role":"admin"', stolen)
    cover_tracks(d)
    hashes = {
        int(seq): bytes(digest)
        for seq, digest in sql(d.engine, "SELECT seq, entry_hash FROM audit_entries WHERE chain = 'registry'").all()
    }
    prefix = d.witness.removeprefix(f"s3://{s3_server.bucket}/") + "/registry/"
    keys = [item["Key"] for item in s3_server.client.list_objects_v2(Bucket=s3_server.bucket, Prefix=prefix)["Contents"]]
    for name in keys:
        head = WitnessedHead.from_json(
            s3_server.client.get_object(Bucket=s3_server.bucket, Key=name)["Body"].read(),
            "registry",
            int(name.rsplit("/", 1)[1].removesuffix(".json")),
        )
        forged = WitnessedHead(
            head.chain, head.counter, head.seq, hashes.get(head.seq, head.entry_hash), head.signed_at, head.key_id, b""
        )
        forged = WitnessedHead(**{**_fields(forged), "signature": sign_bytes(stolen, forged.message())})
        s3_server.client.put_object(Bucket=s3_server.bucket, Key=name, Body=forged.to_json())
    s3_server.client.delete_object(Bucket=s3_server.bucket, Key=keys[-1])

    done = audit_verify(d)

    assert done.returncode == 1, done.stdout + done.stderr
    assert f"witnessed head #{edited} at {d.witness} is not valid: overwritten: 2 versions of one head" in done.stdout
    assert f"witnessed head #{len(keys)} at {d.witness} is not valid: deleted: a delete marker hides it" in done.stdout
    assert "[forked]" not in done.stdout  # the current versions match the rewrite: only the history shows it


def _fields(head: WitnessedHead) -> dict[str, Any]:
    return {name: getattr(head, name) for name in WitnessedHead.__slots__}
