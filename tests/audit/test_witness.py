"""The witness and timed checkpoints against real SQLite and PostgreSQL, with an injected clock.

A chain signed only every 1,000 entries left the newest entries of a quiet gateway unsigned and
unwitnessed for as long as it stayed quiet, so cutting them went unseen (issue 10, section 4).
Time here is a `ManualClock`: nothing sleeps, and a timer runs when the test moves time past it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from bastion.audit import AuditEvent, AuditLog, AuditReport, ProblemKind
from bastion.audit.witness import Witness, WitnessedHead
from bastion.db.tables import audit_checkpoints
from bastion.sign.keys import PrivateKey
from corpus.clocks import ManualClock

CHAIN = "gateway"


def event(n: int) -> AuditEvent:
    return AuditEvent(f"key-{n % 3}", "infer", "fraud@1", {"n": n})


def gateway_log(engine: Engine, key: PrivateKey, clock: ManualClock, witness: Witness | None, **options: Any) -> AuditLog:
    settings: dict[str, Any] = {"checkpoint_every": 1000, "checkpoint_seconds": 30.0, **options}
    return AuditLog(
        engine, CHAIN, signing_key=key, witness=witness, clock=clock, scheduler=clock.schedule, **settings
    )


def signed_seqs(engine: Engine) -> list[int]:
    with engine.connect() as connection:
        rows = connection.execute(
            select(audit_checkpoints.c.seq).where(audit_checkpoints.c.chain == CHAIN).order_by(audit_checkpoints.c.seq)
        )
        return [int(seq) for (seq,) in rows]


def witnessed(witness: Witness) -> list[tuple[int, int]]:
    return [(head.counter, head.seq) for head in witness.read(CHAIN).heads]


def problems(report: AuditReport, kind: ProblemKind) -> list[str]:
    return [p.message for p in report.problems if p.kind is kind]


# --- checkpoints by time -----------------------------------------------------------------------


def test_a_waiting_tail_is_signed_and_witnessed_when_its_timer_falls_due(
    engine: Engine, signing_key: PrivateKey, tmp_path: Path
) -> None:
    clock, witness = ManualClock(), Witness(tmp_path / "vault")
    log = gateway_log(engine, signing_key, clock, witness)
    log.append(event(1))  # a writer's first write is signed and witnessed at once: the chain is anchored
    log.append_many([event(n) for n in range(2, 7)])
    before = (signed_seqs(engine), witnessed(witness))
    clock.advance(29.9)
    early = (signed_seqs(engine), witnessed(witness))
    clock.advance(0.1)

    assert before == early == ([1], [(1, 1)])
    assert signed_seqs(engine) == [1, 6]
    assert witnessed(witness) == [(1, 1), (2, 6)]
    assert clock.timers == []  # nothing waits, so no timer is left armed
    report = log.verify([signing_key.public_key()], witness, witness_required=True)
    assert report.ok, report.problems
    assert (report.last_signed_seq, report.last_witnessed_seq, report.unwitnessed_tail) == (6, 6, 0)


def test_an_append_after_the_interval_is_signed_in_its_own_transaction(
    engine: Engine, signing_key: PrivateKey, tmp_path: Path
) -> None:
    clock, witness = ManualClock(), Witness(tmp_path / "vault")
    log = gateway_log(engine, signing_key, clock, witness)
    log.append_many([event(n) for n in range(1, 4)])
    log.append(event(4))
    clock.now += timedelta(seconds=31)  # time passes, and the timer has not run yet
    log.append(event(5))

    assert signed_seqs(engine) == [3, 5]
    assert witnessed(witness) == [(1, 3), (2, 5)]


def test_the_count_still_signs_a_busy_chain(engine: Engine, signing_key: PrivateKey, tmp_path: Path) -> None:
    clock = ManualClock()
    log = gateway_log(engine, signing_key, clock, Witness(tmp_path / "vault"), checkpoint_every=10)
    for start in range(1, 41, 5):
        log.append_many([event(n) for n in range(start, start + 5)])

    assert signed_seqs(engine) == [5, 15, 25, 35]


def test_timed_checkpoints_can_be_turned_off(engine: Engine, signing_key: PrivateKey) -> None:
    clock = ManualClock()
    log = gateway_log(engine, signing_key, clock, None, checkpoint_seconds=None)
    log.append_many([event(n) for n in range(1, 6)])
    clock.advance(3600)
    log.append(event(6))

    assert signed_seqs(engine) == []
    assert clock.timers == []


def test_close_signs_and_witnesses_what_waits(engine: Engine, signing_key: PrivateKey, tmp_path: Path) -> None:
    clock, witness = ManualClock(), Witness(tmp_path / "vault")
    log = gateway_log(engine, signing_key, clock, witness)
    log.append_many([event(n) for n in range(1, 11)])
    log.append_many([event(n) for n in range(11, 21)])
    log.close()

    assert signed_seqs(engine) == [10, 20]
    assert witnessed(witness) == [(1, 10), (2, 20)]


# --- a witness that is missing, emptied or edited ----------------------------------------------


def written(engine: Engine, key: PrivateKey, witness: Witness, count: int = 12) -> AuditLog:
    """A chain of `count` entries whose every 3rd entry was signed and witnessed."""
    log = AuditLog(engine, CHAIN, signing_key=key, checkpoint_every=3, checkpoint_seconds=None, witness=witness)
    for n in range(1, count + 1):
        log.append(event(n))
    return log


def test_the_verifiers_own_witness_empty_is_a_missing_witness(
    engine: Engine, signing_key: PrivateKey, tmp_path: Path
) -> None:
    log = written(engine, signing_key, Witness(tmp_path / "vault"))

    report = log.verify([signing_key.public_key()], Witness(tmp_path / "elsewhere"), witness_required=True)

    assert [p.kind for p in report.problems] == [ProblemKind.WITNESS_MISSING]
    assert "holds no head of chain 'gateway', which has entries up to 12" in report.problems[0].message


def test_a_witness_deleted_shows_against_the_counter_the_database_keeps(
    engine: Engine, signing_key: PrivateKey, tmp_path: Path
) -> None:
    witness = Witness(tmp_path / "vault")
    log = written(engine, signing_key, witness)
    shutil.rmtree(tmp_path / "vault")

    report = log.verify([signing_key.public_key()], witness)

    assert problems(report, ProblemKind.WITNESS_MISSING) == [
        f"the database records witnessed head #4 but the witness at {witness.location} ends at #0: "
        "the witness was deleted or rolled back"
    ]


def test_a_witness_rolled_back_shows_against_the_counter_the_database_keeps(
    engine: Engine, signing_key: PrivateKey, tmp_path: Path
) -> None:
    witness = Witness(tmp_path / "vault")
    log = written(engine, signing_key, witness)
    for counter in (3, 4):
        (tmp_path / "vault" / CHAIN / f"{counter:012d}.json").unlink()

    report = log.verify([signing_key.public_key()], witness)

    assert [p.kind for p in report.problems] == [ProblemKind.WITNESS_MISSING]
    assert "records witnessed head #4 but the witness" in report.problems[0].message
    assert "ends at #2" in report.problems[0].message


def test_heads_removed_from_the_middle_or_garbled_are_reported(
    engine: Engine, signing_key: PrivateKey, tmp_path: Path
) -> None:
    witness = Witness(tmp_path / "vault")
    log = written(engine, signing_key, witness)
    folder = tmp_path / "vault" / CHAIN
    (folder / f"{2:012d}.json").unlink()
    (folder / f"{3:012d}.json").write_text("{}")

    report = log.verify([signing_key.public_key()], witness, witness_required=True)

    tampered = problems(report, ProblemKind.WITNESS_TAMPERED)
    assert len(tampered) == 2
    assert tampered[0].startswith("witnessed head #3 at") and "is not valid" in tampered[0]
    assert tampered[1] == f"witnessed head #2 is missing from {witness.location}: deleted"


def test_a_head_edited_to_match_a_cut_log_fails_its_signature(
    engine: Engine, signing_key: PrivateKey, tmp_path: Path
) -> None:
    witness = Witness(tmp_path / "vault")
    log = written(engine, signing_key, witness)
    path = tmp_path / "vault" / CHAIN / f"{4:012d}.json"
    head = WitnessedHead.from_json(path.read_bytes(), CHAIN, 4)
    path.write_bytes(
        WitnessedHead(CHAIN, 4, 9, head.entry_hash, head.signed_at, head.key_id, head.signature).to_json()
    )

    report = log.verify([signing_key.public_key()], witness)

    assert "witnessed head #4 (entry 9)" in problems(report, ProblemKind.BAD_SIGNATURE)[0]
    assert "entry 9 is not the entry witnessed" in problems(report, ProblemKind.FORKED)[0]


def test_writers_racing_for_the_next_head_take_different_counters(
    engine: Engine, signing_key: PrivateKey, tmp_path: Path
) -> None:
    first, second = Witness(tmp_path / "vault"), Witness(tmp_path / "vault")  # two processes, no shared state
    now = datetime.now(UTC)
    first.advance(signing_key, CHAIN, 5, bytes(32), now=now)
    taken = second.advance(signing_key, CHAIN, 7, bytes(32), now=now)  # expects #1, finds it taken

    assert taken is not None and taken.counter == 2
    assert witnessed(first) == [(1, 5), (2, 7)]
    assert list((tmp_path / "vault" / CHAIN).iterdir()) != []
    assert not [p for p in (tmp_path / "vault" / CHAIN).iterdir() if p.name.startswith(".staging")]


def test_a_witness_is_never_overwritten(signing_key: PrivateKey, tmp_path: Path) -> None:
    witness = Witness(tmp_path / "vault")
    witness.advance(signing_key, CHAIN, 5, bytes(32), now=datetime.now(UTC))
    path = tmp_path / "vault" / CHAIN / f"{1:012d}.json"
    original = path.read_bytes()

    with pytest.raises(FileExistsError, match="exists"):
        witness._create(str(path), b"{}")  # the primitive every head goes through

    assert path.read_bytes() == original


def test_heads_planted_to_exhaust_the_verifier_are_refused_unread(
    engine: Engine, signing_key: PrivateKey, tmp_path: Path
) -> None:
    witness = Witness(tmp_path / "vault")
    log = written(engine, signing_key, witness)
    folder = tmp_path / "vault" / CHAIN
    (folder / f"{5:012d}.json").write_bytes(b" " * 50_000_000)
    (folder / f"{6:012d}.json").write_bytes(b"[" * 4000)

    report = log.verify([signing_key.public_key()], witness)

    tampered = problems(report, ProblemKind.WITNESS_TAMPERED)
    assert tampered[0] == f"witnessed head #5 at {witness.location} is not valid: too large: 50000000 bytes"
    assert tampered[1].startswith(f"witnessed head #6 at {witness.location} is not valid: not a witnessed head")


def test_a_timed_checkpoint_that_fails_is_retried_an_interval_later_not_at_once(
    engine: Engine, signing_key: PrivateKey, tmp_path: Path, make_unreachable: Callable[[Engine], None]
) -> None:
    clock = ManualClock()
    log = gateway_log(engine, signing_key, clock, None)
    log.append_many([event(n) for n in range(1, 4)])
    make_unreachable(engine)
    clock.advance(30)  # the timer fires; the database is gone

    assert [at - clock.now for at, _ in clock.timers] == [timedelta(seconds=30)]


def test_a_clock_set_back_does_not_hold_a_waiting_tail_unsigned(
    engine: Engine, signing_key: PrivateKey, tmp_path: Path
) -> None:
    clock = ManualClock()
    log = gateway_log(engine, signing_key, clock, None)
    log.append_many([event(n) for n in range(1, 4)])
    clock.now -= timedelta(hours=6)  # the system clock is set back
    log.append(event(4))

    assert signed_seqs(engine) == [4]


_SIGN_IN_A_CALLERS_TRANSACTION = """
import sys
from pathlib import Path
from bastion.audit import AuditEvent, AuditLog, Witness
from bastion.db import connect, writer
from bastion.sign.keys import load_private_key
url, key, vault, commit = sys.argv[1:]
engine = connect(url)
log = AuditLog(engine, "gateway", signing_key=load_private_key(Path(key)), checkpoint_every=1, witness=Witness(vault))
try:
    with writer(engine).begin() as connection:  # as KeyStore writes a key change and its entry
        log.append(AuditEvent("admin", "key.create", "key-1"), connection=connection)
        if commit == "rollback":
            raise RuntimeError("the change failed after its entry was written")
except RuntimeError:
    pass
"""


@pytest.mark.parametrize("outcome", ["commit", "rollback"])
def test_a_command_that_signs_in_its_own_transaction_leaves_it_witnessed_when_it_exits(
    database_url: str, engine: Engine, signing_key: PrivateKey, tmp_path: Path, outcome: str
) -> None:
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat  # noqa: PLC0415

    key = tmp_path / "registry.key"
    key.write_bytes(signing_key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    done = subprocess.run(
        [sys.executable, "-c", _SIGN_IN_A_CALLERS_TRANSACTION, database_url, str(key), str(tmp_path / "vault"), outcome],
        capture_output=True,
        text=True,
        check=False,
    )
    witness = Witness(tmp_path / "vault")

    assert done.returncode == 0, done.stderr
    report = AuditLog(engine, CHAIN).verify([signing_key.public_key()], witness, witness_required=True)
    if outcome == "commit":
        assert witnessed(witness) == [(1, 1)]
        assert report.ok, report.problems
    else:  # nothing committed, so nothing may be witnessed: a head the log never had would be a false alarm
        assert all(seq == 0 for _, seq in witnessed(witness))
        assert report.last_seq == 0 and report.ok, report.problems
