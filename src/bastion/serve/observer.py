"""Where the per-request records and detectors run: in the server, or in a process beside it.

Every answered request feeds the detectors and the audit log. Done inline, both run on the
event loop's thread and hold the GIL (on two cores they halved the gateway's throughput).
`ProcessObserver` hands them, batched every few milliseconds, to a separate process that
runs the detectors and writes the audit log; alarms come back over a second pipe and act on
the key a few milliseconds later.

The batches go out from a thread of their own, over a pipe the event loop never watches: the
pipe stays blocking (uvloop makes the descriptors it watches non-blocking, and a batch larger
than the pipe's buffer would then fail half-written), and a child slow to read holds up that
thread, not the requests. Nothing queued is dropped: when `BACKLOG_BATCHES` batches wait, the
server waits too, so memory stays bounded and the gateway runs at the pace of its audit trail. `InlineObserver` keeps everything in the server: alarms act
on the very next request, which the attack-simulation tests rely on.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import queue
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import orjson
from numpy.typing import NDArray

from bastion.audit import AuditEvent, AuditLog
from bastion.audit.writer import AuditWriter
from bastion.errors import BackendUnavailable
from bastion.serve.detect import Alarm, QueryMonitor, TrainingProfile

AlarmHandler = Callable[[Alarm, str], Awaitable[None]]  # (alarm, model name)
FLUSH_SECONDS = 0.002
COMMIT_SECONDS = 0.05
READY_SECONDS = 120.0
# Batches waiting for the child, at most: about a second of records at FLUSH_SECONDS. Past it,
# the server waits for the child (back-pressure) rather than drop records or grow without bound.
BACKLOG_BATCHES = 500


class Observer(Protocol):
    def record(self, event: AuditEvent) -> None:
        """Queue an audit entry."""

    def observe(self, key_id: str, model: str, rows: NDArray[np.float32]) -> list[Alarm]:
        """Feed the detectors; alarms raised now (inline) or later through the handler."""

    async def start(self, on_alarm: AlarmHandler) -> None: ...

    async def stop(self) -> None: ...

    def close(self) -> None:
        """Write everything queued (after `stop`, or when never started)."""


class InlineObserver:
    """Detectors and the audit writer in this process."""

    def __init__(self, log: AuditLog, profiles: Mapping[str, dict[str, Any]]) -> None:
        self.writer = AuditWriter(log, max_delay=COMMIT_SECONDS)
        self.monitors = {name: QueryMonitor(TrainingProfile.from_dict(p)) for name, p in profiles.items()}

    def record(self, event: AuditEvent) -> None:
        self.writer.record(event)

    def observe(self, key_id: str, model: str, rows: NDArray[np.float32]) -> list[Alarm]:
        monitor = self.monitors.get(model)
        return monitor.observe(key_id, rows) if monitor is not None else []

    async def start(self, on_alarm: AlarmHandler) -> None:
        del on_alarm  # alarms are returned by observe

    async def stop(self) -> None:
        pass

    def close(self) -> None:
        self.writer.close()


class ProcessObserver:
    """Detectors and the audit writer in a child process; the server only queues and sends."""

    def __init__(self, home: Path, chain: str, profiles: Mapping[str, dict[str, Any]]) -> None:
        context = multiprocessing.get_context("spawn")  # the server holds threads and ONNX Runtime
        inbox, self._records = context.Pipe(duplex=False)  # server -> child: records and rows
        self._conn, outbox = context.Pipe(duplex=False)  # child -> server: ready, alarms, stopped
        self._process = context.Process(
            target=_child_main, args=(inbox, outbox, str(home), chain, dict(profiles)), name="bastion-observer",
            daemon=True,
        )
        self._process.start()
        inbox.close()
        outbox.close()
        self._await_ready()
        self._outgoing: queue.Queue[bytes | None] = queue.Queue(maxsize=BACKLOG_BATCHES)
        self._send_error: OSError | None = None
        self._sender = threading.Thread(target=self._send_loop, name="bastion-observer-send", daemon=True)
        self._sender.start()
        self._pending: list[list[Any]] = []
        self._flush_handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_alarm: AlarmHandler | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopped = False

    def _await_ready(self) -> None:
        """Serve nothing before the child watches: queries sent while it starts would go unseen."""
        deadline = time.monotonic() + READY_SECONDS
        while time.monotonic() < deadline:
            if self._conn.poll(0.1):
                try:
                    message = orjson.loads(self._conn.recv_bytes())
                except (EOFError, OSError):
                    break
                if message == "ready":
                    return
                raise BackendUnavailable(f"the observer process failed to start: {message}")
            if not self._process.is_alive():
                break
        raise BackendUnavailable("the observer process did not start", hint="Run with --observer inline to see why.")

    def record(self, event: AuditEvent) -> None:
        self._queue(["a", event.actor, event.action, event.subject, dict(event.details)])

    def observe(self, key_id: str, model: str, rows: NDArray[np.float32]) -> list[Alarm]:
        self._queue(["o", key_id, model, rows])
        return []

    def _queue(self, item: list[Any]) -> None:
        self._pending.append(item)
        if self._loop is None:  # not serving yet (e.g. records made while loading)
            self._flush()
        elif self._flush_handle is None:
            self._flush_handle = self._loop.call_later(FLUSH_SECONDS, self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        self._put(orjson.dumps(batch, option=orjson.OPT_SERIALIZE_NUMPY, default=str))

    def _put(self, data: bytes | None) -> None:
        """Queue for the sender thread, waiting while the backlog is full; fails if it is gone."""
        while True:
            if self._send_error is not None or not self._sender.is_alive():
                raise BackendUnavailable(f"the observer process is gone: {self._send_error or 'sender stopped'}")
            try:
                self._outgoing.put(data, timeout=0.5)
                return
            except queue.Full:
                continue

    def _send_loop(self) -> None:
        """The sender thread: batches to the child in order, blocking while its pipe is full."""
        while (data := self._outgoing.get()) is not None:
            try:
                self._records.send_bytes(data)
            except OSError as err:
                self._send_error = err
                return

    async def start(self, on_alarm: AlarmHandler) -> None:
        self._loop = asyncio.get_running_loop()
        self._on_alarm = on_alarm
        self._loop.add_reader(self._conn.fileno(), self._readable)

    def _readable(self) -> None:
        while self._conn.poll():
            try:
                message = orjson.loads(self._conn.recv_bytes())
            except (EOFError, OSError):
                if self._loop is not None:
                    self._loop.remove_reader(self._conn.fileno())
                return
            if message.get("alarm") and self._on_alarm is not None:
                alarm = Alarm(**message["alarm"])
                task = asyncio.ensure_future(self._on_alarm(alarm, message["model"]))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        if self._loop is not None:
            if self._flush_handle is not None:
                self._flush_handle.cancel()
            self._loop.remove_reader(self._conn.fileno())
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._loop = None

    def close(self) -> None:
        """Send what is queued, let the child write everything, and wait for it to finish."""
        if self._stopped:
            return
        self._stopped = True
        with contextlib.suppress(BackendUnavailable):  # a child already gone has written what it could
            self._flush()
            self._put(b'"stop"')
            self._put(None)
        self._sender.join()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self._conn.poll(0.1):
                try:
                    if orjson.loads(self._conn.recv_bytes()) == "stopped":
                        break
                except (EOFError, OSError):
                    break
            elif not self._process.is_alive():
                break
        self._process.join(timeout=10)
        self._conn.close()
        self._records.close()


def _child_main(
    inbox: Connection, conn: Connection, home: str, chain: str, profiles: dict[str, dict[str, Any]]
) -> None:
    """The observer process: detectors, and the audit chain written in batches.

    It stops when the server says so, after writing everything, or when the server is gone
    (the pipe closes), after writing what it has. Signals do not stop it: SIGTERM to a whole
    process group (systemd's default) or Ctrl-C in a terminal reaches it with the server, and
    it must outlive the server's own shutdown to write the server's last records.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from bastion.db import connect  # noqa: PLC0415
    from bastion.registry.config import load_config  # noqa: PLC0415
    from bastion.sign.keys import load_private_key  # noqa: PLC0415

    try:
        config = load_config(Path(home))
        engine = connect(config.database)
        log = AuditLog(engine, chain, signing_key=load_private_key(config.signing_key), checkpoint_every=1000, witness=config.open_witness())
        monitors = {name: QueryMonitor(TrainingProfile.from_dict(p)) for name, p in profiles.items()}
    except Exception as err:  # tell the server why, whatever it is, rather than dying silently
        conn.send_bytes(orjson.dumps(f"{type(err).__name__}: {err}"))
        return
    conn.send_bytes(b'"ready"')
    events: list[AuditEvent] = []
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
                for item in message:
                    if item[0] == "a":
                        events.append(AuditEvent(item[1], item[2], item[3], item[4]))
                    else:
                        monitor = monitors.get(item[2])
                        if monitor is None:
                            continue
                        for alarm in monitor.observe(item[1], np.asarray(item[3], dtype=np.float64)):
                            with contextlib.suppress(OSError):  # a server gone still gets its records written
                                conn.send_bytes(orjson.dumps({"alarm": _alarm_dict(alarm), "model": item[2]}))
        if events and (stopping or len(events) >= 1000 or time.monotonic() - last_commit >= COMMIT_SECONDS):
            _commit(log, events)
            events = []
            last_commit = time.monotonic()
    log.checkpoint()
    engine.dispose()
    with contextlib.suppress(OSError):
        conn.send_bytes(b'"stopped"')
    conn.close()
    inbox.close()


def _commit(log: AuditLog, events: list[AuditEvent]) -> None:
    delay = 0.05
    for _attempt in range(40):  # about a minute of retries before giving up loudly
        try:
            log.append_many(events)
            return
        except BackendUnavailable:
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
    raise BackendUnavailable(f"the observer could not write {len(events)} audit entries")


def _alarm_dict(alarm: Alarm) -> dict[str, Any]:
    return {
        "kind": str(alarm.kind),
        "key_id": alarm.key_id,
        "queries": alarm.queries,
        "score": alarm.score,
        "threshold": alarm.threshold,
        "message": alarm.message,
    }
