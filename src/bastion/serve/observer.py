"""Where the per-request records and detectors run: in the server, or in a process beside it.

Every answered request feeds the detectors and the audit log. Done inline, both run on the
event loop's thread and hold the GIL (on two cores they halved the gateway's throughput).
`ProcessObserver` hands them, batched every few milliseconds, to a separate process that
runs the detectors and writes the audit log; alarms come back over a second pipe and act on
the key a few milliseconds later. `InlineObserver` keeps everything in the server: alarms act
on the very next request, which the attack-simulation tests rely on.

The gateway never answers what it cannot record, so an observer says whether it can record
(`ready`), and the gateway refuses with 503 while it cannot. A process observer numbers every
item it sends; the child acknowledges the numbers whose records it has committed, and the
server keeps every item until then. When the child dies (killed, crashed), the server starts
another with back-off and sends it everything not acknowledged: what sat in the pipe, or in
the child's memory, is written by the next child rather than lost. (An item the dead child
committed but had not yet acknowledged is written twice: duplicated, never lost.) When the
database is down the child keeps retrying with capped back-off, tells the server it cannot
write, and recovers by itself when the database returns.

The batches go out from a thread of their own, over a pipe the event loop never watches: the
pipe stays blocking (uvloop makes the descriptors it watches non-blocking, and a batch larger
than the pipe's buffer would then fail half-written), and a child slow to read holds up that
thread, not the requests. Nothing queued is dropped, and nothing waits on the event loop:
memory stays bounded because the gateway refuses inference once `MAX_UNACKNOWLEDGED` items wait.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import logging
import math
import multiprocessing
import queue
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import orjson
from numpy.typing import NDArray
from sqlalchemy.exc import DBAPIError

from bastion.audit import AuditEvent, AuditLog
from bastion.audit.writer import AuditWriter
from bastion.errors import BackendUnavailable, ConfigError
from bastion.serve.detect import Alarm, QueryMonitor, RowFlags, TrainingProfile
from bastion.serve.detect.monitor import Observation

AlarmHandler = Callable[[Alarm, str], Awaitable[None]]  # (alarm, model name)
FLUSH_SECONDS = 0.002
# How often a child's liveness is asked of the OS (a waitpid call), at most.
ALIVE_CHECK_SECONDS = 0.05
COMMIT_SECONDS = 0.05
READY_SECONDS = 120.0
HEARTBEAT_SECONDS = 1.0
# A child silent this long (no acknowledgement, no heartbeat) is hung: it is killed and replaced.
HUNG_SECONDS = 30.0
# The most audit entries the child commits in one transaction. It reports progress (an
# acknowledgement) after each, so its longest silence is one such commit, never a whole backlog:
# catching up 5,000 records on a loaded machine was one silent commit long enough to be judged hung.
COMMIT_CHUNK = 1000
# Items sent and not yet acknowledged, at most, before the gateway refuses inference: a few
# seconds of records at full speed. Past it a slow or stuck child holds the gateway back (503)
# rather than let memory grow or records wait without bound.
MAX_UNACKNOWLEDGED = 50_000
# An item unacknowledged this long means the child is not keeping up: refuse until it does.
ACK_LAG_SECONDS = 10.0
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RetrySchedule:
    """Capped exponential back-off: `first` seconds, doubling, never more than `cap`."""

    first: float = 0.05
    cap: float = 2.0

    def delays(self) -> collections.abc.Iterator[float]:
        """The waits between attempts, for ever."""
        delay = self.first
        while True:
            yield delay
            delay = min(delay * 2, self.cap)


class ObserverMode(enum.StrEnum):
    """Where the detectors and the audit writer run."""

    INLINE = "inline"
    PROCESS = "process"


class ObserverState(enum.StrEnum):
    """Whether the observer can record what the gateway answers."""

    WRITING = "writing"  # records are being committed
    FAILING = "failing"  # the audit log cannot be written (database unreachable); retrying
    RESTARTING = "restarting"  # the child process is gone; another is starting
    STOPPED = "stopped"


class Observer(Protocol):
    def record(self, event: AuditEvent) -> None:
        """Queue an audit entry; it is kept until written, whatever fails meanwhile."""

    def observe(self, key_id: str, model: str, rows: NDArray[np.float32], verdicts: RowFlags | None = None) -> list[Alarm]:
        """Feed the detectors; alarms raised now (inline) or later through the handler.

        `verdicts`: what the gateway's before-answer checks found for these rows (repeats and
        atypical rows), so the detectors do not judge them again; None: they judge.
        """

    @property
    def ready(self) -> bool:
        """True while records reach the audit log: the gateway answers only then."""

    async def start(self, on_alarm: AlarmHandler) -> None: ...

    async def stop(self) -> None: ...

    def close(self) -> None:
        """Write everything queued (after `stop`, or when never started)."""


class InlineObserver:
    """Detectors and the audit writer in this process."""

    def __init__(self, log: AuditLog, profiles: Mapping[str, dict[str, Any]]) -> None:
        self.writer = AuditWriter(log, max_delay=COMMIT_SECONDS)
        self.monitors = {name: QueryMonitor(TrainingProfile.from_dict(p)) for name, p in profiles.items()}

    @property
    def ready(self) -> bool:
        return not self.writer.failing and self.writer.pending < MAX_UNACKNOWLEDGED

    def record(self, event: AuditEvent) -> None:
        self.writer.record(event)

    def observe(self, key_id: str, model: str, rows: NDArray[np.float32], verdicts: RowFlags | None = None) -> list[Alarm]:
        monitor = self.monitors.get(model)
        if monitor is None:
            return []
        if verdicts is None:
            return monitor.observe(key_id, rows)
        return monitor.observe(key_id, rows, fresh=verdicts.fresh, atypical=verdicts.atypical)

    async def start(self, on_alarm: AlarmHandler) -> None:
        del on_alarm  # alarms are returned by observe

    async def stop(self) -> None:
        pass

    def close(self) -> None:
        self.writer.close()


class _Child:
    """One observer process, its two pipes and the thread that feeds it."""

    def __init__(self, process: BaseProcess, records: Connection, conn: Connection) -> None:
        self.process = process
        self.records = records  # server -> child
        self.conn = conn  # child -> server
        self.outgoing: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self.send_error: OSError | None = None
        self.heard = 0.0  # when it last said anything, by the observer's clock (set on adoption)
        self._alive = True
        self._alive_checked = -math.inf
        self.sender = threading.Thread(target=self._send_loop, name="bastion-observer-send", daemon=True)
        self.sender.start()

    def _send_loop(self) -> None:
        """The sender thread: batches to the child in order, blocking while its pipe is full."""
        while (data := self.outgoing.get()) is not None:
            try:
                self.records.send_bytes(data)
            except OSError as err:
                self.send_error = err
                return

    @property
    def alive(self) -> bool:
        """Whether the child runs and takes data; asked on every request.

        `is_alive` is a waitpid system call, so it is asked at most every `ALIVE_CHECK_SECONDS`:
        a child lost in between is seen sooner by its pipe (the server's reader gets end of
        file), and what was queued for it stays unacknowledged and goes to the next child.
        """
        if self.send_error is not None or not self._alive:
            return False
        now = time.monotonic()
        if now - self._alive_checked >= ALIVE_CHECK_SECONDS:
            self._alive = self.process.is_alive()
            self._alive_checked = now
        return self._alive

    def send(self, data: bytes) -> None:
        self.outgoing.put(data)

    def kill(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.process.kill()
        self.process.join(timeout=10)
        self.dispose()

    def dispose(self) -> None:
        self.outgoing.put(None)
        self.sender.join(timeout=10)
        for end in (self.records, self.conn):
            with contextlib.suppress(OSError):
                end.close()


def _spawn(home: Path, chain: str, profiles: Mapping[str, dict[str, Any]], retry: RetrySchedule) -> _Child:
    """Start a child and wait until it watches and can write; BackendUnavailable if it cannot."""
    context = multiprocessing.get_context("spawn")  # the server holds threads and ONNX Runtime
    inbox, records = context.Pipe(duplex=False)  # server -> child: records and rows
    conn, outbox = context.Pipe(duplex=False)  # child -> server: ready, acknowledgements, alarms
    process = context.Process(
        target=_child_main, args=(inbox, outbox, str(home), chain, dict(profiles), retry), name="bastion-observer",
        daemon=True,
    )
    process.start()
    inbox.close()
    outbox.close()
    child = _Child(process, records, conn)
    try:
        _await_ready(child)
    except BaseException:
        child.kill()
        raise
    return child


def _await_ready(child: _Child) -> None:
    """Serve nothing before the child watches: queries sent while it starts would go unseen.

    A child that cannot reach the database yet says so and keeps trying; it is waited for as
    long as it does (each message restarts the clock).
    """
    deadline = time.monotonic() + READY_SECONDS
    while time.monotonic() < deadline:
        if child.conn.poll(0.1):
            try:
                message = orjson.loads(child.conn.recv_bytes())
            except (EOFError, OSError):
                break
            if message == "ready":
                return
            if isinstance(message, dict) and message.get("state") == ObserverState.FAILING:
                deadline = time.monotonic() + READY_SECONDS
                continue
            raise BackendUnavailable(f"the observer process failed to start: {message}")
        if not child.process.is_alive():
            break
    raise BackendUnavailable("the observer process did not start", hint="Run with --observer inline to see why.")


class ProcessObserver:
    """Detectors and the audit writer in a child process; the server queues, sends and keeps
    every item until the child acknowledges it, and replaces a child that dies."""

    def __init__(
        self,
        home: Path,
        chain: str,
        profiles: Mapping[str, dict[str, Any]],
        *,
        retry: RetrySchedule | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._home, self._chain, self._profiles = home, chain, dict(profiles)
        self.retry = retry or RetrySchedule()
        self._clock = clock
        self._child: _Child | None = _spawn(home, chain, self._profiles, self.retry)
        self._child.heard = clock()
        self.state = ObserverState.WRITING
        self.restarts = 0
        self.failed_writes = 0  # the child's failed attempts in the current outage
        self._seq = 0
        # Every item sent and not yet acknowledged, in order: (number, item, when queued).
        self._unacked: collections.deque[tuple[int, list[Any], float]] = collections.deque()
        self._pending: list[list[Any]] = []
        self._flush_handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_alarm: AlarmHandler | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._restarting: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._stopped = False

    @property
    def pid(self) -> int | None:
        """The child's process id (None while there is none)."""
        return None if self._child is None else self._child.process.pid

    @property
    def unacknowledged(self) -> int:
        return len(self._unacked)

    @property
    def ready(self) -> bool:
        if self.state is not ObserverState.WRITING or self._child is None or not self._child.alive:
            return False
        if len(self._unacked) >= MAX_UNACKNOWLEDGED:
            return False
        return not self._unacked or self._clock() - self._unacked[0][2] < ACK_LAG_SECONDS

    # --- queueing --------------------------------------------------------------------------

    def record(self, event: AuditEvent) -> None:
        self._queue(["a", event.actor, event.action, event.subject, dict(event.details)])

    def observe(self, key_id: str, model: str, rows: NDArray[np.float32], verdicts: RowFlags | None = None) -> list[Alarm]:
        if verdicts is None:
            self._queue(["o", key_id, model, rows])
        else:
            self._queue(["o", key_id, model, rows, verdicts.fresh, verdicts.atypical])
        return []

    def _queue(self, item: list[Any]) -> None:
        self._seq += 1
        numbered = [item[0], self._seq, *item[1:]]
        self._unacked.append((self._seq, numbered, self._clock()))
        self._pending.append(numbered)
        if self._loop is None:  # not serving (records made while loading, or at shutdown)
            self._flush()
        elif self._flush_handle is None:
            self._flush_handle = self._loop.call_later(FLUSH_SECONDS, self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        child = self._child
        if child is None or not child.alive:
            # Kept in `_unacked`: the next child gets them. Without an event loop to restart
            # it from, do it here.
            self._child_lost(child)
            if self._loop is None:
                self._restart_blocking()
            return
        child.send(_encode(batch))

    # --- the child's messages ----------------------------------------------------------------

    async def start(self, on_alarm: AlarmHandler) -> None:
        self._loop = asyncio.get_running_loop()
        self._on_alarm = on_alarm
        if self._child is not None:
            self._watch(self._child)
        if self._child is None or not self._child.alive:
            self._child_lost(self._child)
        self._watchdog = asyncio.ensure_future(self._watch_for_hangs())

    def _watch(self, child: _Child) -> None:
        if self._loop is not None:  # only while serving
                self._loop.add_reader(child.conn.fileno(), self._readable, child)

    def _readable(self, child: _Child) -> None:
        while True:
            try:
                if not child.conn.poll():
                    return
                message = orjson.loads(child.conn.recv_bytes())
            except (EOFError, OSError):  # the child is gone
                self._child_lost(child)
                return
            child.heard = self._clock()
            self._handle(message)

    def _handle(self, message: Any) -> None:
        if not isinstance(message, dict):
            return
        if "ack" in message:
            upto = int(message["ack"])
            while self._unacked and self._unacked[0][0] <= upto:
                self._unacked.popleft()
        state = message.get("state")
        if state == ObserverState.FAILING and self.state is ObserverState.WRITING:
            log.warning("the observer cannot write the audit log; refusing requests until it can")
            self.state = ObserverState.FAILING
        elif state == ObserverState.WRITING and self.state is ObserverState.FAILING:
            log.warning("the observer writes the audit log again")
            self.state = ObserverState.WRITING
        if "failed" in message:
            self.failed_writes = int(message["failed"])
        if message.get("alarm") and self._on_alarm is not None:
            alarm = Alarm(**message["alarm"])
            task = asyncio.ensure_future(self._on_alarm(alarm, message["model"]))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    # --- replacing a child that died -----------------------------------------------------------

    def _child_lost(self, child: _Child | None) -> None:
        """`child` died or hung: refuse from now on, and (when serving) start another."""
        if self._stopped or child is not self._child:
            return
        if self.state is not ObserverState.RESTARTING:
            log.error("the observer process is gone; refusing requests while another starts")
        self.state = ObserverState.RESTARTING
        self._child = None
        if child is not None:
            if self._loop is not None:
                with contextlib.suppress(ValueError, OSError):
                    self._loop.remove_reader(child.conn.fileno())
            child.kill()
        if self._loop is not None and (self._restarting is None or self._restarting.done()):
            self._restarting = asyncio.ensure_future(self._restart())

    async def _restart(self) -> None:
        for delay in self.retry.delays():
            if self._stopped:
                return
            try:
                child = await asyncio.to_thread(_spawn, self._home, self._chain, self._profiles, self.retry)
            except BackendUnavailable as err:
                log.error("the observer could not be restarted (%s); trying again in %.2f s", err, delay)
                await asyncio.sleep(delay)
                continue
            if self._stopped:
                child.kill()
                return
            self._adopt(child)
            self._watch(child)
            return

    def _restart_blocking(self) -> None:
        """A new child without an event loop (at start-up or shutdown), a few attempts at most."""
        for attempt, delay in enumerate(self.retry.delays()):
            try:
                self._adopt(_spawn(self._home, self._chain, self._profiles, self.retry))
                return
            except BackendUnavailable as err:
                if attempt >= 5:
                    raise
                log.error("the observer could not be restarted (%s); trying again", err)
                time.sleep(delay)

    def _adopt(self, child: _Child) -> None:
        """Make `child` the observer and send it everything not yet acknowledged, in order."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        self._pending = []  # all of it is in `_unacked`, re-sent below
        items = [item for _, item, _ in self._unacked]
        for start in range(0, len(items), 1000):
            child.send(_encode(items[start : start + 1000]))
        self._child = child
        child.heard = self._clock()
        self.restarts += 1
        self.failed_writes = 0
        self.state = ObserverState.WRITING
        log.warning("observer restarted; %d unacknowledged items sent again", len(items))

    async def _watch_for_hangs(self) -> None:
        """Replace a child that has said nothing for HUNG_SECONDS (it sends a heartbeat every second)."""
        while not self._stopped:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            self.check_hung()

    def check_hung(self) -> bool:
        """Replace the child if it is dead or has said nothing for HUNG_SECONDS; True if it was replaced.

        Silence is judged by what the child sent, not by when this loop last read it: whatever
        waits in the pipe is read first, so a server whose own loop was busy (a loaded machine)
        does not mistake its late reading for the child's silence and kill a working child.
        """
        child = self._child
        if child is None:
            return False
        self._readable(child)  # also what a child that died said before it went
        if child is not self._child:  # reading found it gone
            return True
        if not child.alive:
            self._child_lost(child)
            return True
        if self._clock() - child.heard > HUNG_SECONDS:
            log.error("the observer has said nothing for %.0f s: replacing it", HUNG_SECONDS)
            self._child_lost(child)
            return True
        return False

    # --- stopping -----------------------------------------------------------------------------

    async def stop(self) -> None:
        if self._loop is not None:
            if self._flush_handle is not None:
                self._flush_handle.cancel()
                self._flush_handle = None
            if self._child is not None:
                with contextlib.suppress(ValueError, OSError):
                    self._loop.remove_reader(self._child.conn.fileno())
        for task in (self._watchdog, self._restarting):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._loop = None

    def close(self) -> None:
        """Send what is queued, let the child write everything, and wait for it to finish.

        A child that died meanwhile is replaced first, so that what it had not committed is
        written by another; what still cannot be written is logged, loudly, with its count.
        """
        if self._stopped:
            return
        if self._child is None or not self._child.alive:
            self._child_lost(self._child)
            with contextlib.suppress(BackendUnavailable):
                self._restart_blocking()
        self._stopped = True
        child = self._child
        if child is None:
            log.error("the observer is gone: %d audit records were not written", len(self._unacked))
            return
        if self._pending:
            batch, self._pending = self._pending, []
            child.send(_encode(batch))
        child.send(b'"stop"')
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if child.conn.poll(0.1):
                try:
                    message = orjson.loads(child.conn.recv_bytes())
                except (EOFError, OSError):
                    break
                if message == "stopped":
                    break
                self._handle(message)
                deadline = time.monotonic() + 60  # still writing (e.g. waiting for the database)
            elif not child.process.is_alive():
                break
        if self._unacked:
            log.error("the observer stopped with %d audit records unacknowledged", len(self._unacked))
        child.process.join(timeout=10)
        child.dispose()


def _encode(batch: list[list[Any]]) -> bytes:
    return orjson.dumps(batch, option=orjson.OPT_SERIALIZE_NUMPY, default=str)


class _ChildLog:
    """The child's end: the audit chain, opened and written with retries that never give up."""

    def __init__(self, home: str, chain: str, conn: Connection, retry: RetrySchedule) -> None:
        self.home, self.chain, self.conn, self.retry = home, chain, conn, retry
        self.log: AuditLog | None = None
        self.failed = 0
        self.last_said = time.monotonic()

    def say(self, message: object) -> None:
        with contextlib.suppress(OSError):  # a server gone still gets its records written
            self.conn.send_bytes(orjson.dumps(message))
        self.last_said = time.monotonic()

    def open(self) -> AuditLog:
        if self.log is None:
            self.log = self._retrying(self._open)
        return self.log

    def _open(self) -> AuditLog:
        from bastion.db import connect  # noqa: PLC0415
        from bastion.registry.config import load_config  # noqa: PLC0415
        from bastion.sign.keys import load_private_key  # noqa: PLC0415

        config = load_config(Path(self.home))
        try:
            engine = connect(config.database)
        except (BackendUnavailable, ConfigError):
            raise
        except Exception as err:  # an unreachable database surfaces as SQLAlchemy's or psycopg's errors
            raise BackendUnavailable(f"cannot open the database: {err}") from err
        try:
            return AuditLog(engine, self.chain, signing_key=load_private_key(config.signing_key), checkpoint_every=1000, witness=config.open_witness())
        except BackendUnavailable:
            engine.dispose()
            raise
        except Exception as err:  # an unreachable database surfaces as SQLAlchemy's errors here
            engine.dispose()
            raise BackendUnavailable(f"cannot open the audit log: {err}") from err

    def commit(self, events: list[AuditEvent]) -> None:
        log = self.open()
        self._retrying(lambda: log.append_many(events))

    def _retrying(self, attempt: Callable[[], Any]) -> Any:
        """`attempt()` until it succeeds: the gateway refuses meanwhile, so nothing waits unseen.

        The old observer gave up after 40 tries (about a minute) and exited, and the gateway
        went on answering with nothing recorded.
        """
        delays = self.retry.delays()
        while True:
            try:
                result = attempt()
            except (BackendUnavailable, DBAPIError) as err:
                self.failed += 1
                if self.failed == 1:
                    log.warning("the observer cannot write the audit log: %s", err)
                self.say({"state": ObserverState.FAILING, "failed": self.failed})
                time.sleep(next(delays))
                continue
            if self.failed:
                self.failed = 0
                self.say({"state": ObserverState.WRITING, "failed": 0})
            return result


def _child_main(
    inbox: Connection,
    conn: Connection,
    home: str,
    chain: str,
    profiles: dict[str, dict[str, Any]],
    retry: RetrySchedule,
) -> None:
    """The observer process: detectors, and the audit chain written in batches.

    It acknowledges the highest item number it has received each time everything received is
    committed (and at least every second, as a heartbeat); catching up a backlog, it commits
    COMMIT_CHUNK entries at a time and acknowledges after each, so it is never long silent. It stops when the server says so,
    after writing everything, or when the server is gone (the pipe closes), after writing what
    it has. Signals do not stop it: SIGTERM to a whole process group (systemd's default) or
    Ctrl-C in a terminal reaches it with the server, and it must outlive the server's own
    shutdown to write the server's last records.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    writer = _ChildLog(home, chain, conn, retry)
    try:
        monitors = {name: QueryMonitor(TrainingProfile.from_dict(p)) for name, p in profiles.items()}
        writer.open()
    except Exception as err:  # tell the server why, whatever it is, rather than dying silently
        conn.send_bytes(orjson.dumps(f"{type(err).__name__}: {err}"))
        return
    writer.say("ready")
    events: list[tuple[int, AuditEvent]] = []  # (item number, event) received and not yet committed
    received = acknowledged = 0
    last_commit = time.monotonic()
    stopping = False
    while not stopping:
        if inbox.poll(COMMIT_SECONDS):
            try:
                message = orjson.loads(inbox.recv_bytes())
            except (EOFError, OSError):  # the server is gone without saying stop
                message = "stop"
            if message == "stop":
                stopping = True
            else:
                received = _take(message, events, monitors, writer) or received
        if events and (stopping or len(events) >= COMMIT_CHUNK or time.monotonic() - last_commit >= COMMIT_SECONDS):
            for start in range(0, len(events), COMMIT_CHUNK):
                chunk = events[start : start + COMMIT_CHUNK]
                writer.commit([event for _, event in chunk])
                if start + COMMIT_CHUNK < len(events):
                    # Progress while catching up: every item up to this one is committed or
                    # observed, and the server learns the child is working, not hung.
                    acknowledged = max(acknowledged, chunk[-1][0])
                    writer.say({"ack": acknowledged})
            events = []
            last_commit = time.monotonic()
        if not events and (received > acknowledged or time.monotonic() - writer.last_said >= HEARTBEAT_SECONDS):
            acknowledged = received
            writer.say({"ack": acknowledged})
    if writer.log is not None:
        with contextlib.suppress(Exception):  # the entries are committed; a checkpoint is signed at next start
            writer.log.checkpoint()
        writer.log.engine.dispose()
    writer.say("stopped")
    conn.close()
    inbox.close()


def _take(
    message: list[list[Any]],
    events: list[tuple[int, AuditEvent]],
    monitors: Mapping[str, QueryMonitor],
    writer: _ChildLog,
) -> int:
    """Queue a batch's audit records and feed its rows to the detectors; the last item's number.

    Each model's requests in the batch go to its monitor in one call, in the order they came.
    """
    received = 0
    observed: dict[str, list[Observation]] = {}
    for item in message:
        received = item[1]
        if item[0] == "a":
            events.append((received, AuditEvent(item[2], item[3], item[4], item[5])))
        elif item[3] in monitors:
            # With the gateway's verdicts (repeats and atypical rows known), or without.
            verdicts = (item[5], item[6]) if len(item) > 6 else (None, None)
            observed.setdefault(item[3], []).append((item[2], np.asarray(item[4], dtype=np.float64), *verdicts))
    for model, requests in observed.items():
        for alarms in monitors[model].observe_many(requests):
            for alarm in alarms:
                writer.say({"alarm": _alarm_dict(alarm), "model": model})
    return received


def _alarm_dict(alarm: Alarm) -> dict[str, Any]:
    return {
        "kind": str(alarm.kind),
        "key_id": alarm.key_id,
        "queries": alarm.queries,
        "score": alarm.score,
        "threshold": alarm.threshold,
        "message": alarm.message,
    }
