"""An assessment report that names the model it measured is read only for that model.

`bastion assess` writes `model_digest` (the model file's SHA-256) into its report. The gate reads
the report's metrics and the gateway sets account budgets from its `extraction_queries_95`: a
report of one model attached to another would pass that model's gate, or price its budgets, with
figures measured on something else.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import yaml

from bastion.errors import ArtifactError
from bastion.registry import Registry
from bastion.registry.blobs import digest_of_bytes
from bastion.registry.evidence import parse_assessment
from registry.artifacts import file_digests, numpy_folder
from registry.backends import MakeRegistry
from registry.people import make_team

# Staging needs a price of at least 100 label-only queries: a number the report must carry.
POLICY = yaml.safe_dump(
    {"version": 1, "gate": {"require": {"staging": {"assessment_min": {"extraction_queries_95": 100}}}}}
)

def _report(path: Path, model_digest: str | None, queries: int = 500) -> Path:
    document: dict[str, object] = {"schema": "bastion.assessment/1", "extraction_queries_95": queries}
    if model_digest is not None:
        document["model_digest"] = model_digest
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def _weights_digest(folder: Path) -> str:
    return digest_of_bytes((folder / "weights.npy").read_bytes())


def _registry(make_registry: MakeRegistry) -> Registry:
    return make_registry(POLICY)


def test_a_report_of_this_model_is_read_by_the_gate(make_registry: MakeRegistry, tmp_path: Path) -> None:
    registry = _registry(make_registry)
    team = make_team(registry)
    folder = numpy_folder(tmp_path / "src")
    report = _report(tmp_path / "assessment.json", _weights_digest(folder))

    registry.register(team.contributor, "m", folder, assessment=report)

    assert registry.promote(team.contributor, "m", 1, "staging").allowed


def test_a_report_of_another_model_is_refused_at_registration(make_registry: MakeRegistry, tmp_path: Path) -> None:
    registry = _registry(make_registry)
    team = make_team(registry)
    folder = numpy_folder(tmp_path / "src", seed=1)
    other = numpy_folder(tmp_path / "other", seed=2)
    report = _report(tmp_path / "assessment.json", _weights_digest(other), queries=10**9)

    with pytest.raises(ArtifactError, match="measured another model"):
        registry.register(team.contributor, "m", folder, assessment=report)


def test_an_uploaded_report_of_another_model_is_refused(make_registry: MakeRegistry, tmp_path: Path) -> None:
    registry = _registry(make_registry)
    team = make_team(registry)
    folder = numpy_folder(tmp_path / "src", seed=1)
    files = file_digests(folder)
    for name, (digest, _size) in files.items():
        registry.blobs.put_stream(io.BytesIO((folder / name).read_bytes()), digest)
    other = numpy_folder(tmp_path / "other", seed=2)
    report = _report(tmp_path / "assessment.json", _weights_digest(other)).read_bytes()
    blob = digest_of_bytes(report)
    registry.blobs.put_stream(io.BytesIO(report), blob)

    with pytest.raises(ArtifactError, match="measured another model"):
        registry.register_uploaded(team.contributor, "m", files, assessment_blob=blob)


def test_a_report_that_names_no_model_is_read_as_before(make_registry: MakeRegistry, tmp_path: Path) -> None:
    # Reports from other tools carry metrics only; the gate reads them as it always did.
    registry = _registry(make_registry)
    team = make_team(registry)
    report = _report(tmp_path / "assessment.json", None)

    registry.register(team.contributor, "m", numpy_folder(tmp_path / "src"), assessment=report)

    assert registry.promote(team.contributor, "m", 1, "staging").allowed


def test_a_bound_report_is_not_read_for_other_bytes() -> None:
    data = json.dumps({"model_digest": "sha256:" + "a" * 64, "extraction_queries_95": 70}).encode()

    assert parse_assessment(data, {"sha256:" + "a" * 64}) == {"extraction_queries_95": 70.0}
    assert parse_assessment(data) == {"extraction_queries_95": 70.0}  # no version to bind to: read as is
    with pytest.raises(ValueError, match="measured another model"):
        parse_assessment(data, {"sha256:" + "b" * 64})


def test_not_json_is_refused_at_registration(make_registry: MakeRegistry, tmp_path: Path) -> None:
    registry = _registry(make_registry)
    team = make_team(registry)
    report = tmp_path / "assessment.json"
    report.write_text("accuracy: 0.9\n", encoding="utf-8")

    with pytest.raises(ArtifactError, match=r"assessment\.json"):
        registry.register(team.contributor, "m", numpy_folder(tmp_path / "src"), assessment=report)
