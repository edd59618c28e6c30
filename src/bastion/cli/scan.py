"""`bastion scan`: parse, call `scan_paths`, render, exit with the verdict's code."""

from __future__ import annotations

import enum
import sys
from pathlib import Path
from typing import Annotated

import typer


class Format(enum.StrEnum):
    TEXT = "text"
    JSON = "json"
    SARIF = "sarif"


def scan_command(
    paths: Annotated[
        list[Path], typer.Argument(help="Model files or folders (scanned recursively).", show_default=False)
    ],
    output_format: Annotated[
        Format, typer.Option("--format", "-f", help="text for people, json or sarif for machines.")
    ] = Format.TEXT,
    fail_on: Annotated[
        str | None,
        typer.Option(
            "--fail-on",
            help="Exit 1 on findings at or above: info, low, medium, high, critical. [default: high, or the policy's]",
        ),
    ] = None,
    policy: Annotated[Path | None, typer.Option("--policy", help="Policy YAML file (or set BASTION_POLICY).")] = None,
    workers: Annotated[
        int | None, typer.Option("--workers", "-j", help="Processes for folders [default: one per core].")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the report to this file instead of stdout.")
    ] = None,
    show_clean: Annotated[
        bool, typer.Option("--show-clean", help="List files without findings too (text format).")
    ] = False,
) -> None:
    """Scan model files for code that runs when they are loaded.

    Never loads, imports or executes what it reads. Exit codes: 0 clean, 1 findings at or
    above --fail-on, 2 something could not be fully analysed (never reported as clean) or
    a usage error.
    """
    from bastion.policy.load import load_policy  # noqa: PLC0415  # keep `--help` fast
    from bastion.scan.api import scan_paths  # noqa: PLC0415
    from bastion.scan.report import exit_code  # noqa: PLC0415

    active = load_policy(policy, block_at=fail_on)
    with _progress() as progress:
        report = scan_paths(paths, active.scan, progress=progress, workers=workers)
    block_at = active.scan.block_at
    out = output.open("w", encoding="utf-8") if output else sys.stdout
    try:
        match output_format:
            case Format.TEXT:
                from bastion.render.scan_text import render_text  # noqa: PLC0415

                render_text(report, block_at, out, show_clean=show_clean)
            case Format.JSON:
                from bastion.render.scan_json import render_json  # noqa: PLC0415

                render_json(report, block_at, out)
            case Format.SARIF:
                from bastion.render.scan_sarif import render_sarif  # noqa: PLC0415

                render_sarif(report, block_at, out)
    finally:
        if output:
            out.close()
    raise typer.Exit(exit_code(report.verdict(block_at)))


class _progress:  # noqa: N801  # used as a context manager, reads as one
    """A progress bar on stderr when it is a terminal; nothing otherwise."""

    def __enter__(self) -> _Bar | None:
        if not sys.stderr.isatty():
            return None
        self._bar = _Bar()
        return self._bar

    def __exit__(self, *exc: object) -> None:
        bar = getattr(self, "_bar", None)
        if bar is not None:
            bar.close()


class _Bar:
    def __init__(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn  # noqa: PLC0415

        self._progress = Progress(
            TextColumn("scanning"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.description}"),
            transient=True,
        )
        self._task = self._progress.add_task("", total=None)
        self._started = False

    def __call__(self, done: int, total: int, path: str) -> None:
        if not self._started:
            self._progress.start()
            self._started = True
        self._progress.update(self._task, completed=done, total=total, description=Path(path).name[-40:])

    def close(self) -> None:
        if self._started:
            self._progress.stop()
