"""Audit log throughput on SQLite and PostgreSQL: durable appends, bulk building and verifying.

For each backend, on a fresh database (a SQLite file in WAL mode with synchronous=FULL, as
`bastion.db.connect` opens it; a new `bastion_bench_<random>` PostgreSQL database), with an
Ed25519 signing key and `checkpoint_every` (default 1,000):

* **single**: one caller, `AuditLog.append`, one commit (fsync) per entry;
* **group**: `--threads` callers (default 16) through one `AuditWriter`, which commits whatever
  is waiting in one transaction; each caller returns only once its entry is durable;
* **build**: `--entries` entries (default 1,000,000) with `append_many` in batches of `--batch`
  (default 10,000), one commit and one checkpoint per batch;
* **verify**: `AuditLog.verify` over that log, in a fresh process so that its peak RSS is its own
  (the build's "peak MB" is that of the benchmark process up to then).

Appends are the median of `--repeat` runs (each on a new chain). Run from the repository root:

    .venv/bin/python benchmarks/audit.py --backend both
    .venv/bin/python benchmarks/audit.py --backend sqlite --entries 100000 --appends 500
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import resource
import secrets
import shutil
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from bastion.audit import AuditEvent, AuditLog
from bastion.audit.writer import AuditWriter
from bastion.db import connect


@dataclass(frozen=True)
class Rate:
    entries: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.entries / self.seconds


def event(n: int) -> AuditEvent:
    return AuditEvent(
        actor=f"svc-{n % 7}", action="PROMOTE", subject=f"fraud-detector@{n}", details={"stage": "prod", "n": n}
    )


def single_caller(url: str, key: ed25519.Ed25519PrivateKey, appends: int, every: int, chain: str) -> Rate:
    engine = connect(url)
    log = AuditLog(engine, chain, signing_key=key, checkpoint_every=every)
    start = time.perf_counter()
    for n in range(appends):
        log.append(event(n))
    seconds = time.perf_counter() - start
    engine.dispose()
    return Rate(appends, seconds)


def group_commit(url: str, key: ed25519.Ed25519PrivateKey, appends: int, every: int, threads: int, chain: str) -> Rate:
    engine = connect(url)
    log = AuditLog(engine, chain, signing_key=key, checkpoint_every=every)
    per_thread = appends // threads
    barrier = threading.Barrier(threads + 1)
    with AuditWriter(log) as writer, ThreadPoolExecutor(threads) as pool:

        def caller(t: int) -> None:
            barrier.wait()
            for n in range(per_thread):
                writer.append(event(t * per_thread + n))

        futures = [pool.submit(caller, t) for t in range(threads)]
        barrier.wait()
        start = time.perf_counter()
        for future in futures:
            future.result()
        seconds = time.perf_counter() - start
    engine.dispose()
    return Rate(per_thread * threads, seconds)


def build(url: str, key: ed25519.Ed25519PrivateKey, entries: int, batch: int, every: int, chain: str) -> Rate:
    engine = connect(url)
    log = AuditLog(engine, chain, signing_key=key, checkpoint_every=every)
    start = time.perf_counter()
    done = 0
    while done < entries:
        size = min(batch, entries - done)
        log.append_many([event(done + n) for n in range(size)])
        done += size
    seconds = time.perf_counter() - start
    engine.dispose()
    return Rate(entries, seconds)


def _verify_child(url: str, public_raw: bytes, chain: str, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    engine = connect(url)
    log = AuditLog(engine, chain)
    key = ed25519.Ed25519PublicKey.from_public_bytes(public_raw)
    start = time.perf_counter()
    report = log.verify([key])
    seconds = time.perf_counter() - start
    engine.dispose()
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out.put((seconds, peak_kb, report.entries, report.ok, report.checkpoints, len(report.problems)))


def verify_in_child(url: str, key: ed25519.Ed25519PrivateKey, chain: str) -> tuple[float, float, int, bool, int]:
    """(seconds, peak MB, entries, ok, checkpoints) of verify, in a fresh interpreter."""
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    public_raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    child = context.Process(target=_verify_child, args=(url, public_raw, chain, out))
    child.start()
    seconds, peak_kb, entries, ok, checkpoints, _problems = out.get()
    child.join()
    return seconds, peak_kb / 1024, entries, ok, checkpoints


def _postgres_database(admin_url: str) -> tuple[str, str]:
    import psycopg  # noqa: PLC0415 - only needed for PostgreSQL
    from sqlalchemy.engine import make_url  # noqa: PLC0415

    name = f"bastion_bench_{secrets.token_hex(4)}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False), name


def _drop_postgres(admin_url: str, name: str) -> None:
    import psycopg  # noqa: PLC0415

    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run_backend(backend: str, args: argparse.Namespace, key: ed25519.Ed25519PrivateKey, work: Path) -> list[str]:
    if backend == "sqlite":
        url, cleanup = f"sqlite:///{work / 'audit.db'}", None
    else:
        url, name = _postgres_database(args.pg_url)
        cleanup = name
    try:
        connect(url).dispose()  # migrate once, outside the timings
        every = args.checkpoint_every
        single = [single_caller(url, key, args.appends, every, f"single-{r}") for r in range(args.repeat)]
        group = [
            group_commit(url, key, args.group_appends, every, args.threads, f"group-{r}") for r in range(args.repeat)
        ]
        built = build(url, key, args.entries, args.batch, every, "bulk")
        build_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # this process so far
        verify_s, verify_mb, verified, ok, checkpoints = verify_in_child(url, key, "bulk")
        if verified != args.entries or not ok:
            raise SystemExit(f"{backend}: verify found {verified} entries, ok={ok}")
        size = sum(p.stat().st_size for p in work.glob("audit.db*")) / 1e6 if backend == "sqlite" else float("nan")
        s_rate = statistics.median(r.per_second for r in single)
        g_rate = statistics.median(r.per_second for r in group)
        return [
            f"{backend:<11}{'append, 1 caller':<28}{args.appends:>10}{statistics.median(r.seconds for r in single):>9.2f}"
            f"{s_rate:>12.0f}{'':>9}  1.00x",
            f"{backend:<11}{f'AuditWriter, {args.threads} threads':<28}{args.group_appends:>10}"
            f"{statistics.median(r.seconds for r in group):>9.2f}{g_rate:>12.0f}{'':>9}  {g_rate / s_rate:.2f}x",
            f"{backend:<11}{f'append_many x {args.batch}':<28}{built.entries:>10}{built.seconds:>9.2f}"
            f"{built.per_second:>12.0f}{build_mb:>9.0f}  {'' if size != size else f'{size:.0f} MB on disk'}",
            f"{backend:<11}{'verify':<28}{verified:>10}{verify_s:>9.2f}{verified / verify_s:>12.0f}{verify_mb:>9.0f}"
            f"  ok, {checkpoints} checkpoints",
        ]
    finally:
        if cleanup is not None:
            _drop_postgres(args.pg_url, cleanup)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=1_000_000, help="entries in the log to verify (default 1e6)")
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--appends", type=int, default=2000, help="appends timed for one caller (default 2000)")
    parser.add_argument("--group-appends", type=int, default=16000, help="appends timed through AuditWriter")
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--batch", type=int, default=10_000, help="events per append_many when building")
    parser.add_argument("--checkpoint-every", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("BASTION_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"),
        help="an existing database to create the benchmark's own database from",
    )
    parser.add_argument("--workdir", type=Path, default=None, help="where the SQLite file goes (default: a temp dir)")
    args = parser.parse_args()

    key = ed25519.Ed25519PrivateKey.generate()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bastion-audit-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    try:
        print(
            f"{platform.platform()}; Python {platform.python_version()}; {os.cpu_count()} cores; "
            f"checkpoint_every={args.checkpoint_every}; appends: median of {args.repeat}"
        )
        print(f"{'backend':<11}{'what':<28}{'entries':>10}{'seconds':>9}{'entries/s':>12}{'peak MB':>9}  ratio / note")
        for backend in backends:
            for row in run_backend(backend, args, key, work):
                print(row, flush=True)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
