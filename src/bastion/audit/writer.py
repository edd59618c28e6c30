"""Group commit: many callers append, one thread writes whatever is waiting in one transaction.

Each caller still gets its entry back only once the transaction holding it has committed, so
every returned entry is durable; the commit (an fsync on SQLite) is shared by the whole batch.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from types import TracebackType

from bastion.audit.log import AuditLog
from bastion.audit.model import AuditEntry, AuditEvent
from bastion.errors import BackendUnavailable

_STOP = object()


class AuditWriter:
    """A background writer for one `AuditLog`; use as a context manager or call `close`."""

    def __init__(self, log: AuditLog, *, max_batch: int = 1000) -> None:
        self.log = log
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[tuple[AuditEvent, Future[AuditEntry]] | object] = queue.SimpleQueue()
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

    def _run(self) -> None:
        stopping = False
        while not stopping:
            item = self._queue.get()
            batch: list[tuple[AuditEvent, Future[AuditEntry]]] = []
            while True:
                if item is _STOP:
                    stopping = True
                elif item[1].set_running_or_notify_cancel():  # type: ignore[index]
                    batch.append(item)  # type: ignore[arg-type]
                # else: the caller cancelled before the write began, so the event is not written
                if len(batch) >= self.max_batch:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if batch:
                self._write(batch)

    def _write(self, batch: list[tuple[AuditEvent, Future[AuditEntry]]]) -> None:
        try:
            entries = self.log.append_many([event for event, _ in batch])
        except Exception as err:  # every waiting caller must learn of the failure, whatever it is
            for _, future in batch:
                future.set_exception(err)
            return
        for (_, future), entry in zip(batch, entries, strict=True):
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
