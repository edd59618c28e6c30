"""`bastion assess`: measure what copying a model costs; thin wiring over bastion.assess."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

ASSESSMENTS = ("extraction",)
OUTPUTS = ("label", "score", "probabilities")


@click.command("assess")
@click.argument("folder", metavar="MODEL_FOLDER", type=click.Path(path_type=Path))
@click.option(
    "--only", "only", type=click.Choice(ASSESSMENTS), default="extraction", show_default=True,
    help="Which assessment to run (extraction is the only one so far).",
)
@click.option(
    "--data", type=click.Path(dir_okay=False, path_type=Path),
    help="Held-out real rows (.csv, header optional, or .npy): half feed the Knockoff attack, half measure "
    "agreement. Without it agreement is measured on rows drawn from the profile's marginals, not real traffic, "
    "which can misstate the cost either way: pass it for a figure to budget on.",
)
@click.option("--label", metavar="COL", help="The --data column holding the true class (name or 0-based index): dropped.")
@click.option(
    "--output", type=click.Choice(OUTPUTS), default="label", show_default=True,
    help="What the attacker's key returns, as `bastion keys create --output`.",
)
@click.option("--precision", type=click.IntRange(0, 12), help="Decimals the key's scores or probabilities are rounded to.")
@click.option(
    "--max-queries", type=click.IntRange(10, 1_000_000), default=5000, show_default=True,
    help="The most queries an attack may spend; a level not reached is reported as twice this (\"more than\").",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of every random choice: same seed, same result.")
@click.option(
    "--out", type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Write the assessment JSON here [default: stdout].",
)
@click.option(
    "--trust-type", "trusted_types", multiple=True, metavar="TYPE",
    help="A type skops may load beyond its defaults (e.g. sklearn.tree._tree.Tree); repeatable.",
)
@click.option(
    "--allow-pickle", is_flag=True,
    help="UNSAFE unless you made the file: load a joblib model, which runs the code it names. Scan it first.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress lines; the summary is still printed.")
def assess_command(
    folder: Path, only: str, data: Path | None, label: str | None, output: str, precision: int | None,
    max_queries: int, seed: int, out: Path | None, trusted_types: tuple[str, ...], allow_pickle: bool, quiet: bool,
) -> None:
    """Measure how many queries a thief needs to copy the model in MODEL_FOLDER.

    MODEL_FOLDER is what `bastion serve` serves: the model file and its serving.yaml, loaded
    with the gateway's safe loaders. Starting from what serving.yaml publishes (input ranges,
    the training profile's per-feature quantiles), the strongest attacks run offline against the
    model: rows uniform over the ranges, rows from the marginals, boundary (active) sampling, and
    Knockoff on --data; with --output score|probabilities, the same attacks fitted to the
    rounded scores. Each fits a logistic regression, gradient boosting and an MLP at every
    query count and keeps the best.

    The result is the assessment JSON (schema bastion.assessment/1) on stdout or --out, whose
    extraction_queries_90/95/99 are the fewest queries any attack needed for that agreement;
    attach it with `bastion registry register --assessment FILE`, and gate on it with the
    policy's assessment_min. Progress and a summary go to stderr.

    \b
    Example:
      bastion assess models/fraud --data holdout.csv --label is_fraud --out assessment.json
    """
    from bastion.assess.assessment import assess_extraction, summary_lines  # noqa: PLC0415  # keep --help fast
    from bastion.errors import ConfigError  # noqa: PLC0415

    del only  # the one assessment so far
    if out is not None and not out.resolve().parent.is_dir():
        # Checked before the minutes of measuring, not after.
        raise ConfigError(f"--out {out}: its folder does not exist", hint="Create the folder or name another file.")
    progress = None if quiet else (lambda line: click.echo(f"  {line}", err=True))
    document, cost = assess_extraction(
        folder, data=data, label=label, output=output, precision=precision, max_queries=max_queries, seed=seed,
        allow_pickle=allow_pickle, trusted_types=trusted_types, progress=progress,
    )
    text = json.dumps(document, indent=2) + "\n"
    if out is None:
        sys.stdout.write(text)
    else:
        try:
            out.write_text(text, encoding="utf-8")
        except OSError as err:
            raise ConfigError(f"--out {out}: cannot write: {err.strerror}", hint="Name a file in a folder that exists.") from err
    for line in summary_lines(cost):
        click.echo(line, err=True)
    if out is not None:
        click.echo(f"assessment written to {out}", err=True)
