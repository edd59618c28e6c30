"""`bastion assess`: the JSON the registry attaches, the summary a person reads, and errors that
say what is wrong with the input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from bastion.assess.assessment import ASSESSMENT_SCHEMA, assess_extraction, read_heldout
from bastion.errors import ArtifactError, ConfigError
from bastion.registry.evidence import parse_assessment
from corpus.serving import write_model

from .targets import heldout


def bastion(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bastion.cli.main", *map(str, args)], capture_output=True, text=True, check=False
    )


def test_cli_writes_assessment_the_registry_reads(logistic_folder: Path, tmp_path: Path) -> None:
    data = tmp_path / "holdout.csv"
    rows = heldout()[:400]
    header = ",".join([f"f{i}" for i in range(rows.shape[1])] + ["is_fraud"])
    np.savetxt(data, np.column_stack([rows, np.zeros(len(rows))]), delimiter=",", header=header, comments="")
    out = tmp_path / "assessment.json"
    done = bastion(
        "assess", logistic_folder, "--only", "extraction", "--data", data, "--label", "is_fraud",
        "--output", "probabilities", "--precision", "2", "--max-queries", "100", "--out", out,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    document = json.loads(out.read_text())
    assert document["schema"] == ASSESSMENT_SCHEMA and document["model_digest"].startswith("sha256:")
    metrics = parse_assessment(out.read_bytes())
    assert set(metrics) == {"extraction_queries_90", "extraction_queries_95", "extraction_queries_99"}
    assert 10 <= metrics["extraction_queries_95"] <= 100
    extraction = document["extraction"]
    assert extraction["evaluated_on"] == "heldout" and extraction["output"] == "probabilities"
    assert {a["attack"] for a in extraction["attacks"]} >= {"scores-boundary", "scores-knockoff"}
    assert f"95% agreement after {int(metrics['extraction_queries_95'])} probability" in done.stderr


def test_cli_writes_json_to_stdout_by_default(logistic_folder: Path) -> None:
    done = bastion("assess", logistic_folder, "--output", "probabilities", "--max-queries", "20", "--quiet")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["extraction"]["evaluated_on"] == "profile-marginals"
    assert "not real traffic" in done.stderr
    assert "queries, " not in done.stderr  # --quiet: no progress lines


def test_cli_missing_serving_yaml_exits_2_with_a_hint(tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"not read")
    done = bastion("assess", tmp_path)
    assert done.returncode == 2
    assert "error: the model has no serving.yaml" in done.stderr and "hint:" in done.stderr


def test_held_out_rows_of_the_wrong_width_are_refused(logistic_folder: Path, tmp_path: Path) -> None:
    data = tmp_path / "holdout.npy"
    np.save(data, np.column_stack([heldout()[:50], np.ones(50)]))
    with pytest.raises(ArtifactError, match="rows of 21 values; the model takes 20 features") as caught:
        assess_extraction(logistic_folder, data=data, max_queries=10)
    assert "--label" in caught.value.hint


def test_label_column_that_does_not_exist_is_named(tmp_path: Path) -> None:
    data = tmp_path / "holdout.csv"
    data.write_text("a,b\n1,2\n3,4\n")
    with pytest.raises(ConfigError, match=r"--label target: .* has no such column \(columns a, b\)"):
        read_heldout(data, label="target")
    assert read_heldout(data, label="b").tolist() == [[1.0], [3.0]]


def test_non_numeric_and_pickled_data_are_refused(tmp_path: Path) -> None:
    text = tmp_path / "holdout.csv"
    text.write_text("1,2\n3,oops\n")
    with pytest.raises(ArtifactError, match="line 2"):
        read_heldout(text)
    pickled = tmp_path / "holdout.npy"
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ArtifactError, match=r"not a numeric \.npy array"):
        read_heldout(pickled)


def test_spec_without_ranges_or_profile_is_refused(logistic_folder: Path, tmp_path: Path) -> None:
    folder = tmp_path / "model"
    shutil.copytree(logistic_folder, folder)
    spec = yaml.safe_load((folder / "serving.yaml").read_text())
    del spec["profile"], spec["inputs"][0]["min"], spec["inputs"][0]["max"]
    (folder / "serving.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(ConfigError, match="neither min/max for every feature nor a training profile"):
        assess_extraction(folder, max_queries=10)


def test_joblib_model_is_not_loaded_without_allow_pickle(tmp_path: Path) -> None:
    write_model(tmp_path, kind="joblib")
    with pytest.raises(ArtifactError, match="joblib pickle: loading it runs whatever code it names"):
        assess_extraction(tmp_path, max_queries=10)


def test_cli_out_in_a_missing_folder_is_refused_before_measuring(logistic_folder: Path, tmp_path: Path) -> None:
    done = bastion("assess", logistic_folder, "--out", tmp_path / "nowhere" / "assessment.json")
    assert done.returncode == 2
    assert "its folder does not exist" in done.stderr and "queries, " not in done.stderr
