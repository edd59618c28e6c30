"""Group commit: many callers append, one thread writes whatever is waiting in one transaction.

Callers of `append` (or `submit`) get their entry back only once the transaction holding it
has committed, so every returned entry is durable; the commit (an fsync on SQLite) is shared
by the whole batch. A server's hot path uses `record` instead: it queues the event and goes
on, and the writer commits what has gathered every `max_delay` seconds without being woken
per event (waking a thread per request costs a busy server more than the writing does).
"""

from __future__ import annotations

import collections
import threading
import time
from concurrent.futures import Future
from types import TracebackType

from bastion.audit.log import AuditLog
from bastion.audit.model import AuditEntry, AuditEvent
from bastion.errors import BackendUnavailable

Queued = tuple[AuditEvent, Future[AuditEntry] | None]


class AuditWriter:
    """A background writer for one `AuditLog`; use as a context manager or call `close`."""

    def __init__(self, log: AuditLog, *, max_batch: int = 1000, max_delay: float = 0.0) -> None:
        """
        Args:
            log: the chain to write to.
            max_batch: the most events one transaction holds.
            max_delay: how often queued `record` events are written. `submit` and `append`
                wake the writer at once whatever this is.
        """
        self.log = log
        self.max_batch = max_batch
        self.max_delay = max_delay
        self._queue: collections.deque[Queued] = collections.deque()  # append/popleft are thread-safe
        self._wake = threading.Event()
        self._closed = False
        self.failing = False  # the last write failed and is being retried: callers may refuse work
        self._thread = threading.Thread(target=self._run, name=f"audit-writer-{log.chain}", daemon=True)
        self._thread.start()

    def submit(self, event: AuditEvent) -> Future[AuditEntry]:
        """Queue `event`; the future resolves to its entry once committed."""
        if self._closed:
            raise BackendUnavailable("the audit writer is closed", hint="Open a new AuditWriter.")
        future: Future[AuditEntry] = Future()
        self._queue.append((event, future))
        self._wake.set()
        return future

    def append(self, event: AuditEvent) -> AuditEntry:
        """Record `event` and return once it is durable."""
        return self.submit(event).result()

    def record(self, event: AuditEvent) -> None:
        """Queue `event` without waiting (a server's hot path): written within `max_delay`.

        Nothing queued is dropped: a batch that fails to commit is retried until it does, and
        `close` writes everything still queued.
        """
        if self._closed:
            raise BackendUnavailable("the audit writer is closed", hint="Open a new AuditWriter.")
        self._queue.append((event, None))
        if self.max_delay <= 0:
            self._wake.set()

    @property
    def pending(self) -> int:
        """Events queued and not yet written."""
        return len(self._queue)

    def _run(self) -> None:
        while True:
            self._wake.wait(timeout=self.max_delay if self.max_delay > 0 else None)
            self._wake.clear()
            closing = self._closed
            while self._queue:
                batch: list[Queued] = []
                while self._queue and len(batch) < self.max_batch:
                    queued = self._queue.popleft()
                    future = queued[1]
                    if future is None or future.set_running_or_notify_cancel():
                        batch.append(queued)
                    # else: the caller cancelled before the write began, so the event is not written
                if batch:
                    self._write(batch)
            if closing:
                return

    def _write(self, batch: list[Queued]) -> None:
        delay = 0.05
        while True:
            try:
                entries = self.log.append_many([event for event, _ in batch])
                break
            except Exception as err:  # every waiting caller must learn of the failure, whatever it is
                self.failing = True
                if all(future is None for _, future in batch) and not self._closed:
                    time.sleep(delay)  # queued without a caller waiting: keep it, try again
                    delay = min(delay * 2, 2.0)
                    continue
                for _, future in batch:
                    if future is not None:
                        future.set_exception(err)
                return
        self.failing = False
        for (_, future), entry in zip(batch, entries, strict=True):
            if future is not None:
                future.set_result(entry)

    def close(self) -> None:
        """Write what is queued, then stop the thread."""
        if not self._closed:
            self._closed = True
            self._wake.set()
            self._thread.join()

    def __enter__(self) -> AuditWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()
