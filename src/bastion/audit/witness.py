"""A signed copy of the chain's head kept outside the database.

Whoever can write the database can delete the newest entries together with the checkpoints
that cover them and leave a chain that is consistent in itself. The witness, a file beside
the signing key, remembers the furthest head ever written, so such a cut shows.
"""

from __future__ import annotations

import fcntl
import json
import os
from datetime import UTC, datetime
from pathlib import Path

from bastion.audit.model import Checkpoint, checkpoint_message
from bastion.errors import ConfigError
from bastion.sign.keys import PrivateKey
from bastion.sign.raw import key_id, sign_bytes


def read_witness(path: Path, chain: str) -> Checkpoint | None:
    """The witnessed head of `chain`, or None when nothing was witnessed yet."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8")).get(chain)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise ConfigError(f"{path}: unreadable audit witness: {err}", hint="Restore it from a backup.") from err
    if raw is None:
        return None
    try:
        return Checkpoint(
            int(raw["seq"]),
            bytes.fromhex(raw["entry_hash"]),
            datetime.fromisoformat(raw["signed_at"]),
            str(raw["key_id"]),
            bytes.fromhex(raw["signature"]),
        )
    except (KeyError, ValueError, TypeError) as err:
        raise ConfigError(f"{path}: malformed audit witness for {chain!r}: {err}") from err


def advance_witness(path: Path, key: PrivateKey, chain: str, seq: int, entry_hash: bytes) -> None:
    """Record (seq, hash) as `chain`'s head unless the file already holds a later one."""
    lock = path.with_name(path.name + ".lock")
    with lock.open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            document = {}
        if int(document.get(chain, {}).get("seq", 0)) >= seq:
            return
        now = datetime.now(UTC)
        document[chain] = {
            "seq": seq,
            "entry_hash": entry_hash.hex(),
            "signed_at": now.isoformat(),
            "key_id": key_id(key.public_key()),
            "signature": sign_bytes(key, checkpoint_message(chain, seq, entry_hash, now)).hex(),
        }
        staging = path.with_name(path.name + ".tmp")
        staging.write_text(json.dumps(document, indent=2), encoding="utf-8")
        with staging.open("rb") as handle:
            os.fsync(handle.fileno())
        os.replace(staging, path)
