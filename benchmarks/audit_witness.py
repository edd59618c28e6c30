"""What the audit witness costs: per registry change, and per verification, on SQLite.

* **change**: one `AuditLog.append` signed at once (`checkpoint_every=1`, as the registry's chain
  is), without a witness and with one in a local folder (one new file, fsynced, linked into
  place, and the database's record of the counter): the median of `--changes` appends, per
  `--repeat` round.
* **verify**: `AuditLog.verify` over a gateway-like chain of `--entries` entries in batches of
  1,000 (one checkpoint and one witnessed head each), without and with reading the witness.

Run from the repository root:

    .venv/bin/python benchmarks/audit_witness.py --changes 200 --entries 200000 --repeat 3
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

from bastion.audit import AuditEvent, AuditLog
from bastion.audit.witness import Witness
from bastion.db import connect
from bastion.sign.keys import generate_key


def change_ms(folder: Path, witnessed: bool, changes: int) -> float:
    key = generate_key("ed25519")
    engine = connect(f"sqlite:///{folder / 'changes.db'}")
    witness = Witness(folder / "vault") if witnessed else None
    log = AuditLog(engine, "registry", signing_key=key, checkpoint_every=1, checkpoint_seconds=None, witness=witness)
    times = []
    for n in range(changes):
        start = time.perf_counter()
        log.append(AuditEvent("admin", "access.grant", f"user-{n}"))
        times.append(time.perf_counter() - start)
    engine.dispose()
    return statistics.median(times) * 1000


def verify_seconds(folder: Path, entries: int) -> tuple[float, float, int]:
    key = generate_key("ed25519")
    engine = connect(f"sqlite:///{folder / 'gateway.db'}")
    witness = Witness(folder / "vault")
    log = AuditLog(engine, "gateway", signing_key=key, checkpoint_every=1000, checkpoint_seconds=None, witness=witness)
    for start in range(0, entries, 1000):
        log.append_many([AuditEvent("key", "infer", "model@1", {"n": n}) for n in range(start, start + 1000)])
    timed = []
    for checked in (None, witness):
        start = time.perf_counter()
        report = log.verify([key.public_key()], checked)
        timed.append(time.perf_counter() - start)
        assert report.ok, report.problems
    engine.dispose()
    return timed[0], timed[1], report.witness_heads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--changes", type=int, default=200)
    parser.add_argument("--entries", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"# {platform.platform()}, Python {platform.python_version()}")
    print(f"{'round':>5} {'change_ms':>10} {'witnessed_ms':>13} {'ratio':>6}")
    for round_ in range(1, args.repeat + 1):
        with tempfile.TemporaryDirectory() as plain, tempfile.TemporaryDirectory() as witnessed:
            bare, kept = change_ms(Path(plain), False, args.changes), change_ms(Path(witnessed), True, args.changes)
        print(f"{round_:>5} {bare:>10.2f} {kept:>13.2f} {kept / bare:>6.2f}")
    with tempfile.TemporaryDirectory() as folder:
        bare_s, kept_s, heads = verify_seconds(Path(folder), args.entries)
    print(f"verify {args.entries} entries: {bare_s:.2f} s without the witness, {kept_s:.2f} s with its {heads} heads")


if __name__ == "__main__":
    main()
