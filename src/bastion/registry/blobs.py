"""Content-addressed, write-once blobs through fsspec: a local folder or S3-compatible storage.

A blob's name is the SHA-256 of its bytes (`sha256/ab/cdef...`), so storing the same bytes
twice stores nothing new and a stored name is never overwritten. Reads hand back the bytes
as stored: whoever reads checks them against the digest they expect (see `fetch`).
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from bastion.errors import BackendUnavailable, IntegrityFailure, NotFound, RegistryError

CHUNK = 8 * 1024 * 1024
Digest = str  # "sha256:<64 hex>"


def digest_of_bytes(data: bytes) -> Digest:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _check(digest: Digest) -> str:
    algorithm, _, hexdigest = digest.partition(":")
    if algorithm != "sha256" or len(hexdigest) != 64 or any(c not in "0123456789abcdef" for c in hexdigest):
        raise RegistryError(f"not a sha256 digest: {digest!r}")
    return hexdigest


class BlobStore:
    """Blobs under `url` (a folder path, file://, s3://bucket/prefix, memory://...)."""

    def __init__(self, url: str, options: dict[str, Any] | None = None) -> None:
        try:
            self.fs, root = fsspec.core.url_to_fs(url, **(options or {}))
        except (ImportError, ValueError) as err:
            raise BackendUnavailable(f"cannot open blob store {url!r}: {err}") from err
        self.root = root.rstrip("/")
        self.local = isinstance(self.fs, LocalFileSystem)
        if self.local:
            self.fs.makedirs(self.root, exist_ok=True)

    def path_of(self, digest: Digest) -> str:
        hexdigest = _check(digest)
        return f"{self.root}/sha256/{hexdigest[:2]}/{hexdigest[2:]}"

    def exists(self, digest: Digest) -> bool:
        try:
            return bool(self.fs.exists(self.path_of(digest)))
        except OSError as err:
            raise BackendUnavailable(f"blob store unreachable: {err}") from err

    def put_file(self, source: Path, digest: Digest) -> bool:
        """Store `source`, already hashed to `digest`; False when the blob was there already.

        The bytes are re-hashed while they stream, and a blob whose bytes do not match its
        name is never stored, so a file changed between hashing and upload cannot slip in.
        """
        if self.exists(digest):
            return False
        with source.open("rb") as stream:
            self._put_stream(stream, digest)
        return True

    def put_stream(self, stream: IO[bytes], digest: Digest) -> bool:
        """Store what `stream` yields, which must hash to `digest`; False when already stored."""
        if self.exists(digest):
            return False
        self._put_stream(stream, digest)
        return True

    def _put_stream(self, stream: IO[bytes], digest: Digest) -> None:
        target = self.path_of(digest)
        staging = f"{self.root}/incoming/{uuid.uuid4().hex}"
        hasher = hashlib.sha256()
        try:
            self.fs.makedirs(f"{self.root}/incoming", exist_ok=True)
            with self.fs.open(staging, "wb") as out:
                while chunk := stream.read(CHUNK):
                    hasher.update(chunk)
                    out.write(chunk)
            if "sha256:" + hasher.hexdigest() != digest:
                raise RegistryError(
                    f"the uploaded bytes hash to sha256:{hasher.hexdigest()}, not {digest}",
                    hint="The file changed while it was being stored, or the digest sent is wrong.",
                )
            if not self.fs.exists(target):  # write-once: a blob already there is the same bytes
                self.fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
                self.fs.mv(staging, target)
        except OSError as err:
            raise BackendUnavailable(f"cannot write blob {digest}: {err}") from err
        finally:
            if self.fs.exists(staging):
                self.fs.rm(staging)

    def put_bytes(self, data: bytes) -> Digest:
        digest = digest_of_bytes(data)
        if not self.exists(digest):
            import io  # noqa: PLC0415

            self._put_stream(io.BytesIO(data), digest)
        return digest

    def read_bytes(self, digest: Digest) -> bytes:
        """A small blob's bytes, checked against its digest."""
        try:
            data: bytes = self.fs.cat_file(self.path_of(digest))
        except FileNotFoundError as err:
            raise NotFound(f"blob {digest} is missing from the store") from err
        except OSError as err:
            raise BackendUnavailable(f"cannot read blob {digest}: {err}") from err
        if digest_of_bytes(data) != digest:
            raise IntegrityFailure(f"blob {digest} no longer holds the bytes it was stored with")
        return data

    @contextmanager
    def open(self, digest: Digest) -> Iterator[IO[bytes]]:
        try:
            with self.fs.open(self.path_of(digest), "rb") as stream:
                yield stream
        except FileNotFoundError as err:
            raise NotFound(f"blob {digest} is missing from the store") from err

    def remove_stale_incoming(self, older_than: float, now: float | None = None) -> int:
        """Remove uploads a killed process left in `incoming/`; returns how many.

        Only files older than `older_than` seconds go: another process may be writing a young one.
        """
        now = time.time() if now is None else now
        try:
            listed = self.fs.ls(f"{self.root}/incoming", detail=True)
        except FileNotFoundError:
            return 0
        except OSError as err:
            raise BackendUnavailable(f"blob store unreachable: {err}") from err
        removed = 0
        for info in listed:
            modified = info.get("mtime", info.get("LastModified"))
            if isinstance(modified, datetime):
                modified = modified.timestamp()
            if isinstance(modified, int | float) and now - modified > older_than:
                self.fs.rm(info["name"])
                removed += 1
        return removed

    def fetch(self, digest: Digest, target: Path) -> str:
        """Copy a blob to `target` as it is stored; returns the digest of what was copied.

        The caller compares that with what it expects: a swapped blob is a finding to report,
        not an exception, so that the gate can name it among its reasons.
        """
        target.parent.mkdir(parents=True, exist_ok=True)
        hasher = hashlib.sha256()
        with self.open(digest) as stream, target.open("wb") as out:
            while chunk := stream.read(CHUNK):
                hasher.update(chunk)
                out.write(chunk)
        return "sha256:" + hasher.hexdigest()
