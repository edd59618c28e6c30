"""The assessment of a model folder: what `bastion assess` reads, runs and writes.

A model folder is what `bastion serve` serves: the model file and its `serving.yaml`. The
model is read once, hashed, and deserialised from those same bytes by the gateway's own safe
loaders (`bastion.serve.loaders`): ONNX Runtime, skops with an allow-list of types, a
safetensors network; a joblib pickle only when the caller says `allow_pickle`, because loading
it runs whatever it names.

The assessment JSON is what `bastion registry register --assessment FILE` attaches to a
version. The gate reads its numeric top-level members as metrics, so only the metrics are
numbers at the top level; everything else sits under `extraction`:

```json
{"schema": "bastion.assessment/1", "model_digest": "sha256:…",
 "extraction_queries_90": 30, "extraction_queries_95": 70, "extraction_queries_99": 200,
 "extraction": {"output": "label", "evaluated_on": "heldout", "attacks": [...], ...}}
```
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from bastion.assess.extraction import LEVELS, ExtractionCost, measure_extraction_cost, metric_name
from bastion.errors import ArtifactError, ConfigError

if TYPE_CHECKING:
    from bastion.serve.loaders import Predictor
    from bastion.serve.spec import ServingSpec

ASSESSMENT_SCHEMA = "bastion.assessment/1"
# Held-out files are read whole; past this they are not a held-out sample but a data lake.
MAX_DATA_BYTES = 512 << 20


@dataclass(frozen=True)
class LoadedModel:
    """A model folder, loaded for assessment.

    Attributes:
        spec: its serving.yaml.
        predict: the model, as the gateway would serve it (rows -> class probabilities).
        model_digest: "sha256:…" of the model file's bytes, the ones loaded.
        spec_digest: "sha256:…" of serving.yaml (its ranges and profile are the attacker's start).
    """

    spec: ServingSpec
    predict: Predictor
    model_digest: str
    spec_digest: str


def load_model_folder(folder: Path, *, allow_pickle: bool = False, trusted_types: Sequence[str] = ()) -> LoadedModel:
    """Load the model `folder` holds with the gateway's loaders, reading each file once.

    Args:
        folder: a servable model folder (model file + serving.yaml).
        allow_pickle: UNSAFE for files you did not make: allow a joblib model, whose loading
            runs the code it names. Scan it first (`bastion scan`).
        trusted_types: types skops may load beyond its defaults (as the gateway's allow-list).

    Raises:
        ConfigError: no folder, no or bad serving.yaml.
        ArtifactError: the model file is missing, or its loader refuses it.
    """
    from bastion.serve.loaders import FormatLoader  # noqa: PLC0415
    from bastion.serve.spec import SPEC_NAME, load_spec  # noqa: PLC0415

    if not folder.is_dir():
        raise ConfigError(f"{folder}: not a model folder", hint="Pass the folder that holds the model file and serving.yaml.")
    spec = load_spec(folder)
    try:
        data = (folder / spec.file).read_bytes()
        spec_bytes = (folder / SPEC_NAME).read_bytes()
    except OSError as err:
        raise ArtifactError(f"{folder / spec.file}: cannot be read: {err.strerror}", hint="Check the file serving.yaml names.") from err
    loader = FormatLoader(spec, tuple(trusted_types), allow_pickle, "assessment")
    if spec.format == "joblib" and not allow_pickle:
        raise ArtifactError(
            f"{spec.file} is a joblib pickle: loading it runs whatever code it names",
            hint="Export the model with skops or to ONNX; or, for a file you made yourself, scan it and pass --allow-pickle.",
        )
    return LoadedModel(spec, loader.deserialise(data), _digest(data), _digest(spec_bytes))


def read_heldout(path: Path, *, label: str | None = None) -> NDArray[np.float64]:
    """Held-out rows from a .csv (a header row is optional) or a .npy file (no pickled objects).

    Args:
        path: the file.
        label: the column to drop (the records' true class): a header name, or a 0-based index.

    Raises:
        ArtifactError: unreadable file, non-numeric values, ragged rows, or no such label column.
    """
    try:
        size = path.stat().st_size
        if size > MAX_DATA_BYTES:
            raise ArtifactError(f"{path}: {size} bytes; held-out data is read whole, up to {MAX_DATA_BYTES}", hint="Pass a sample.")
        raw = path.read_bytes()
    except OSError as err:
        raise ArtifactError(f"{path}: cannot be read: {err.strerror}", hint="Check the path.") from err
    if path.suffix.lower() == ".npy":
        rows, header = _npy_rows(raw, path), None
    else:
        rows, header = _csv_rows(raw, path)
    if label is not None:
        column = _label_column(label, header, rows.shape[1], path)
        rows = np.delete(rows, column, axis=1)
    return rows


def assess_extraction(
    folder: Path,
    *,
    data: Path | None = None,
    label: str | None = None,
    output: str = "label",
    precision: int | None = None,
    max_queries: int = 5000,
    seed: int = 0,
    allow_pickle: bool = False,
    trusted_types: Sequence[str] = (),
    progress: Callable[[str], None] | None = None,
) -> tuple[dict[str, Any], ExtractionCost]:
    """Load `folder`, measure its extraction cost, and build the assessment document.

    Args:
        folder: a servable model folder.
        data: held-out rows (.csv or .npy) for Knockoff and for measuring agreement.
        label: the label column of `data`, dropped before use.
        output, precision, max_queries, seed, progress: as `measure_extraction_cost`.
        allow_pickle, trusted_types: as `load_model_folder`.

    Returns:
        The assessment JSON document (a dict) and the measurement it reports.
    """
    model = load_model_folder(folder, allow_pickle=allow_pickle, trusted_types=trusted_types)
    heldout = read_heldout(data, label=label) if data is not None else None
    if heldout is not None and heldout.shape[1] != model.spec.input.features:
        hint = "Name the label column with --label." if heldout.shape[1] == model.spec.input.features + 1 else None
        raise ArtifactError(
            f"{data}: rows of {heldout.shape[1]} values; the model takes {model.spec.input.features} features",
            hint=hint or "Pass one column per feature, in the model's order.",
        )
    cost = measure_extraction_cost(
        model.predict, model.spec, heldout=heldout, output=output, precision=precision,
        max_queries=max_queries, seed=seed, progress=progress,
    )
    return assessment_document(model, cost), cost


def assessment_document(model: LoadedModel, cost: ExtractionCost) -> dict[str, Any]:
    """The assessment JSON for `cost` measured on `model` (schema `bastion.assessment/1`)."""
    metrics = cost.metrics()
    reached = cost.metric_reached()
    return {
        "schema": ASSESSMENT_SCHEMA,
        "model_digest": model.model_digest,
        **{name: int(value) for name, value in metrics.items()},
        "extraction": {
            "model_file": model.spec.file,
            "serving_yaml_digest": model.spec_digest,
            "output": cost.output,
            "precision": cost.precision,
            "max_queries": cost.max_queries,
            "seed": cost.seed,
            "evaluated_on": cost.evaluated_on,
            "evaluation_rows": cost.evaluation_rows,
            "reached": reached,
            "not_reached_means": f"more than {cost.max_queries} queries; written as {2 * cost.max_queries}",
            "best_attack": {metric_name(level): cost.best_attack(level) for level in LEVELS},
            "attacks": [
                {
                    "attack": curve.attack,
                    "queries": list(curve.queries),
                    "agreement": [round(value, 4) for value in curve.agreement],
                    "copies": list(curve.copies),
                }
                for curve in cost.curves
            ],
        },
    }


def summary_lines(cost: ExtractionCost) -> list[str]:
    """A few lines for a person: each level's cost and the attack that got there, then each attack."""
    kind = {"label": "label-only", "score": "score", "probabilities": "probability"}.get(cost.output, cost.output)
    if cost.precision is not None and cost.output != "label":
        kind += f" (rounded to {cost.precision} decimals)"
    lines = []
    for level in LEVELS:
        count = cost.queries_for(level)
        if count is None:
            lines.append(f"{level:.0%} agreement: not reached within {cost.max_queries} {kind} queries")
        else:
            lines.append(f"{level:.0%} agreement after {count} {kind} queries (best attack: {cost.best_attack(level)})")
    lines.append(f"agreement measured on {cost.evaluation_rows} {cost.evaluated_on} rows")
    if cost.evaluated_on != "heldout":
        lines.append(
            "  (no held-out data: agreement on synthetic rows, not real traffic, can misstate the cost either way; "
            "pass --data for the figure to budget on)"
        )
    lines.append(f"{'attack':<24}{'90%':>8}{'95%':>8}{'99%':>8}  final agreement")
    for curve in cost.curves:
        cells = [curve.queries_for(level) for level in LEVELS]
        shown = [str(c) if c is not None else f">{curve.queries[-1]}" for c in cells]
        final = f"{curve.agreement[-1]:.1%} at {curve.queries[-1]}" if curve.queries else "-"
        lines.append(f"{curve.attack:<24}{shown[0]:>8}{shown[1]:>8}{shown[2]:>8}  {final}")
    return lines


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _npy_rows(raw: bytes, path: Path) -> NDArray[np.float64]:
    try:
        # allow_pickle=False: an object array's pickle is refused, never run.
        array = np.load(io.BytesIO(raw), allow_pickle=False)
        rows = np.asarray(array, dtype=np.float64)
    except (ValueError, TypeError, OSError, EOFError) as err:
        raise ArtifactError(f"{path}: not a numeric .npy array: {err}", hint="Save a 2-D float array with numpy.save.") from err
    if rows.ndim != 2:
        raise ArtifactError(f"{path}: a {rows.ndim}-D array; held-out data is 2-D (rows, features)")
    return rows


def _csv_rows(raw: bytes, path: Path) -> tuple[NDArray[np.float64], list[str] | None]:
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ArtifactError(f"{path}: not UTF-8 text", hint="Pass a CSV file or a .npy array.") from err
    records = [record for record in csv.reader(io.StringIO(text)) if record]
    if not records:
        raise ArtifactError(f"{path}: holds no rows")
    header = None
    if not all(_is_number(cell) for cell in records[0]):
        header, records = [cell.strip() for cell in records[0]], records[1:]
    width = len(header) if header is not None else len(records[0]) if records else 0
    values = []
    for line, record in enumerate(records, start=2 if header is not None else 1):
        if len(record) != width:
            raise ArtifactError(f"{path}: line {line} has {len(record)} values, not {width}")
        try:
            values.append([float(cell) for cell in record])
        except ValueError as err:
            raise ArtifactError(f"{path}: line {line}: {err}", hint="Every cell must be a number (encode categories first).") from err
    if not values:
        raise ArtifactError(f"{path}: holds a header and no rows")
    return np.asarray(values, dtype=np.float64), header


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _label_column(label: str, header: list[str] | None, width: int, path: Path) -> int:
    if header is not None and label in header:
        return header.index(label)
    if label.lstrip("-").isdigit():
        index = int(label)
        if -width <= index < width:
            return index % width
    named = f"columns {', '.join(header)}" if header is not None else f"{width} unnamed columns (0..{width - 1})"
    raise ConfigError(f"--label {label}: {path} has no such column ({named})", hint="Name the label column or give its index.")
