"""A TCP relay on 127.0.0.1 that a test can cut and restore: a private outage of a shared server.

The PostgreSQL cluster is shared by every test run on the machine, so it cannot be stopped; a
registry reached through this relay sees a real outage when the relay closes every connection
and stops listening (new connections are refused), and a real recovery when it listens again.
"""

from __future__ import annotations

import contextlib
import socket
import threading

from corpus.hang_guard import HANG_GUARD


class TcpRelay:
    """Relays connections on `port` to `target`; `cut()` drops them all, `restore()` listens again."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = int(probe.getsockname()[1])
        probe.close()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._accepting: threading.Thread | None = None
        self.connections = 0  # accepted since the start

    def start(self) -> TcpRelay:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.settimeout(0.05)
        self._listener = listener
        self._accepting = threading.Thread(target=self._accept, args=(listener,), daemon=True)
        self._accepting.start()
        return self

    def _accept(self, listener: socket.socket) -> None:
        while self._listener is listener:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=HANG_GUARD)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            client.settimeout(None)
            with self._lock:
                self._sockets.update((client, upstream))
                self.connections += 1
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            self._drop(source)
            self._drop(sink)

    def _drop(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.discard(sock)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            sock.close()

    def cut(self) -> None:
        """Stop listening and close every relayed connection: the server is unreachable."""
        listener, self._listener = self._listener, None
        if self._accepting is not None:
            self._accepting.join(timeout=HANG_GUARD)
        if listener is not None:
            listener.close()
        with self._lock:
            open_sockets = list(self._sockets)
        for sock in open_sockets:
            self._drop(sock)

    def restore(self) -> None:
        """Listen again on the same port."""
        self.start()

    def close(self) -> None:
        self.cut()
