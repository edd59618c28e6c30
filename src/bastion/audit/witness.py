"""Signed heads of a chain kept outside the database: the log's anchor against insiders.

Whoever can write the database can cut the newest entries together with the checkpoints that
cover them, or restore an older backup, and leave a chain that is consistent in itself; whoever
also holds the registry's key can rewrite and re-sign all of it. A witness stops both, provided
it lives where those people cannot write: a second folder, or an S3 bucket with object lock.

A witness is append-only. Each head is a new object `<location>/<chain>/<counter>.json`, written
only if no object of that name exists (`O_EXCL` on a folder, `If-None-Match: *` on S3), where the
counter goes 1, 2, 3 ... and is never reused. Nothing is ever rewritten, so a rolled-back
database shows as "behind the witness", a rewritten history as a fork at a witnessed entry, and
a witness rolled back or emptied as a gap against the counter the database remembers.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bastion.errors import BackendUnavailable, ConfigError
from bastion.sign.keys import PrivateKey
from bastion.sign.raw import key_id, sign_bytes

logger = logging.getLogger(__name__)

WITNESS_FORMAT = "bastion-audit-witness/1"
_NAME = re.compile(r"(\d{12})\.json")
MAX_HEAD_BYTES = 4096
_MAX_RACES = 50  # other writers taking the next counter first, before giving up


def witness_message(chain: str, counter: int, seq: int, entry_hash: bytes, signed_at: datetime) -> bytes:
    """The bytes a witnessed head's signature covers: its place in the witness as well as the chain's."""
    stamp = signed_at.astimezone(UTC).isoformat(timespec="microseconds")
    return f"{WITNESS_FORMAT}\n{chain}\n{counter}\n{seq}\n{entry_hash.hex()}\n{stamp}".encode()


@dataclass(frozen=True, slots=True)
class WitnessedHead:
    """Head number `counter` of `chain` at one witness: entry `seq` had hash `entry_hash`."""

    chain: str
    counter: int
    seq: int
    entry_hash: bytes
    signed_at: datetime
    key_id: str
    signature: bytes

    def message(self) -> bytes:
        return witness_message(self.chain, self.counter, self.seq, self.entry_hash, self.signed_at)

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "format": WITNESS_FORMAT,
                "chain": self.chain,
                "counter": self.counter,
                "seq": self.seq,
                "entry_hash": self.entry_hash.hex(),
                "signed_at": self.signed_at.astimezone(UTC).isoformat(timespec="microseconds"),
                "key_id": self.key_id,
                "signature": self.signature.hex(),
            },
            indent=1,
        ).encode()

    @classmethod
    def from_json(cls, data: bytes, chain: str, counter: int) -> WitnessedHead:
        """Parse one object; ValueError if it is not head `counter` of `chain`."""
        try:
            raw = json.loads(data)
            head = cls(
                chain=str(raw["chain"]),
                counter=int(raw["counter"]),
                seq=int(raw["seq"]),
                entry_hash=bytes.fromhex(raw["entry_hash"]),
                signed_at=datetime.fromisoformat(raw["signed_at"]),
                key_id=str(raw["key_id"]),
                signature=bytes.fromhex(raw["signature"]),
            )
            fmt = raw["format"]
        except (KeyError, TypeError, ValueError, AttributeError, RecursionError) as err:
            raise ValueError(f"not a witnessed head: {err}") from err
        if fmt != WITNESS_FORMAT or head.chain != chain or head.counter != counter or head.signed_at.tzinfo is None:
            raise ValueError(f"names {head.chain!r} #{head.counter} in format {fmt!r}, not {chain!r} #{counter}")
        return head


@dataclass(frozen=True, slots=True)
class WitnessReading:
    """Everything one witness holds for one chain, in counter order."""

    location: str
    heads: tuple[WitnessedHead, ...]
    unreadable: tuple[tuple[int, str], ...]  # (counter, why) for objects that are not valid heads

    @property
    def last_counter(self) -> int:
        counters = [h.counter for h in self.heads] + [c for c, _ in self.unreadable]
        return max(counters, default=0)


class Witness:
    """An append-only sequence of signed heads per chain, at a folder or an fsspec URL.

    Args:
        location: a folder path, or a URL fsspec understands (`s3://bucket/prefix`).
        options: fsspec storage options (`endpoint_url`, ...); credentials belong in the
            environment (AWS_* or FSSPEC_S3_*), never in a config file.
    """

    def __init__(self, location: str | Path, options: Mapping[str, Any] | None = None) -> None:
        import fsspec  # noqa: PLC0415  (fsspec pulls in its backends; only witnessed logs pay)

        text = str(location)
        if not text.strip():
            raise ConfigError("the audit witness location is empty", hint="Name a folder or an s3:// URL.")
        self.location = text
        try:
            self._fs, self._root = fsspec.core.url_to_fs(text, **dict(options or {}))
        except (ValueError, ImportError) as err:
            raise ConfigError(f"cannot use {text!r} as an audit witness: {err}") from err
        self._local = "file" in _protocols(self._fs)
        protocol = sorted(_protocols(self._fs))[0]
        # The same place however it is spelled (relative path, trailing slash, file:// prefix).
        self.identity = hashlib.sha256(f"{protocol}://{self._root.rstrip('/')}".encode()).hexdigest()
        self._next: dict[str, int] = {}  # per chain: the counter this process expects to write next
        self._witnessed: dict[str, int] = {}  # per chain: the furthest seq this process has witnessed

    def __repr__(self) -> str:
        return f"Witness({self.location!r})"

    def contains(self, path: Path) -> bool:
        """Whether this witness is a folder inside `path` (whoever can write `path` can rewrite it)."""
        if not self._local:
            return False
        return Path(self._root).resolve().is_relative_to(path.resolve())

    def _dir(self, chain: str) -> str:
        if not chain or "/" in chain or chain.startswith("."):
            raise ConfigError(f"bad audit chain name {chain!r}")
        return f"{self._root.rstrip('/')}/{chain}"

    def _counters(self, chain: str) -> list[int]:
        return sorted(self._listing(chain))

    def _listing(self, chain: str) -> dict[int, int]:
        """The heads present: counter -> size in bytes."""
        folder = self._dir(chain)
        try:
            self._fs.invalidate_cache(folder)
            entries = self._fs.ls(folder, detail=True)
        except FileNotFoundError:
            return {}
        except OSError as err:
            raise BackendUnavailable(f"cannot list the audit witness at {self.location}: {err}") from err
        found = {}
        for entry in entries:
            match = _NAME.fullmatch(str(entry["name"]).rstrip("/").rsplit("/", 1)[-1])
            if match:
                found[int(match[1])] = int(entry.get("size") or 0)
        return found

    # --- reading ---------------------------------------------------------------------------

    def read(self, chain: str) -> WitnessReading:
        """Every head of `chain` here; objects that do not parse are listed, not dropped.

        On S3 the bucket's version history is read too: with object lock (which needs
        versioning) a head overwritten or deleted keeps its old version, so whoever holds
        write credentials can hide a head behind a newer version or a delete marker, but not
        unseen: each such head is reported as not valid.
        """
        sizes = self._listing(chain)
        altered = self._s3_history(chain) if "s3" in _protocols(self._fs) else {}
        # A head is a few hundred bytes; anything far larger was planted to exhaust the verifier.
        altered.update({c: f"too large: {size} bytes" for c, size in sizes.items() if size > MAX_HEAD_BYTES})
        counters = sorted(set(sizes) | set(altered))
        paths = {f"{self._dir(chain)}/{counter:012d}.json": counter for counter in counters if counter not in altered}
        try:
            contents = self._fs.cat(list(paths), on_error="return") if paths else {}
        except OSError as err:
            raise BackendUnavailable(f"cannot read the audit witness at {self.location}: {err}") from err
        heads, unreadable = [], list(altered.items())
        for path, counter in paths.items():
            data = contents.get(path)
            if not isinstance(data, bytes) or len(data) > MAX_HEAD_BYTES:
                unreadable.append((counter, f"unreadable: {data if not isinstance(data, bytes) else 'too large'}"))
                continue
            try:
                heads.append(WitnessedHead.from_json(data, chain, counter))
            except ValueError as err:
                unreadable.append((counter, str(err)))
        return WitnessReading(self.location, tuple(heads), tuple(unreadable))

    def _s3_history(self, chain: str) -> dict[int, str]:
        """Heads with more than one version, or hidden by a delete marker: counter -> what happened."""
        bucket, _, prefix = f"{self._dir(chain)}/".partition("/")
        versions: dict[int, int] = {}
        deleted: set[int] = set()
        request: dict[str, str] = {"Bucket": bucket, "Prefix": prefix}
        try:
            while True:
                page = self._fs.call_s3("list_object_versions", **request)
                for item in page.get("Versions", []):
                    match = _NAME.fullmatch(item["Key"].rsplit("/", 1)[-1])
                    if match:
                        versions[int(match[1])] = versions.get(int(match[1]), 0) + 1
                for item in page.get("DeleteMarkers", []):
                    match = _NAME.fullmatch(item["Key"].rsplit("/", 1)[-1])
                    if match:
                        deleted.add(int(match[1]))
                if not page.get("IsTruncated"):
                    break
                request["KeyMarker"] = page["NextKeyMarker"]
                request["VersionIdMarker"] = page["NextVersionIdMarker"]
        except (OSError, KeyError) as err:
            raise BackendUnavailable(
                f"cannot read the version history of the audit witness at {self.location}: {err}",
                hint="The verifier needs s3:ListBucketVersions on the witness bucket as well as read access.",
            ) from err
        found = {counter: f"overwritten: {count} versions of one head" for counter, count in versions.items() if count > 1}
        found.update({counter: "deleted: a delete marker hides it" for counter in deleted})
        return found

    # --- writing ---------------------------------------------------------------------------

    def advance(
        self, key: PrivateKey, chain: str, seq: int, entry_hash: bytes, *, now: datetime, hint: int = 0
    ) -> WitnessedHead | None:
        """Append a head for (seq, entry_hash) unless this process already witnessed that far.

        `hint` is the counter the database remembers as written last: the next one is tried
        first, and only a race with another writer costs a listing.

        Returns:
            The head written, or None when nothing new needed witnessing.
        Raises:
            BackendUnavailable: the witness cannot be written.
        """
        if self._witnessed.get(chain, -1) >= seq:
            return None
        counter = max(self._next.get(chain, 1), hint + 1)
        for _race in range(_MAX_RACES):
            head = _signed_head(key, chain, counter, seq, entry_hash, now)
            try:
                self._create(f"{self._dir(chain)}/{counter:012d}.json", head.to_json())
            except FileExistsError:
                counter = max(self._counters(chain), default=0) + 1
                continue
            except OSError as err:
                raise BackendUnavailable(f"cannot write the audit witness at {self.location}: {err}") from err
            self._next[chain] = counter + 1
            self._witnessed[chain] = seq
            return head
        raise BackendUnavailable(f"the audit witness at {self.location} kept changing under this writer")

    def _create(self, path: str, data: bytes) -> None:
        """Write `data` as a new object at `path`; FileExistsError if one is there already."""
        if not self._local:
            self._fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            with self._fs.open(path, "xb") as handle:  # S3: If-None-Match: * (412 -> FileExistsError)
                handle.write(data)
            return
        final = Path(path)
        final.parent.mkdir(parents=True, exist_ok=True)
        # Written in full and flushed, then linked into place: link(2) refuses an existing name,
        # and a reader never sees half a head.
        handle, staging = tempfile.mkstemp(dir=final.parent, prefix=".staging-")
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.link(staging, final)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(staging)
        directory = os.open(final.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


def _signed_head(key: PrivateKey, chain: str, counter: int, seq: int, entry_hash: bytes, now: datetime) -> WitnessedHead:
    moment = now.astimezone(UTC) if now.tzinfo else now.replace(tzinfo=UTC)
    return WitnessedHead(
        chain=chain,
        counter=counter,
        seq=seq,
        entry_hash=entry_hash,
        signed_at=moment,
        key_id=key_id(key.public_key()),
        signature=sign_bytes(key, witness_message(chain, counter, seq, entry_hash, moment)),
    )


def _protocols(fs: Any) -> set[str]:
    protocol = fs.protocol
    return {protocol} if isinstance(protocol, str) else set(protocol)
