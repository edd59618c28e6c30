"""The audit log on SQLAlchemy: appends inside the caller's transaction, checks from the database.

Each entry's hash is SHA-256(previous entry's hash + its canonical body), so an entry cannot be
edited, removed, moved or slipped in without breaking the chain. A writer with database access
could recompute the whole chain after the point it changes; the signed checkpoints stop that:
every `checkpoint_every` entries, and at least every `checkpoint_seconds` while entries wait,
the head's hash is signed with a key the database does not hold. A writer that also holds that
key (it sits in the registry folder) could re-sign a rewritten history; a `Witness` kept where
that writer cannot write holds the signed heads it cannot rewrite (see `bastion.audit.witness`).

Appends serialise on the chain's row in `audit_heads` (`SELECT ... FOR UPDATE` on PostgreSQL,
`BEGIN IMMEDIATE` on SQLite), so concurrent writers in many processes extend one chain.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import logging
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import IO

from sqlalchemy import Connection, Engine, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError

from bastion.audit.model import (
    GENESIS,
    AuditEntry,
    AuditEvent,
    AuditProblem,
    AuditReport,
    Checkpoint,
    ProblemKind,
    WitnessSource,
    body_prefix,
    checkpoint_message,
    entry_body,
)
from bastion.audit.witness import Witness, WitnessedHead, WitnessReading
from bastion.db.engine import snapshot, writer
from bastion.db.tables import audit_checkpoints, audit_entries, audit_heads
from bastion.errors import BackendUnavailable, ConfigError
from bastion.sign.keys import PrivateKey, PublicKey
from bastion.sign.raw import key_id, sign_bytes, signature_valid

logger = logging.getLogger(__name__)

MAX_LISTED_PROBLEMS = 200
DEFAULT_CHECKPOINT_SECONDS = 60.0

Clock = Callable[[], datetime]
Scheduler = Callable[[float, Callable[[], None]], None]  # (delay in seconds, what to call then)


def utc_now() -> datetime:
    return datetime.now(UTC)


def daemon_timer(delay: float, action: Callable[[], None]) -> None:
    """Run `action` once, `delay` seconds from now, on a daemon thread."""
    timer = threading.Timer(delay, action)
    timer.daemon = True
    timer.start()


def witness_marker(chain: str, witness: Witness) -> str:
    """The `audit_heads` row in which the database remembers the last head written to `witness`.

    A witness rolled back or emptied then shows against the counter the database holds, and a
    database restored from a backup shows against the witness: each side catches the other.
    """
    return f"{chain}/witness/{witness.identity[:16]}"


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
_ENTRY_COLUMNS = ("chain", "seq", "body", "prev_hash", "entry_hash")


def _driver_insert(engine: Engine) -> tuple[str, bool]:
    """The entry INSERT in the driver's own SQL and whether it takes positional parameters.

    Entries are written with the driver's `executemany`: SQLAlchemy's per-row parameter
    processing cost more CPU than hashing and encoding the entries (30 to 45 µs an entry), on
    the observer process that every answered request passes through.
    """
    compiled = _INSERT_ENTRY.values({name: bindparam(name) for name in _ENTRY_COLUMNS}).compile(dialect=engine.dialect)
    positional = compiled.positiontup is not None
    if positional and tuple(compiled.positiontup or ()) != _ENTRY_COLUMNS:
        raise ConfigError(f"audit log: unexpected parameter order {compiled.positiontup}")
    return str(compiled), positional


class AuditLog:
    """One named chain of entries in the database behind `engine`."""

    def __init__(
        self,
        engine: Engine,
        chain: str = "registry",
        *,
        signing_key: PrivateKey | None = None,
        checkpoint_every: int = 1,
        checkpoint_seconds: float | None = DEFAULT_CHECKPOINT_SECONDS,
        witness: Witness | None = None,
        clock: Clock = utc_now,
        scheduler: Scheduler = daemon_timer,
    ) -> None:
        """
        Args:
            engine: the database.
            chain: the chain's name.
            signing_key: signs checkpoints and witnessed heads; without it nothing is signed.
            checkpoint_every: sign the head after this many entries...
            checkpoint_seconds: ...or once an entry has waited this long (None: by count only).
                A timer signs a waiting tail even when no further entry comes.
            witness: where signed heads are appended after each checkpoint (None: nowhere).
            clock: the time of entries and signatures (tests inject one).
            scheduler: runs the checkpoint timer (tests inject one; default: a daemon thread).
        """
        self.engine = engine
        self._writes = writer(engine)
        self._insert_sql, self._insert_positional = _driver_insert(engine)
        self.chain = chain
        self.signing_key = signing_key
        self.checkpoint_every = max(1, checkpoint_every)
        self.checkpoint_seconds = checkpoint_seconds
        self.witness = witness
        self.clock = clock
        self._scheduler = scheduler
        self._state = threading.Lock()
        self._waiting_since: datetime | None = None  # the oldest entry known to wait for a checkpoint
        self._timer_armed = False
        self._written_once = False  # a writer's first write is checkpointed and witnessed at once
        self._owed = 0  # the furthest entry signed inside a caller's transaction and not yet witnessed
        self._settles_at_exit = False
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
            written, signed = self._append_in(connection, events)
            if signed is not None and self.witness is not None:
                self._owe_witness(signed[0])
            return written
        try:
            with self._writes.begin() as own:
                written, signed = self._append_in(own, events)
        except OperationalError as err:
            raise BackendUnavailable(f"cannot write the audit log: {err.orig}") from err
        if signed is not None:
            self.advance_witness(*signed)
        return written

    def _append_in(
        self, connection: Connection, events: Sequence[AuditEvent]
    ) -> tuple[list[AuditEntry], tuple[int, bytes] | None]:
        """Write `events`; also returns the head signed in this transaction, if one was."""
        head = connection.execute(_LOCK_HEAD, {"chain": self.chain}).one()
        seq, previous, checkpoint_seq = int(head.seq), bytes(head.entry_hash), int(head.checkpoint_seq)
        now = self.clock()
        rows: list[tuple[str, int, str, bytes, bytes]] = []
        written = []
        for event in events:
            seq += 1
            body = entry_body(self.chain, seq, now, event)
            digest = hashlib.sha256(previous + body.encode()).digest()
            rows.append((self.chain, seq, body, previous, digest))
            written.append(
                AuditEntry(self.chain, seq, now, event.actor, event.action, event.subject, event.details, digest.hex())
            )
            previous = digest
        if rows:
            if self._insert_positional:
                connection.exec_driver_sql(self._insert_sql, rows)
            else:
                connection.exec_driver_sql(self._insert_sql, [dict(zip(_ENTRY_COLUMNS, row, strict=True)) for row in rows])
        signed = None
        if self.signing_key is not None and seq > checkpoint_seq:
            if self._checkpoint_due(seq - checkpoint_seq, now):
                self._checkpoint_in(connection, seq, previous, now)
                checkpoint_seq = seq
                signed = (seq, previous)
            else:
                self._arm_timer(now)
        connection.execute(
            _MOVE_HEAD, {"b_chain": self.chain, "b_seq": seq, "b_hash": previous, "b_checkpoint": checkpoint_seq}
        )
        return written, signed

    # --- checkpoints by count and by time --------------------------------------------------

    def _checkpoint_due(self, waiting: int, now: datetime) -> bool:
        """Whether the `waiting` unsigned entries must be signed now; forgets the wait if so."""
        with self._state:
            first = self.witness is not None and not self._written_once
            self._written_once = True
            if self._waiting_since is None:
                # Entries left unsigned by other writers count from when this one sees them.
                self._waiting_since = now
            overdue = self.checkpoint_seconds is not None and self._overdue(self._waiting_since, now)
            due = first or waiting >= self.checkpoint_every or overdue
            if due:
                self._waiting_since = None
            return due

    def _overdue(self, since: datetime, now: datetime) -> bool:
        """Whether entries waiting since `since` must be signed by `now`.

        A clock set back counts as overdue: otherwise the tail would wait unsigned for as long
        as the clock was moved, and moving it is one way to buy that time.
        """
        return now < since or now - since >= timedelta(seconds=self.checkpoint_seconds or 0)

    def _arm_timer(self, now: datetime, *, retry: bool = False) -> None:
        """Make sure a timer will sign what waits, even if no other entry comes.

        A retry after a failure waits a whole interval: the wait is already over, and firing
        at once would spin against a database that is down.
        """
        if self.checkpoint_seconds is None:
            return
        with self._state:
            if self._timer_armed or self._waiting_since is None:
                return
            self._timer_armed = True
            waited = (now - self._waiting_since).total_seconds()
            delay = self.checkpoint_seconds if retry else self.checkpoint_seconds - waited
        owner = weakref.ref(self)  # a pending timer must not keep a discarded log alive

        def fire() -> None:
            log = owner()
            if log is not None:
                log.checkpoint_if_due()

        self._scheduler(max(0.0, delay), fire)

    def checkpoint_if_due(self) -> int | None:
        """Sign and witness the head if entries have waited `checkpoint_seconds`; the timer's work.

        Returns the sequence number signed, or None if nothing was due (a timer is re-armed
        for what still waits). Never raises: a failure is logged and tried again later.
        """
        now = self.clock()
        with self._state:
            self._timer_armed = False
            since = self._waiting_since
        if since is None or self.checkpoint_seconds is None:
            return None
        if not self._overdue(since, now):
            self._arm_timer(now)
            return None
        try:
            return self.checkpoint()
        except Exception as err:  # a timer thread has nobody to raise to: log, and try again later
            logger.warning("audit chain %r: the timed checkpoint failed (%s); retrying", self.chain, err)
            self._arm_timer(now, retry=True)
            return None

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
        """Sign the current head now (e.g. at shutdown) and witness it; returns the sequence number covered."""
        if self.signing_key is None:
            return 0
        try:
            with self._writes.begin() as connection:
                head = connection.execute(
                    select(audit_heads).where(audit_heads.c.chain == self.chain).with_for_update()
                ).one()
                seq, entry_hash = int(head.seq), bytes(head.entry_hash)
                if seq > head.checkpoint_seq:
                    self._checkpoint_in(connection, seq, entry_hash, self.clock())
                    connection.execute(
                        update(audit_heads).where(audit_heads.c.chain == self.chain).values(checkpoint_seq=seq)
                    )
        except OperationalError as err:
            raise BackendUnavailable(f"cannot write the audit log: {err.orig}") from err
        with self._state:
            self._waiting_since = None
        self.advance_witness(seq, entry_hash)
        return seq

    def close(self) -> None:
        """Sign and witness whatever waits; the log stays usable."""
        self.checkpoint()

    def _owe_witness(self, seq: int) -> None:
        """A head signed in a caller's transaction is witnessed once that commits: by the caller
        (`advance_witness`, as the registry does), by this log's next checkpoint, or at the
        latest when the process exits, so a short-lived command leaves nothing unwitnessed."""
        with self._state:
            self._owed = max(self._owed, seq)
            register = not self._settles_at_exit
            self._settles_at_exit = True
        if register:
            atexit.register(_settle_at_exit, weakref.ref(self))

    # --- the witness ---------------------------------------------------------------------

    def advance_witness(self, seq: int, entry_hash: bytes) -> WitnessedHead | None:
        """Append (seq, entry_hash) to the witness, once the transaction holding it has committed.

        The change is already durable, so a witness that cannot be written is logged, not
        raised: the next head witnessed covers this one, and `verify` shows the lag meanwhile.
        """
        if self.witness is None or self.signing_key is None:
            return None
        marker = witness_marker(self.chain, self.witness)
        try:
            with self.engine.connect() as connection:
                remembered = connection.execute(
                    select(audit_heads.c.seq).where(audit_heads.c.chain == marker)
                ).scalar_one_or_none()
            head = self.witness.advance(
                self.signing_key, self.chain, seq, entry_hash, now=self.clock(), hint=int(remembered or 0)
            )
            if head is not None:
                self._remember(marker, head)
            with self._state:
                if seq >= self._owed:
                    self._owed = 0
        except (BackendUnavailable, SQLAlchemyError) as err:
            logger.warning("audit chain %r: cannot advance the witness at %s: %s", self.chain, self.witness, err)
            return None
        return head

    def _remember(self, marker: str, head: WitnessedHead) -> None:
        """Record in the database the furthest witness counter written, never moving it back."""
        values = {"seq": head.counter, "entry_hash": head.entry_hash, "checkpoint_seq": head.seq}
        with self._writes.begin() as connection:
            moved = connection.execute(
                update(audit_heads)
                .where(audit_heads.c.chain == marker, audit_heads.c.seq < head.counter)
                .values(**values)
            ).rowcount
            if moved:
                return
            exists = connection.execute(select(audit_heads.c.seq).where(audit_heads.c.chain == marker)).first()
            if exists is not None:
                return
            try:
                with connection.begin_nested():
                    connection.execute(insert(audit_heads).values(chain=marker, **values))
            except IntegrityError:  # another writer recorded its head first: keep the further one
                connection.execute(
                    update(audit_heads)
                    .where(audit_heads.c.chain == marker, audit_heads.c.seq < head.counter)
                    .values(**values)
                )

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
            record = {"seq": seq, "body": _parsed(body), "prev_hash": prev_hash.hex(), "entry_hash": entry_hash.hex()}
            stream.write(json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n")
            count += 1
        return count

    # --- checking ------------------------------------------------------------------------

    def verify(
        self, trusted_keys: Iterable[PublicKey], witness: Witness | None = None, *, witness_required: bool = False
    ) -> AuditReport:
        """Walk the chain from its first entry and report every departure from what was written.

        Args:
            trusted_keys: the keys checkpoints and witnessed heads must be signed with. Take
                them from the verifier's own configuration: a key read from the folder being
                checked is only as trustworthy as that folder.
            witness: signed heads kept outside the database (see `bastion.audit.witness`).
                Every head is checked: one the log no longer reaches shows entries cut or a
                backup restored; one whose hash differs shows a rewritten history.
            witness_required: the witness is the verifier's own, so it must hold a head for
                any chain that has entries (a witness emptied is a failure, not a fresh start).

        Raises:
            ConfigError: signed checkpoints or heads exist but no key was given to check them.
        """
        keys = {key_id(key): key for key in trusted_keys}
        # Read before the database snapshot: a head is witnessed only after its entries have
        # committed, so every head read here is within the snapshot unless the log was cut.
        reading = witness.read(self.chain) if witness is not None else None
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
            remembered = 0
            if witness is not None:
                remembered = int(
                    connection.execute(
                        select(audit_heads.c.seq).where(audit_heads.c.chain == witness_marker(self.chain, witness))
                    ).scalar_one_or_none()
                    or 0
                )
            if (checkpoints or (reading is not None and reading.heads)) and not keys:
                raise ConfigError(
                    "the audit log has signed checkpoints but no trusted key was given to check them",
                    hint="Pass the public key of whoever signs the log (the registry's registry.pub).",
                )
            walk = _ChainWalk(self.chain, checkpoints, reading)
            for row in self._rows(connection=connection):
                walk.step(*row)
        last = walk.expected - 1
        walk.finish(last, keys, None if head is None else int(head.seq))
        if witness is not None and reading is not None:
            if remembered > reading.last_counter:  # perhaps written since it was read: look again
                reading = witness.read(self.chain)
            walk.check_witness(reading, last, keys, remembered=remembered, required=witness_required)
        return AuditReport(
            chain=self.chain,
            entries=walk.count,
            last_seq=last,
            checkpoints=len(checkpoints),
            last_signed_seq=max((seq for seq in checkpoints if seq <= last), default=0),
            problems=tuple(walk.problems[:MAX_LISTED_PROBLEMS]),
            problems_not_listed=max(0, len(walk.problems) - MAX_LISTED_PROBLEMS),
            witness_location="" if witness is None else witness.location,
            witness_heads=0 if reading is None else len(reading.heads),
            last_witnessed_seq=max((h.seq for h in reading.heads if h.seq <= last), default=0) if reading else 0,
            witness_source=None if witness is None else WitnessSource.REGISTRY_CONFIG,
        )


class _ChainWalk:
    """The state of one pass over a chain: what the next entry must look like."""

    def __init__(self, chain: str, checkpoints: dict[int, Checkpoint], reading: WitnessReading | None) -> None:
        self.chain = chain
        self.checkpoints = checkpoints
        self.witnessed: dict[int, list[WitnessedHead]] = {}  # entry -> the heads naming it
        self.location = "" if reading is None else reading.location
        for witnessed in () if reading is None else reading.heads:
            self.witnessed.setdefault(witnessed.seq, []).append(witnessed)
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
        signed = self.checkpoints.get(seq)
        if signed is not None and signed.entry_hash != entry_hash:
            self._report(
                ProblemKind.REWRITTEN,
                seq,
                f"entries up to {seq} were rewritten: a signed checkpoint at {seq} names a different hash",
            )
        forked = [h for h in self.witnessed.get(seq, ()) if h.entry_hash != entry_hash]
        if forked:
            self._report(
                ProblemKind.FORKED,
                seq,
                f"entry {seq} is not the entry witnessed at {self.location} (head #{forked[0].counter}): "
                f"the history up to entry {seq} was rewritten",
            )
        self.previous = entry_hash
        self.expected = seq + 1

    def _out_of_place(self, seq: int, body: str) -> None:
        try:
            record = json.loads(body)
            written_at, chain = int(record["seq"]), str(record["chain"])
        except (ValueError, KeyError, TypeError, RecursionError):  # a body nested to crash the parser
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
        for seq, row in sorted(self.checkpoints.items(), key=lambda item: item[0]):
            if seq > last:
                self._report(
                    ProblemKind.TRUNCATED,
                    seq,
                    f"a signed checkpoint covers entry {seq} but the log ends at {last}: entries were deleted",
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

    def check_witness(
        self, reading: WitnessReading, last: int, keys: dict[str, PublicKey], *, remembered: int, required: bool
    ) -> None:
        """What the witness says against the chain just walked (forks were reported on the way)."""
        where = reading.location
        present = {h.counter for h in reading.heads} | {counter for counter, _ in reading.unreadable}
        for counter, why in reading.unreadable:
            self._report(ProblemKind.WITNESS_TAMPERED, 0, f"witnessed head #{counter} at {where} is not valid: {why}")
        for first, final in _runs(sorted(set(range(1, reading.last_counter + 1)) - present)):
            span = f"head #{first} is" if first == final else f"heads #{first} to #{final} are"
            self._report(ProblemKind.WITNESS_TAMPERED, 0, f"witnessed {span} missing from {where}: deleted")
        if remembered > reading.last_counter:
            self._report(
                ProblemKind.WITNESS_MISSING,
                last,
                f"the database records witnessed head #{remembered} but the witness at {where} ends at "
                f"#{reading.last_counter}: the witness was deleted or rolled back",
            )
        if required and not reading.heads and not reading.unreadable and last > 0:
            self._report(
                ProblemKind.WITNESS_MISSING,
                last,
                f"the witness at {where} holds no head of chain {self.chain!r}, which has entries up to {last}: "
                "it was deleted, or is not where this registry writes its witness",
            )
        beyond = [h for h in reading.heads if h.seq > last]
        if beyond:
            furthest = max(beyond, key=lambda h: (h.seq, h.counter))
            self._report(
                ProblemKind.TRUNCATED,
                furthest.seq,
                f"the log is behind its witness: {where} saw entry {furthest.seq} (head #{furthest.counter}) but "
                f"the log ends at entry {last}: entries were cut, or the database was restored from an older backup",
            )
        for witnessed in reading.heads:
            if witnessed.seq == 0 and witnessed.entry_hash != GENESIS:
                self._report(
                    ProblemKind.WITNESS_TAMPERED, 0, f"witnessed head #{witnessed.counter} names no entry"
                )
            key = keys.get(witnessed.key_id)
            if key is None:
                self._report(
                    ProblemKind.UNKNOWN_KEY,
                    witnessed.seq,
                    f"witnessed head #{witnessed.counter} (entry {witnessed.seq}) at {where} is signed by key "
                    f"{witnessed.key_id}, which is not trusted here",
                )
            elif not signature_valid(key, witnessed.signature, witnessed.message()):
                self._report(
                    ProblemKind.BAD_SIGNATURE,
                    witnessed.seq,
                    f"witnessed head #{witnessed.counter} (entry {witnessed.seq}) at {where}: "
                    "its signature does not verify",
                )


def _settle_at_exit(owner: weakref.ref[AuditLog]) -> None:
    """Witness, as the process exits, what a log signed in transactions it did not commit itself.

    `checkpoint` reads the committed head, so a transaction that rolled back is never witnessed.
    """
    log = owner()
    if log is not None and log._owed:
        with contextlib.suppress(Exception):  # at exit there is nobody left to tell
            log.checkpoint()


def _parsed(body: str) -> object:
    """An entry's body as JSON, or as the text it is when someone wrote something else there."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return body


def _runs(numbers: Sequence[int]) -> list[tuple[int, int]]:
    """Consecutive runs in sorted `numbers`, as (first, last)."""
    runs: list[tuple[int, int]] = []
    for number in numbers:
        if runs and number == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], number)
        else:
            runs.append((number, number))
    return runs
