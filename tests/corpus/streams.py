"""Writing to a stream that cannot seek, as joblib meets a pipe or a socket."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import BinaryIO


class _NonSeekable(io.RawIOBase):
    """Writable, with `tell()` and `seek()` unsupported: joblib then writes no array alignment."""

    def __init__(self) -> None:
        self.sink = io.BytesIO()

    def writable(self) -> bool:
        return True

    def write(self, data: object) -> int:
        return self.sink.write(data)  # type: ignore[call-overload]


def written_unseekably(write: Callable[[BinaryIO], object]) -> bytes:
    """The bytes `write(handle)` puts on a buffered, non-seekable stream (`joblib.dump(obj, handle)`)."""
    raw = _NonSeekable()
    with io.BufferedWriter(raw) as handle:
        write(handle)  # type: ignore[arg-type]
        handle.flush()
        return raw.sink.getvalue()
