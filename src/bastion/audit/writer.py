"""Group commit: many callers append, one thread writes whatever is waiting in one transaction.

Each caller still gets its entry back only once the transaction holding it has committed, so
every returned entry is durable; the commit (an fsync on SQLite) is shared by the whole batch.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from types import TracebackType

from bastion.audit.log import AuditLog
from bastion.audit.model import AuditEntry, AuditEvent
from bastion.errors import BackendUnavailable

_STOP = object()


class AuditWriter:
    """A background writer for one `AuditLog`; use as a context manager or call `close`."""

    def __init__(self, log: AuditLog, *, max_batch: int = 1000, max_delay: float = 0.0) -> None:
        """
        Args:
            log: the chain to write to.
            max_batch: the most events one transaction holds.
            max_delay: how long a batch may wait for more events before it is written. Zero
                writes whatever is waiting at once (lowest latency for `append`); a few
                milliseconds make a busy gateway commit (and fsync) tens of times a second
                instead of thousands.
        """
        self.log = log
        self.max_batch = max_batch
        self.max_delay = max_delay
        self._queue: queue.SimpleQueue[tuple[AuditEvent, Future[AuditEntry] | None] | object] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=f"audit-writer-{log.chain}", daemon=True)
        self._closed = False
        self._thread.start()

    def submit(self, event: AuditEvent) -> Future[AuditEntry]:
        """Queue `event`; the future resolves to its entry once committed."""
        if self._closed:
            raise BackendUnavailable("the audit writer is closed", hint="Open a new AuditWriter.")
        future: Future[AuditEntry] = Future()
        self._queue.put((event, future))
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
        self._queue.put((event, None))

    def _run(self) -> None:
        stopping = False
        while not stopping:
            item = self._queue.get()
            deadline = time.monotonic() + self.max_delay
            batch: list[tuple[AuditEvent, Future[AuditEntry] | None]] = []
            while True:
                if item is _STOP:
                    stopping = True
                else:
                    queued: tuple[AuditEvent, Future[AuditEntry] | None] = item  # type: ignore[assignment]
                    if queued[1] is None or queued[1].set_running_or_notify_cancel():
                        batch.append(queued)
                    # else: the caller cancelled before the write began, so the event is not written
                if stopping or len(batch) >= self.max_batch:
                    break
                try:
                    wait = deadline - time.monotonic()
                    item = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
            if batch:
                self._write(batch)

    def _write(self, batch: list[tuple[AuditEvent, Future[AuditEntry] | None]]) -> None:
        delay = 0.05
        while True:
            try:
                entries = self.log.append_many([event for event, _ in batch])
                break
            except Exception as err:  # every waiting caller must learn of the failure, whatever it is
                if all(future is None for _, future in batch) and not self._closed:
                    time.sleep(delay)  # queued without a caller waiting: keep it, try again
                    delay = min(delay * 2, 2.0)
                    continue
                for _, future in batch:
                    if future is not None:
                        future.set_exception(err)
                return
        for (_, future), entry in zip(batch, entries, strict=True):
            if future is not None:
                future.set_result(entry)

    def close(self) -> None:
        """Write what is queued, then stop the thread."""
        if not self._closed:
            self._closed = True
            self._queue.put(_STOP)
            self._thread.join()

    def __enter__(self) -> AuditWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()
