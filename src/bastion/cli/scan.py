"""`bastion scan`: parse, call `scan_paths`, render, exit with the verdict's code."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

import click

from bastion.errors import ArtifactError, ConfigError

FORMATS = ("text", "json", "sarif")
SEVERITIES = ("info", "low", "medium", "high", "critical")


@click.command("scan")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option(
    "--format",
    "-f",
    "output_format",
    type=click.Choice(FORMATS),
    default="text",
    show_default=True,
    help="text for people; json or sarif for machines.",
)
@click.option(
    "--fail-on",
    type=click.Choice(SEVERITIES, case_sensitive=False),
    default=None,
    help="Exit 1 on findings at or above this severity [default: high, or the policy's block_at].",
)
@click.option(
    "--policy", type=click.Path(path_type=Path), default=None, help="Policy YAML file (or set BASTION_POLICY)."
)
@click.option(
    "--workers",
    "-j",
    type=click.IntRange(min=1),
    default=None,
    help="Processes for folders [default: from the job: one for quick jobs, the idle cores for long ones].",
)
@click.option(
    "--output", "-o", type=click.Path(path_type=Path), default=None, help="Write the report to this file, not stdout."
)
@click.option("--show-clean", is_flag=True, help="Also list files without findings (text format).")
@click.option(
    "--explain",
    "explain_rule",
    metavar="RULE",
    default=None,
    help="Print what a rule id means, why it matters and how to fix it (json with --format json), and exit.",
)
def scan_command(
    paths: tuple[Path, ...],
    output_format: str,
    fail_on: str | None,
    policy: Path | None,
    workers: int | None,
    output: Path | None,
    show_clean: bool,
    explain_rule: str | None,
) -> int:
    """Scan model files and folders for code that runs when they are loaded.

    Bastion never loads, imports or executes what it reads. Formats are recognised by
    content: pickle, PyTorch, joblib, NumPy, Keras, TensorFlow, ONNX, safetensors, GGUF,
    and zip/tar/gzip archives of them.

    Exit codes: 0 clean; 1 findings at or above --fail-on; 2 something could not be fully
    analysed (never reported as clean) or a usage error.
    """
    if explain_rule is not None:
        return _explain(explain_rule, output_format)
    if not paths:
        raise click.UsageError("Missing argument 'PATHS...' (or use --explain RULE).")
    from bastion.policy.load import load_policy  # noqa: PLC0415  # keep --help fast
    from bastion.scan.api import scan_paths  # noqa: PLC0415
    from bastion.scan.report import exit_code  # noqa: PLC0415

    active = load_policy(policy, block_at=fail_on)
    with _Progress() as progress:
        report = scan_paths(list(paths), active.scan, progress=progress, workers=workers)
    if not report.files:
        # An empty folder is usually a wrong path in a pipeline: never a silent pass.
        raise ArtifactError(f"nothing to scan: {', '.join(map(str, paths))} holds no files", hint="Check the path.")
    block_at = active.scan.block_at
    out: TextIO = _open_output(output) if output else sys.stdout
    try:
        if output_format == "json":
            from bastion.render.scan_json import render_json  # noqa: PLC0415

            render_json(report, block_at, out)
        elif output_format == "sarif":
            from bastion.render.scan_sarif import render_sarif  # noqa: PLC0415

            render_sarif(report, block_at, out)
        else:
            from bastion.render.scan_text import render_text  # noqa: PLC0415

            render_text(report, block_at, out, show_clean=show_clean)
    finally:
        if output:
            out.close()
    return exit_code(report.verdict(block_at))


def _explain(rule_id: str, output_format: str) -> int:
    """Print one catalogue entry; an unknown id raises ConfigError (exit 2) naming close ids."""
    from bastion.scan.rules import describe, explain  # noqa: PLC0415

    rule = explain(rule_id)
    if output_format == "text":
        sys.stdout.write(describe(rule))
        return 0
    import json  # noqa: PLC0415

    entry = {
        "rule_id": rule.id,
        "severity": rule.severity.name.lower(),
        "summary": rule.summary,
        "help": rule.help,
        "incomplete": rule.incomplete,
    }
    sys.stdout.write(json.dumps(entry, indent=2) + "\n")
    return 0


def _open_output(path: Path) -> TextIO:
    try:
        return path.open("w", encoding="utf-8")
    except OSError as err:
        raise ConfigError(
            f"cannot write the report to {path}: {err.strerror}", hint="Check the --output path."
        ) from err


class _Progress:
    """A rich progress bar on stderr when it is a terminal; nothing otherwise."""

    def __init__(self) -> None:
        self._bar: _Bar | None = None

    def __enter__(self) -> _Bar | None:
        if sys.stderr.isatty():
            self._bar = _Bar()
        return self._bar

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.close()


class _Bar:
    def __init__(self) -> None:
        from rich.console import Console  # noqa: PLC0415  # only on a terminal
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn  # noqa: PLC0415

        self._progress = Progress(
            TextColumn("scanning"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.description}"),
            console=Console(stderr=True),
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
