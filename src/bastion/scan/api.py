"""The scanner's façade: `scan_path` for one file or folder, `scan_paths` for many.

Files are mapped, not read: only the bytes a format needs are touched, so a 100 GB
checkpoint costs its pickle and its zip directory, not its tensors. Folders are scanned
on all cores, one process per core, each file scanned exactly once from one mapping.
(A hub of many machines' worth fans out on Ray or Dask, per the design; not here yet.)
"""

from __future__ import annotations

import mmap
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from bastion.errors import ArtifactError
from bastion.findings import Finding, Location, Severity
from bastion.policy.schema import ScanPolicy
from bastion.scan.context import ScanContext
from bastion.scan.dispatch import scan_source
from bastion.scan.report import FileReport, ScanReport
from bastion.scan.source import MemorySource

Progress = Callable[[int, int, str], None]
"""progress(done, total, path): called after each file."""

_SERIAL_BELOW = 64
_READ_BELOW = 1 << 20


def scan_bytes(data: bytes, name: str = "<bytes>", policy: ScanPolicy | None = None) -> FileReport:
    """Scan bytes already in memory (for embedding and tests)."""
    active = policy or ScanPolicy()
    return _scan_buffer(data, name, active)


def _scan_buffer(buf: bytes | mmap.mmap, path: str, policy: ScanPolicy) -> FileReport:
    ctx = ScanContext(policy.limits, scan_source, policy.allowed_globals())
    src = MemorySource(buf, path)
    scan_source(ctx, src, Location(path), os.path.basename(path), 0)
    return FileReport(path, len(buf), tuple(ctx.formats), tuple(_deduplicate(ctx.findings)))


def _deduplicate(findings: list[Finding]) -> Iterator[Finding]:
    seen: set[tuple[str, str, str, str]] = set()
    for f in findings:
        key = (f.rule_id, str(f.location.file), f.location.member or "", f.evidence or f.message)
        if key not in seen:
            seen.add(key)
            yield f


def scan_file(path: str, policy: ScanPolicy) -> FileReport:
    """Scan one regular file; an unreadable one is reported as not analysed."""
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size == 0:
                return FileReport(path, 0, (), ())
            if size <= _READ_BELOW:
                # Small files: one read costs less than setting up and tearing down a mapping.
                return _scan_buffer(handle.read(), path, policy)
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                return _scan_buffer(mapped, path, policy)
    except OSError as err:
        finding = Finding(
            "scan.read-error", Severity.HIGH, Location(path), f"cannot be read: {err.strerror or err}", ""
        )
        return FileReport(path, 0, (), (finding,))


def _walk(root: Path) -> Iterator[str]:
    if root.is_file():
        yield str(root)
        return
    if not root.exists():
        raise ArtifactError(f"{root}: no such file or folder", hint="Check the path.")
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            full = os.path.join(folder, name)
            # A link to a file is scanned through the link, as a loader would read it;
            # links to folders are not followed (os.walk), so a cycle cannot trap the scan.
            if os.path.isfile(full):
                yield full


_WORKER_POLICY = ScanPolicy()


def _init_worker(policy: ScanPolicy) -> None:
    global _WORKER_POLICY  # noqa: PLW0603  # one policy per worker process, sent once
    _WORKER_POLICY = policy


def _scan_in_worker(path: str) -> FileReport:
    return scan_file(path, _WORKER_POLICY)


def scan_paths(
    paths: list[Path] | list[str],
    policy: ScanPolicy | None = None,
    progress: Progress | None = None,
    workers: int | None = None,
) -> ScanReport:
    """Scan files and folders (recursively), in parallel when there are many files.

    Args:
        paths: files or folders.
        policy: the scan part of the policy (limits, allow-listed globals); defaults apply.
        progress: called as progress(done, total, path) after each file.
        workers: processes to use; default one per core.

    Returns:
        A ScanReport with one FileReport per file, in path order.

    Raises:
        ArtifactError: a path does not exist.

    Example:
        >>> report = scan_paths(["model.pt"])
        >>> report.verdict() is Verdict.PASS
    """
    active = policy or ScanPolicy()
    started = time.perf_counter()
    files = [f for p in paths for f in _walk(Path(p))]
    total = len(files)
    results: list[FileReport] = []
    count = workers or os.cpu_count() or 1
    if total < _SERIAL_BELOW or count == 1:
        for i, path in enumerate(files, 1):
            results.append(scan_file(path, active))
            if progress is not None:
                progress(i, total, path)
    else:
        import multiprocessing  # noqa: PLC0415  # only for many files

        # fork starts workers with everything already imported (measured: 1,000 small
        # pickles in 0.13 s on 2 cores, against 0.16 s with concurrent.futures).
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("fork" if "fork" in methods else None)
        chunk = max(1, min(64, total // (count * 4)))
        with context.Pool(count, initializer=_init_worker, initargs=(active,)) as pool:
            for i, report in enumerate(pool.imap(_scan_in_worker, files, chunksize=chunk), 1):
                results.append(report)
                if progress is not None:
                    progress(i, total, report.path)
    return ScanReport(tuple(str(p) for p in paths), tuple(results), time.perf_counter() - started)


def scan_path(path: Path | str, policy: ScanPolicy | None = None, progress: Progress | None = None) -> ScanReport:
    """Scan one file or folder. See `scan_paths`."""
    return scan_paths([str(path)], policy, progress)
