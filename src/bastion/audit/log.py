"""The audit log on SQLAlchemy: appends inside the caller's transaction, checks from the database.

Each entry's hash is SHA-256(previous entry's hash + its canonical body), so an entry cannot be
edited, removed, moved or slipped in without breaking the chain. A writer with database access
could recompute the whole chain after the point it changes; the signed checkpoints stop that:
every `checkpoint_every` entries the head's hash is signed with a key the database does not hold.

Appends serialise on the chain's row in `audit_heads` (`SELECT ... FOR UPDATE` on PostgreSQL,
`BEGIN IMMEDIATE` on SQLite), so concurrent writers in many processes extend one chain.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import IO

from sqlalchemy import Connection, Engine, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError, OperationalError

from bastion.audit.model import (
    GENESIS,
    AuditEntry,
    AuditEvent,
    AuditProblem,
    AuditReport,
    Checkpoint,
    ProblemKind,
    body_prefix,
    checkpoint_message,
    entry_body,
)
from bastion.db.engine import snapshot, writer
from bastion.db.tables import audit_checkpoints, audit_entries, audit_heads
from bastion.errors import BackendUnavailable, ConfigError
from bastion.sign.keys import PrivateKey, PublicKey
from bastion.sign.raw import key_id, sign_bytes, signature_valid

MAX_LISTED_PROBLEMS = 200

# Built once: statement construction costs more than SQLite's own work on the append path.
_LOCK_HEAD = (
    select(audit_heads.c.seq, audit_heads.c.entry_hash, audit_heads.c.checkpoint_seq)
    .where(audit_heads.c.chain == bindparam("chain"))
    .with_for_update()
)
_MOVE_HEAD = (
    update(audit_heads)
    .where(audit_heads.c.chain == bindparam("b_chain"))
    .values(seq=bindparam("b_seq"), entry_hash=bindparam("b_hash"), checkpoint_seq=bindparam("b_checkpoint"))
)
_INSERT_ENTRY = insert(audit_entries)


class AuditLog:
    """One named chain of entries in the database behind `engine`."""

    def __init__(
        self,
        engine: Engine,
        chain: str = "registry",
        *,
        signing_key: PrivateKey | None = None,
        checkpoint_every: int = 1,
    ) -> None:
        self.engine = engine
        self._writes = writer(engine)
        self.chain = chain
        self.signing_key = signing_key
        self.checkpoint_every = max(1, checkpoint_every)
        self._ensure_head()

    def _ensure_head(self) -> None:
        with self.engine.connect() as connection:
            exists = connection.execute(select(audit_heads.c.seq).where(audit_heads.c.chain == self.chain)).first()
        if exists is not None:
            return
        try:
            with self._writes.begin() as connection:
                connection.execute(
                    insert(audit_heads).values(chain=self.chain, seq=0, entry_hash=GENESIS, checkpoint_seq=0)
                )
        except IntegrityError:
            pass  # another process created it first

    # --- writing -------------------------------------------------------------------------

    def append(self, event: AuditEvent, *, connection: Connection | None = None) -> AuditEntry:
        """Record `event`; durable when the transaction commits (at once without `connection`)."""
        return self.append_many([event], connection=connection)[0]

    def append_many(self, events: Sequence[AuditEvent], *, connection: Connection | None = None) -> list[AuditEntry]:
        """Record several events in one transaction: one commit, one checkpoint at most."""
        if connection is not None:
            return self._append_in(connection, events)
        try:
            with self._writes.begin() as own:
                return self._append_in(own, events)
        except OperationalError as err:
            raise BackendUnavailable(f"cannot write the audit log: {err.orig}") from err

    def _append_in(self, connection: Connection, events: Sequence[AuditEvent]) -> list[AuditEntry]:
        head = connection.execute(_LOCK_HEAD, {"chain": self.chain}).one()
        seq, previous, checkpoint_seq = int(head.seq), bytes(head.entry_hash), int(head.checkpoint_seq)
        now = datetime.now(UTC)
        rows, written = [], []
        for event in events:
            seq += 1
            body = entry_body(self.chain, seq, now, event)
            digest = hashlib.sha256(previous + body.encode()).digest()
            rows.append({"chain": self.chain, "seq": seq, "body": body, "prev_hash": previous, "entry_hash": digest})
            written.append(
                AuditEntry(self.chain, seq, now, event.actor, event.action, event.subject, event.details, digest.hex())
            )
            previous = digest
        if rows:
            connection.execute(_INSERT_ENTRY, rows)
        if self.signing_key is not None and seq - checkpoint_seq >= self.checkpoint_every:
            self._checkpoint_in(connection, seq, previous, now)
            checkpoint_seq = seq
        connection.execute(
            _MOVE_HEAD, {"b_chain": self.chain, "b_seq": seq, "b_hash": previous, "b_checkpoint": checkpoint_seq}
        )
        return written

    def _checkpoint_in(self, connection: Connection, seq: int, entry_hash: bytes, now: datetime) -> None:
        if self.signing_key is None:
            return
        signature = sign_bytes(self.signing_key, checkpoint_message(self.chain, seq, entry_hash, now))
        connection.execute(
            insert(audit_checkpoints).values(
                chain=self.chain,
                seq=seq,
                entry_hash=entry_hash,
                signed_at=now,
                key_id=key_id(self.signing_key.public_key()),
                signature=signature,
            )
        )

    def checkpoint(self) -> int:
        """Sign the current head now (e.g. at shutdown); returns the sequence number covered."""
        if self.signing_key is None:
            return 0
        with self._writes.begin() as connection:
            head = connection.execute(
                select(audit_heads).where(audit_heads.c.chain == self.chain).with_for_update()
            ).one()
            if head.seq > head.checkpoint_seq:
                self._checkpoint_in(connection, int(head.seq), bytes(head.entry_hash), datetime.now(UTC))
                connection.execute(
                    update(audit_heads).where(audit_heads.c.chain == self.chain).values(checkpoint_seq=head.seq)
                )
            return int(head.seq)

    # --- reading -------------------------------------------------------------------------

    def _rows(
        self, after: int | None = None, connection: Connection | None = None
    ) -> Iterator[tuple[int, str, bytes, bytes]]:
        """Every row of the chain in order (after `after` if given): even rows numbered 0 or below."""
        if connection is None:
            with self.engine.connect() as own:
                yield from self._rows(after, own)
            return
        query = (
            select(audit_entries.c.seq, audit_entries.c.body, audit_entries.c.prev_hash, audit_entries.c.entry_hash)
            .where(audit_entries.c.chain == self.chain)
            .order_by(audit_entries.c.seq)
        )
        if after is not None:
            query = query.where(audit_entries.c.seq > after)
        result = connection.execution_options(stream_results=True, yield_per=20_000).execute(query)
        for seq, body, prev_hash, entry_hash in result:
            yield int(seq), body, bytes(prev_hash), bytes(entry_hash)

    def entries(self, after: int | None = None) -> Iterator[AuditEntry]:
        """The entries in order, as recorded (check them with `verify` before trusting them)."""
        for _seq, body, _prev, entry_hash in self._rows(after):
            yield AuditEntry.from_body(body, entry_hash)

    def export_jsonl(self, stream: IO[str]) -> int:
        """Write every entry as one JSON line with its hashes; returns how many were written."""
        count = 0
        for seq, body, prev_hash, entry_hash in self._rows():
            record = {"seq": seq, "body": json.loads(body), "prev_hash": prev_hash.hex(), "entry_hash": entry_hash.hex()}
            stream.write(json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n")
            count += 1
        return count

    # --- checking ------------------------------------------------------------------------

    def verify(self, trusted_keys: Iterable[PublicKey], witness: Checkpoint | None = None) -> AuditReport:
        """Walk the chain from its first entry and report every departure from what was written.

        `witness` is a signed head kept outside the database (see `bastion.audit.witness`):
        checked like a checkpoint, it also catches the newest entries cut off together with
        the checkpoints that covered them.
        """
        keys = {key_id(key): key for key in trusted_keys}
        # One snapshot for the checkpoints, the head and the entries, so that appends made
        # meanwhile by others are neither half-seen nor reported as problems.
        with snapshot(self.engine).connect() as connection:
            checkpoints = {
                int(row.seq): Checkpoint(
                    int(row.seq), bytes(row.entry_hash), row.signed_at, row.key_id, bytes(row.signature)
                )
                for row in connection.execute(
                    select(audit_checkpoints).where(audit_checkpoints.c.chain == self.chain)
                )
            }
            head = connection.execute(select(audit_heads).where(audit_heads.c.chain == self.chain)).first()
            if (checkpoints or witness) and not keys:
                raise ConfigError(
                    "the audit log has signed checkpoints but no trusted key was given to check them",
                    hint="Pass the public key of whoever signs the log (the registry's registry.pub).",
                )
            witnesses = {} if witness is None or checkpoints.get(witness.seq) == witness else {witness.seq: witness}
            walk = _ChainWalk(self.chain, checkpoints, witnesses)
            for row in self._rows(connection=connection):
                walk.step(*row)
        last = walk.expected - 1
        walk.finish(last, keys, None if head is None else int(head.seq))
        return AuditReport(
            chain=self.chain,
            entries=walk.count,
            last_seq=last,
            checkpoints=len(checkpoints),
            last_signed_seq=max((seq for seq in checkpoints if seq <= last), default=0),
            problems=tuple(walk.problems[:MAX_LISTED_PROBLEMS]),
            problems_not_listed=max(0, len(walk.problems) - MAX_LISTED_PROBLEMS),
        )


class _ChainWalk:
    """The state of one pass over a chain: what the next entry must look like."""

    def __init__(self, chain: str, checkpoints: dict[int, Checkpoint], witnesses: dict[int, Checkpoint]) -> None:
        self.chain = chain
        self.checkpoints = checkpoints
        self.witnesses = witnesses  # witnessed heads that differ from the checkpoint at the same entry
        self.expected = 1
        self.previous = GENESIS
        self.shift = 0  # how far entries sit from where they were written
        self.count = 0
        self.problems: list[AuditProblem] = []

    def _report(self, kind: ProblemKind, seq: int, message: str) -> None:
        self.problems.append(AuditProblem(kind, seq, message))

    def step(self, seq: int, body: str, prev_hash: bytes, entry_hash: bytes) -> None:
        self.count += 1
        if seq < self.expected:  # only before the first entry: seq is unique and rows come in order
            self._report(
                ProblemKind.OUT_OF_PLACE, seq, f"entry numbered {seq} precedes the first entry: it was inserted"
            )
            return
        gap = seq != self.expected
        if gap:
            first, last = self.expected, seq - 1
            span = f"entry {first} is" if first == last else f"entries {first} to {last} are"
            self._report(ProblemKind.MISSING, first, f"{span} missing: deleted from the log")
        if not body.startswith(body_prefix(self.chain, seq)):
            self._out_of_place(seq, body)
        elif self.shift:
            self.shift = 0
        if hashlib.sha256(prev_hash + body.encode()).digest() != entry_hash:
            self._report(ProblemKind.EDITED, seq, f"entry {seq} was edited: its content no longer matches its hash")
        if prev_hash != self.previous and not gap:
            self._report(
                ProblemKind.BROKEN_LINK,
                seq,
                f"entry {seq} does not follow entry {seq - 1}: an entry between them was inserted, "
                f"replaced or removed, or entry {seq - 1} was rewritten",
            )
        for signed in (self.checkpoints.get(seq), self.witnesses.get(seq)):
            if signed is not None and signed.entry_hash != entry_hash:
                self._report(
                    ProblemKind.REWRITTEN,
                    seq,
                    f"entries up to {seq} were rewritten: a signed checkpoint at {seq} names a different hash",
                )
        self.previous = entry_hash
        self.expected = seq + 1

    def _out_of_place(self, seq: int, body: str) -> None:
        try:
            record = json.loads(body)
            written_at, chain = int(record["seq"]), str(record["chain"])
        except (ValueError, KeyError, TypeError):
            self._report(ProblemKind.EDITED, seq, f"entry {seq} was edited: its body is not an audit entry")
            return
        if chain != self.chain:
            self._report(
                ProblemKind.OUT_OF_PLACE, seq, f"entry {seq} holds entry {written_at} of another chain, {chain!r}"
            )
            return
        shift = written_at - seq
        if shift != self.shift:
            self.shift = shift
            if shift > 0 and seq + 1 == written_at:
                how = "an entry before it was deleted and the rest renumbered, or entries were swapped"
            else:
                how = "entries were reordered, inserted or renumbered"
            self._report(
                ProblemKind.OUT_OF_PLACE, seq, f"position {seq} holds the entry written as {written_at}: {how}"
            )

    def finish(self, last: int, keys: dict[str, PublicKey], head_seq: int | None) -> None:
        signed = [*self.checkpoints.items(), *self.witnesses.items()]
        for seq, row in sorted(signed, key=lambda item: item[0]):
            if seq > last:
                self._report(
                    ProblemKind.TRUNCATED,
                    seq,
                    f"a signed checkpoint or witness covers entry {seq} but the log ends at {last}: "
                    "entries were deleted",
                )
            key = keys.get(row.key_id)
            if key is None:
                self._report(
                    ProblemKind.UNKNOWN_KEY,
                    seq,
                    f"checkpoint {seq} is signed by key {row.key_id}, which is not trusted here",
                )
                continue
            message = checkpoint_message(self.chain, seq, row.entry_hash, row.signed_at)
            if not signature_valid(key, row.signature, message):
                self._report(ProblemKind.BAD_SIGNATURE, seq, f"checkpoint {seq}'s signature does not verify")
        if head_seq is not None and head_seq != last:
            self._report(
                ProblemKind.HEAD_MISMATCH,
                last,
                f"the log's head says it ends at entry {head_seq} but the last entry is {last}",
            )
