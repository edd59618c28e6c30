"""The audit log against real SQLite and PostgreSQL: what verify finds after each kind of tampering.

Every tamper test changes the tables the way someone with database access but without the
signing key would: plain SQL on `audit_entries`, `audit_checkpoints` and `audit_heads`. Each
asserts the ProblemKind, the seq it is reported at, and that the message names that entry.

The tests at the end reproduce bugs these tests found, now fixed, and guard against their return.
"""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing
import re
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from sqlalchemy import Connection, Engine, select, text

from bastion.audit import AuditEntry, AuditEvent, AuditLog, AuditProblem, AuditReport, ProblemKind
from bastion.audit.model import GENESIS, entry_body
from bastion.audit.writer import AuditWriter
from bastion.db import connect
from bastion.db.tables import audit_heads
from bastion.errors import BackendUnavailable
from bastion.sign.keys import PrivateKey
from corpus.hang_guard import HANG_GUARD

CHAIN = "registry"
# Fork where there is one: a spawned child spends most of its life importing SQLAlchemy.
_START_METHOD = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"


def event(n: int) -> AuditEvent:
    """The n-th event: its actor and subject name n, so an edit to one entry is easy to aim."""
    return AuditEvent(
        actor=f"user-{n}",
        action="PROMOTE" if n % 2 else "ROLLBACK",
        subject=f"fraud-detector@{n}",
        details={"n": n, "score": n / 7, "note": "modèle ✓ 模型", "tags": ["prod", {"by": None}]},
    )


def filled(engine: Engine, count: int, **options: Any) -> tuple[AuditLog, list[AuditEntry]]:
    log = AuditLog(engine, CHAIN, **options)
    written = [log.append(event(n)) for n in range(1, count + 1)]
    return log, written


def the_problem(report: AuditReport, kind: ProblemKind, seq: int) -> AuditProblem:
    """The problem of `kind` reported at `seq`, whose message must name that entry."""
    found = [p for p in report.problems if p.kind is kind and p.seq == seq]
    assert found, f"no {kind} at {seq} in {report.problems}"
    assert re.search(rf"(?<![\d-]){seq}(?!\d)", found[0].message), found[0].message
    return found[0]


def kinds(report: AuditReport) -> set[ProblemKind]:
    return {p.kind for p in report.problems}


# --- out-of-band changes, as a database user without the key would make them --------------


def run_sql(engine: Engine, sql: str, **params: Any) -> None:
    with engine.begin() as connection:
        connection.execute(text(sql), {"chain": CHAIN, **params})


def stored_hash(engine: Engine, seq: int) -> bytes:
    if seq == 0:
        return GENESIS
    with engine.connect() as connection:
        value = connection.execute(
            text("SELECT entry_hash FROM audit_entries WHERE chain = :chain AND seq = :seq"),
            {"chain": CHAIN, "seq": seq},
        ).scalar_one()
    return bytes(value)


def edit_actor(engine: Engine, seq: int, new_actor: str) -> None:
    run_sql(
        engine,
        "UPDATE audit_entries SET body = REPLACE(body, :old, :new) WHERE chain = :chain AND seq = :seq",
        old=f'"actor":"user-{seq}"',
        new=f'"actor":"{new_actor}"',
        seq=seq,
    )


def relink_from(engine: Engine, first: int, *, through: int | None = None) -> None:
    """Recompute prev_hash and entry_hash from entry `first` (to `through`, or the end and the head)."""
    previous = stored_hash(engine, first - 1)
    with engine.begin() as connection:
        rows = connection.execute(
            text("SELECT seq, body FROM audit_entries WHERE chain = :chain AND seq >= :first ORDER BY seq"),
            {"chain": CHAIN, "first": first},
        ).all()
        for seq, body in rows:
            if through is not None and seq > through:
                break
            digest = hashlib.sha256(previous + body.encode()).digest()
            connection.execute(
                text(
                    "UPDATE audit_entries SET prev_hash = :prev, entry_hash = :hash WHERE chain = :chain AND seq = :seq"
                ),
                {"prev": previous, "hash": digest, "chain": CHAIN, "seq": seq},
            )
            previous = digest
        if through is None:
            connection.execute(
                text("UPDATE audit_heads SET entry_hash = :hash WHERE chain = :chain"),
                {"hash": previous, "chain": CHAIN},
            )


def forge_entry(engine: Engine, seq: int, actor: str = "mallory") -> bytes:
    """Insert a well-formed entry at `seq` that links to the entry stored at `seq - 1`."""
    body = entry_body(CHAIN, seq, datetime.now(UTC), AuditEvent(actor, "PROMOTE", "backdoor@1"))
    previous = stored_hash(engine, seq - 1) if seq > 1 else bytes(32)
    digest = hashlib.sha256(previous + body.encode()).digest()
    run_sql(
        engine,
        "INSERT INTO audit_entries (chain, seq, body, prev_hash, entry_hash) VALUES (:chain, :seq, :body, :prev, :hash)",
        seq=seq,
        body=body,
        prev=previous,
        hash=digest,
    )
    return digest


# --- an intact log -------------------------------------------------------------------------


def test_intact_log_verifies_and_round_trips(engine: Engine, signing_key: PrivateKey) -> None:
    log, written = filled(engine, 25, signing_key=signing_key, checkpoint_every=5)

    report = log.verify([signing_key.public_key()])

    assert report.ok, report.problems
    assert (report.entries, report.last_seq, report.checkpoints, report.last_signed_seq) == (25, 25, 5, 25)
    assert report.unsigned_tail == 0
    assert [e.seq for e in written] == list(range(1, 26))
    read = list(log.entries())
    assert read == written
    assert [(e.actor, e.action, e.subject, e.details) for e in read[:2]] == [
        ("user-1", "PROMOTE", "fraud-detector@1", event(1).details),
        ("user-2", "ROLLBACK", "fraud-detector@2", event(2).details),
    ]
    assert [e.seq for e in log.entries(after=20)] == [21, 22, 23, 24, 25]


def test_export_is_one_json_line_per_entry_that_rechecks_offline(engine: Engine) -> None:
    log, written = filled(engine, 12)
    out = io.StringIO()

    assert log.export_jsonl(out) == 12

    lines = out.getvalue().splitlines()
    assert len(lines) == 12
    previous = GENESIS.hex()
    for line, entry in zip(lines, written, strict=True):
        record = json.loads(line)
        assert record["seq"] == entry.seq
        assert record["entry_hash"] == entry.entry_hash
        assert record["prev_hash"] == previous
        assert record["body"]["actor"] == entry.actor
        # Whoever holds only the export can recheck the chain from the canonical body.
        canonical = json.dumps(record["body"], separators=(",", ":"), ensure_ascii=False)
        assert hashlib.sha256(bytes.fromhex(previous) + canonical.encode()).hexdigest() == entry.entry_hash
        previous = entry.entry_hash


def test_empty_log_verifies(engine: Engine, signing_key: PrivateKey) -> None:
    report = AuditLog(engine, CHAIN, signing_key=signing_key).verify([signing_key.public_key()])
    assert report.ok
    assert (report.entries, report.last_seq, report.unsigned_tail) == (0, 0, 0)


# --- tampering with entries ----------------------------------------------------------------


def test_edited_body_is_reported_at_that_entry(engine: Engine) -> None:
    log, _ = filled(engine, 20)
    edit_actor(engine, 7, "mallory")

    report = log.verify([])

    assert [(p.kind, p.seq) for p in report.problems] == [(ProblemKind.EDITED, 7)]
    assert "entry 7 was edited" in the_problem(report, ProblemKind.EDITED, 7).message


def test_edit_with_its_hash_recomputed_breaks_the_next_link(engine: Engine) -> None:
    log, _ = filled(engine, 20)
    edit_actor(engine, 7, "mallory")
    relink_from(engine, 7, through=7)

    report = log.verify([])

    assert [(p.kind, p.seq) for p in report.problems] == [(ProblemKind.BROKEN_LINK, 8)]
    assert "entry 8 does not follow entry 7" in the_problem(report, ProblemKind.BROKEN_LINK, 8).message


def test_whole_chain_recomputed_after_an_edit_is_caught_by_the_next_checkpoint(
    engine: Engine, signing_key: PrivateKey
) -> None:
    log, _ = filled(engine, 20, signing_key=signing_key, checkpoint_every=4)
    edit_actor(engine, 10, "mallory")
    relink_from(engine, 10)  # a forger without the key: every hash and the head made consistent

    report = log.verify([signing_key.public_key()])

    assert kinds(report) == {ProblemKind.REWRITTEN}
    assert [p.seq for p in report.problems] == [12, 16, 20]
    assert "entries up to 12 were rewritten" in the_problem(report, ProblemKind.REWRITTEN, 12).message


def test_deleted_middle_entry_is_missing(engine: Engine) -> None:
    log, _ = filled(engine, 20)
    run_sql(engine, "DELETE FROM audit_entries WHERE chain = :chain AND seq = 9")

    report = log.verify([])

    assert [(p.kind, p.seq) for p in report.problems] == [(ProblemKind.MISSING, 9)]
    assert "entry 9 is missing" in the_problem(report, ProblemKind.MISSING, 9).message
    assert report.entries == 19


def test_deleted_tail_with_the_head_moved_back_is_caught_by_checkpoints(
    engine: Engine, signing_key: PrivateKey
) -> None:
    log, _ = filled(engine, 20, signing_key=signing_key, checkpoint_every=4)
    run_sql(engine, "DELETE FROM audit_entries WHERE chain = :chain AND seq > 14")
    run_sql(
        engine,
        "UPDATE audit_heads SET seq = 14, entry_hash = :hash, checkpoint_seq = 12 WHERE chain = :chain",
        hash=stored_hash(engine, 14),
    )

    report = log.verify([signing_key.public_key()])

    assert kinds(report) == {ProblemKind.TRUNCATED}
    assert [p.seq for p in report.problems] == [16, 20]
    message = the_problem(report, ProblemKind.TRUNCATED, 16).message
    assert "covers entry 16 but the log ends at 14" in message
    assert report.last_seq == 14


def test_deleted_tail_with_the_head_left_is_a_head_mismatch(engine: Engine) -> None:
    log, _ = filled(engine, 20)
    run_sql(engine, "DELETE FROM audit_entries WHERE chain = :chain AND seq > 17")

    report = log.verify([])

    assert [(p.kind, p.seq) for p in report.problems] == [(ProblemKind.HEAD_MISMATCH, 17)]
    assert "ends at entry 20 but the last entry is 17" in the_problem(report, ProblemKind.HEAD_MISMATCH, 17).message


def test_swapped_entries_are_out_of_place(engine: Engine) -> None:
    log, _ = filled(engine, 20)
    swap = "UPDATE audit_entries SET seq = :to WHERE chain = :chain AND seq = :at"
    run_sql(engine, swap, at=5, to=-1)
    run_sql(engine, swap, at=11, to=5)
    run_sql(engine, swap, at=-1, to=11)

    report = log.verify([])

    assert {ProblemKind.OUT_OF_PLACE, ProblemKind.BROKEN_LINK} == kinds(report)
    assert "position 5 holds the entry written as 11" in the_problem(report, ProblemKind.OUT_OF_PLACE, 5).message
    assert "position 11 holds the entry written as 5" in the_problem(report, ProblemKind.OUT_OF_PLACE, 11).message
    assert ProblemKind.EDITED not in kinds(report)  # moved, not changed


def test_entry_slipped_into_the_middle_by_renumbering_is_detected(engine: Engine) -> None:
    log, _ = filled(engine, 20)
    # Make room at 10 (through negative numbers, so no (chain, seq) key collides on the way).
    run_sql(engine, "UPDATE audit_entries SET seq = -(seq + 1) WHERE chain = :chain AND seq >= 10")
    run_sql(engine, "UPDATE audit_entries SET seq = -seq WHERE chain = :chain AND seq < 0")
    forge_entry(engine, 10)
    run_sql(
        engine, "UPDATE audit_heads SET seq = 21, entry_hash = :hash WHERE chain = :chain", hash=stored_hash(engine, 21)
    )

    report = log.verify([])

    assert kinds(report) == {ProblemKind.OUT_OF_PLACE, ProblemKind.BROKEN_LINK}
    assert [(p.kind, p.seq) for p in report.problems] == [
        (ProblemKind.OUT_OF_PLACE, 11),
        (ProblemKind.BROKEN_LINK, 11),
    ]
    assert "position 11 holds the entry written as 10" in the_problem(report, ProblemKind.OUT_OF_PLACE, 11).message
    assert "entry 11 does not follow entry 10" in the_problem(report, ProblemKind.BROKEN_LINK, 11).message


def test_entry_slipped_in_under_a_checkpoint_is_rewritten(engine: Engine, signing_key: PrivateKey) -> None:
    log, _ = filled(engine, 20, signing_key=signing_key, checkpoint_every=5)
    run_sql(engine, "UPDATE audit_entries SET seq = -(seq + 1) WHERE chain = :chain AND seq >= 10")
    run_sql(engine, "UPDATE audit_entries SET seq = -seq WHERE chain = :chain AND seq < 0")
    forge_entry(engine, 10)
    run_sql(
        engine, "UPDATE audit_heads SET seq = 21, entry_hash = :hash WHERE chain = :chain", hash=stored_hash(engine, 21)
    )

    report = log.verify([signing_key.public_key()])

    the_problem(report, ProblemKind.REWRITTEN, 10)  # the checkpoint at 10 signed the real entry 10
    the_problem(report, ProblemKind.OUT_OF_PLACE, 11)


# --- what the design can and cannot see ----------------------------------------------------


def test_entry_forged_after_the_last_checkpoint_shows_only_as_unsigned_tail(
    engine: Engine, signing_key: PrivateKey
) -> None:
    """A database writer can extend the chain past the last signature; nothing can tell yet.

    The report is clean; only `unsigned_tail` says that entry 11 is vouched for by no
    signature. Worse, the key holder's next checkpoint signs whatever head the database
    shows, so it seals the forged entry: checkpoints prove the log was not changed *after*
    they were made, not that what they cover was written by Bastion.
    """
    log, _ = filled(engine, 10, signing_key=signing_key, checkpoint_every=5)
    forged = forge_entry(engine, 11)
    run_sql(engine, "UPDATE audit_heads SET seq = 11, entry_hash = :hash WHERE chain = :chain", hash=forged)

    report = log.verify([signing_key.public_key()])

    assert report.ok
    assert (report.last_seq, report.last_signed_seq, report.unsigned_tail) == (11, 10, 1)

    assert log.checkpoint() == 11
    sealed = log.verify([signing_key.public_key()])
    assert sealed.ok
    assert sealed.unsigned_tail == 0
    assert [e.actor for e in log.entries(after=10)] == ["mallory"]


def test_removing_checkpoints_turns_signed_entries_back_into_an_unsigned_tail(
    engine: Engine, signing_key: PrivateKey
) -> None:
    """Checkpoint rows live beside the entries, so a database writer can delete the later ones
    and rewrite what they covered; the report stays clean and only `unsigned_tail` grows.
    A caller must hold the log to a bound on it (e.g. no more than `checkpoint_every`).
    """
    log, _ = filled(engine, 20, signing_key=signing_key, checkpoint_every=4)
    run_sql(engine, "DELETE FROM audit_checkpoints WHERE chain = :chain AND seq > 8")
    edit_actor(engine, 10, "mallory")
    relink_from(engine, 10)

    report = log.verify([signing_key.public_key()])

    assert report.ok
    assert (report.checkpoints, report.last_signed_seq, report.unsigned_tail) == (2, 8, 12)


# --- tampering with checkpoints ------------------------------------------------------------


def test_altered_checkpoint_signature_is_bad(engine: Engine, signing_key: PrivateKey) -> None:
    log, _ = filled(engine, 20, signing_key=signing_key, checkpoint_every=5)
    with engine.begin() as connection:
        signature = connection.execute(
            text("SELECT signature FROM audit_checkpoints WHERE chain = :chain AND seq = 10"), {"chain": CHAIN}
        ).scalar_one()
        flipped = bytes([signature[0] ^ 1]) + bytes(signature[1:])
        connection.execute(
            text("UPDATE audit_checkpoints SET signature = :sig WHERE chain = :chain AND seq = 10"),
            {"sig": flipped, "chain": CHAIN},
        )

    report = log.verify([signing_key.public_key()])

    assert [(p.kind, p.seq) for p in report.problems] == [(ProblemKind.BAD_SIGNATURE, 10)]
    assert "checkpoint 10's signature" in the_problem(report, ProblemKind.BAD_SIGNATURE, 10).message


def test_checkpoints_by_a_key_not_trusted_here_are_unknown(
    engine: Engine, signing_key: PrivateKey, other_key: PrivateKey
) -> None:
    log, _ = filled(engine, 10, signing_key=signing_key, checkpoint_every=5)

    report = log.verify([other_key.public_key()])

    assert [(p.kind, p.seq) for p in report.problems] == [(ProblemKind.UNKNOWN_KEY, 5), (ProblemKind.UNKNOWN_KEY, 10)]
    assert "checkpoint 5 is signed by key" in the_problem(report, ProblemKind.UNKNOWN_KEY, 5).message


# --- concurrency ---------------------------------------------------------------------------


def _append_in_process(url: str, key_bytes: bytes, worker: int, count: int) -> None:
    log = AuditLog(
        connect(url), CHAIN, signing_key=ed25519.Ed25519PrivateKey.from_private_bytes(key_bytes), checkpoint_every=50
    )
    for n in range(count):
        log.append(AuditEvent(f"worker-{worker}", "APPEND", f"item@{n}", {"n": n}))


def test_processes_appending_at_once_extend_one_chain(
    engine: Engine, database_url: str, signing_key: PrivateKey
) -> None:
    log = AuditLog(engine, CHAIN, signing_key=signing_key, checkpoint_every=50)  # schema and head exist
    raw = signing_key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    context = multiprocessing.get_context(_START_METHOD)
    workers = [context.Process(target=_append_in_process, args=(database_url, raw, w, 200)) for w in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=HANG_GUARD)
    assert [w.exitcode for w in workers] == [0, 0, 0, 0]

    report = log.verify([signing_key.public_key()])

    assert report.ok, report.problems
    assert (report.entries, report.last_seq) == (800, 800)
    entries = list(log.entries())
    assert [e.seq for e in entries] == list(range(1, 801))
    for w in range(4):  # each worker's entries kept their own order
        assert [e.subject for e in entries if e.actor == f"worker-{w}"] == [f"item@{n}" for n in range(200)]


def test_writer_threads_share_commits_and_keep_the_chain_intact(engine: Engine, signing_key: PrivateKey) -> None:
    log = AuditLog(engine, CHAIN, signing_key=signing_key, checkpoint_every=1)  # one checkpoint per commit

    def caller(thread: int) -> list[AuditEntry]:
        return [writer.append(AuditEvent(f"thread-{thread}", "APPEND", f"item@{n}")) for n in range(100)]

    with AuditWriter(log) as writer, ThreadPoolExecutor(8) as pool:
        results = [future.result(timeout=HANG_GUARD) for future in [pool.submit(caller, t) for t in range(8)]]

    report = log.verify([signing_key.public_key()])
    assert report.ok, report.problems
    assert sorted(e.seq for batch in results for e in batch) == list(range(1, 801))
    assert report.last_seq == 800
    assert report.checkpoints < 800  # fewer commits than appends: waiting callers shared them
    by_seq = {e.seq: e for e in log.entries()}
    assert all(by_seq[e.seq] == e for batch in results for e in batch)


def test_writer_raises_when_the_database_is_gone(engine: Engine, make_unreachable: Callable[[Engine], None]) -> None:
    log = AuditLog(engine, CHAIN)
    with AuditWriter(log) as writer:
        writer.append(event(1))
        make_unreachable(engine)
        for n in (2, 3):  # and keeps failing fast, not only the first time
            with pytest.raises(BackendUnavailable, match="cannot write the audit log"):
                writer.submit(event(n)).result(timeout=HANG_GUARD)  # a hang guard, not a speed bound
        with pytest.raises(BackendUnavailable, match="cannot write the audit log"):
            writer.append(event(4))


# --- bugs found by these tests, fixed ------------------------------------------------------


def test_append_to_a_database_that_is_gone_is_backend_unavailable(
    engine: Engine, make_unreachable: Callable[[Engine], None]
) -> None:
    log = AuditLog(engine, CHAIN)
    make_unreachable(engine)
    with pytest.raises(BackendUnavailable, match="cannot write the audit log"):
        log.append(event(1))


def test_a_cancelled_submission_does_not_stop_the_writer(engine: Engine) -> None:
    log = AuditLog(engine, CHAIN)
    with AuditWriter(log) as writer:
        with engine.connect() as blocker, blocker.begin():
            blocker.execute(select(audit_heads.c.seq).with_for_update())  # the writer waits behind this
            first = writer.submit(event(1))
            cancelled = writer.submit(event(2))
            assert cancelled.cancel()
        first.result(timeout=HANG_GUARD)  # hang guards, not speed bounds
        later = writer.submit(event(3))
        assert later.result(timeout=HANG_GUARD).actor == "user-3"  # hangs for ever if the writer thread is dead


def test_verify_while_another_writer_appends_finds_no_problem(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    log, _ = filled(engine, 5)
    other = AuditLog(engine, CHAIN)
    read_entries = log._rows

    def rows_after_a_concurrent_append(
        after: int | None = None, connection: Connection | None = None
    ) -> Iterator[tuple[int, str, bytes, bytes]]:
        other.append(event(6))  # another process, between verify's reads of the head and of the entries
        yield from read_entries(after, connection)

    monkeypatch.setattr(log, "_rows", rows_after_a_concurrent_append)

    report = log.verify([])

    assert report.ok, report.problems


def test_entries_copied_from_another_chain_are_reported(engine: Engine) -> None:
    log, _ = filled(engine, 5)
    other = AuditLog(engine, "gateway")
    for n in range(1, 6):
        other.append(AuditEvent("gateway", "SERVE", f"model@{n}"))
    run_sql(engine, "DELETE FROM audit_entries WHERE chain = :chain")
    run_sql(
        engine,
        "INSERT INTO audit_entries (chain, seq, body, prev_hash, entry_hash) "
        "SELECT :chain, seq, body, prev_hash, entry_hash FROM audit_entries WHERE chain = 'gateway'",
    )
    run_sql(
        engine,
        "UPDATE audit_heads SET entry_hash = (SELECT entry_hash FROM audit_heads WHERE chain = 'gateway') "
        "WHERE chain = :chain",
    )

    assert {e.chain for e in log.entries()} == {"gateway"}  # what the registry chain now holds
    report = log.verify([])

    assert not report.ok
    assert report.problems[0].seq == 1


def test_entry_forged_before_the_first_is_not_called_missing(engine: Engine) -> None:
    log, _ = filled(engine, 5)
    forge_entry(engine, 0)

    report = log.verify([])

    assert not report.ok
    assert ProblemKind.MISSING not in kinds(report), report.problems


def test_reading_the_log_on_sqlite_does_not_block_appends(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    reader_engine, writer_engine = connect(url), connect(url)
    try:
        log, _ = filled(reader_engine, 5)
        writer_log = AuditLog(writer_engine, CHAIN)
        reading = log.entries()
        next(reading)  # e.g. an export being streamed to a slow client
        appended = threading.Event()
        thread = threading.Thread(target=lambda: (writer_log.append(event(6)), appended.set()))
        thread.start()
        try:
            assert appended.wait(1), "the append waited for the reader"
        finally:
            reading.close()
            thread.join()
    finally:
        reader_engine.dispose()
        writer_engine.dispose()


def _connect_in_process(url: str, start: Any) -> None:
    start.wait()  # all at once, as the workers of one service do on its first start
    connect(url).dispose()


def test_processes_starting_on_a_fresh_postgres_database_all_connect(empty_postgres_url: str) -> None:
    context = multiprocessing.get_context(_START_METHOD)
    start = context.Barrier(4)
    workers = [context.Process(target=_connect_in_process, args=(empty_postgres_url, start)) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=HANG_GUARD)
    assert [w.exitcode for w in workers] == [0, 0, 0, 0]
