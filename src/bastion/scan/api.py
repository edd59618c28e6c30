"""The scanner's façade: `scan_path` for one file or folder, `scan_paths` for many.

Files are mapped, not read: only the bytes a format needs are touched, so a 100 GB
checkpoint costs its pickle and its zip directory, not its tensors. Folders are scanned
in this process while that is quickest and on the idle cores once the measured pace says
the rest would take long; each file is scanned exactly once from one mapping.
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
    """Scan files and folders (recursively), in parallel when that pays.

    Args:
        paths: files or folders.
        policy: the scan part of the policy (limits, allow-listed globals); defaults apply.
        progress: called as progress(done, total, path) after each file.
        workers: processes to use. None (the default) picks from the job: files are
            scanned in this process while the measured pace says the rest is quick, and
            spread over the idle cores once the rest would take longer than starting
            workers costs several times over. An explicit count is used as given.

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
    results: list[FileReport] = []
    if workers is not None and workers > 1 and len(files) > 1:
        _scan_in_pool(files, active, workers, results, progress)
    else:
        serial_until = _serial_until(files, workers)
        done = _scan_here(files, active, results, progress, serial_until)
        if done < len(files):
            _scan_in_pool(files, active, _idle_cores(), results, progress, done)
    return ScanReport(tuple(str(p) for p in paths), tuple(results), time.perf_counter() - started)


# Starting a pool of forked workers costs about 30-60 ms on a 2-core machine and each
# result crosses a pipe (~0.1 ms a file; measured with 500 small pickles: start 15-30 ms,
# close 6-16 ms). Two workers save half of what is left, so a pool pays once the files
# left would take about 0.3 s here; below that, one process is quickest. On a loaded
# machine `_idle_cores` is 1 and nothing is forked (a pool of two took 0.33 s against
# 0.15 s in one process with the load average at 4 on 2 cores).
_POOL_PAYS_AFTER_S = 0.3
_PACE_AFTER_S = 0.05


def _serial_until(files: list[str], workers: int | None) -> Callable[[int, float], bool]:
    """A test, after each file, of whether to go on in this process: (files done, seconds) -> bool."""
    total = len(files)
    if workers == 1 or total < 2 or _idle_cores() < 2:
        return lambda _done, _elapsed: True
    return lambda done, elapsed: not pool_pays(total, done, elapsed)


def pool_pays(total: int, done: int, elapsed: float) -> bool:
    """Whether the files left, at the pace measured so far, are worth starting workers for."""
    if elapsed < _PACE_AFTER_S or done <= 0:
        return False  # too early to know the pace
    left = total - done
    return left >= 4 and elapsed / done * left >= _POOL_PAYS_AFTER_S


def _idle_cores() -> int:
    """Cores this process may use that are not already busy (1 or more)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    try:
        busy = int(os.getloadavg()[0])
    except OSError:
        busy = 0
    # This process counts in the load: a machine as busy as its cores still has ours.
    return max(1, min(cores, cores - busy + 1))


def _scan_here(
    files: list[str],
    policy: ScanPolicy,
    results: list[FileReport],
    progress: Progress | None,
    keep_serial: Callable[[int, float], bool],
) -> int:
    """Scan files in this process while `keep_serial` says so; the number scanned."""
    total = len(files)
    started = time.perf_counter()
    for i, path in enumerate(files, 1):
        results.append(scan_file(path, policy))
        if progress is not None:
            progress(i, total, path)
        if i < total and not keep_serial(i, time.perf_counter() - started):
            return i
    return total


def _scan_in_pool(
    files: list[str],
    policy: ScanPolicy,
    count: int,
    results: list[FileReport],
    progress: Progress | None,
    start: int = 0,
) -> None:
    import multiprocessing  # noqa: PLC0415  # only for many files
    from concurrent.futures import ProcessPoolExecutor  # noqa: PLC0415
    from concurrent.futures.process import BrokenProcessPool  # noqa: PLC0415

    left = files[start:]
    total = len(files)
    count = max(1, min(count, len(left)))
    # fork starts workers with everything already imported. A worker killed from outside
    # (the OOM killer, kill -9) breaks the executor, which says so instead of waiting for ever
    # as multiprocessing.Pool would: the files it had not reported are not analysed.
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else None)
    chunk = max(1, min(64, len(left) // (count * 4)))
    done = start
    try:
        with ProcessPoolExecutor(count, mp_context=context, initializer=_init_worker, initargs=(policy,)) as pool:
            for report in pool.map(_scan_in_worker, left, chunksize=chunk):
                results.append(report)
                done += 1
                if progress is not None:
                    progress(done, total, report.path)
    except BrokenProcessPool:
        for path in files[done:]:
            results.append(_worker_lost(path))
            done += 1
            if progress is not None:
                progress(done, total, path)


def _worker_lost(path: str) -> FileReport:
    finding = Finding(
        "scan.incomplete",
        Severity.HIGH,
        Location(path),
        "not analysed: the worker process scanning it ended abruptly (killed, or out of memory)",
        "",
    )
    return FileReport(path, 0, (), (finding,))


def scan_path(path: Path | str, policy: ScanPolicy | None = None, progress: Progress | None = None) -> ScanReport:
    """Scan one file or folder. See `scan_paths`."""
    return scan_paths([str(path)], policy, progress)
