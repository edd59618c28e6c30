"""The names `import bastion` promises: exactly the documented list, each one real."""

from __future__ import annotations

import importlib.metadata
import inspect

import pytest

import bastion

DOCUMENTED = [
    "ArtifactError",
    "BastionError",
    "ConfigError",
    "Finding",
    "Location",
    "Policy",
    "ScanPolicy",
    "ScanReport",
    "Severity",
    "Verdict",
    "__version__",
    "load_policy",
    "scan_bytes",
    "scan_path",
    "scan_paths",
]


def test_all_is_exactly_the_documented_list() -> None:
    assert sorted(bastion.__all__) == DOCUMENTED
    assert len(set(bastion.__all__)) == len(bastion.__all__)


@pytest.mark.parametrize("name", DOCUMENTED)
def test_every_public_name_resolves(name: str) -> None:
    value = getattr(bastion, name)
    assert value is not None
    if name != "__version__":
        # A lazily exported name is the object its home module defines, not a copy or stub.
        home = importlib.import_module(value.__module__)
        assert getattr(home, name) is value


def test_star_import_binds_every_public_name() -> None:
    namespace: dict[str, object] = {}
    exec("from bastion import *", namespace)  # the star import itself is what is tested
    assert set(DOCUMENTED) <= namespace.keys()


def test_unknown_attribute_raises_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'scan_everything'"):
        bastion.scan_everything  # noqa: B018  # the lookup itself is the test


def test_version_matches_the_installed_distribution() -> None:
    assert bastion.__version__ == importlib.metadata.version("bastion")


def test_public_names_have_the_documented_kinds() -> None:
    assert issubclass(bastion.ArtifactError, bastion.BastionError)
    assert issubclass(bastion.ConfigError, bastion.BastionError)
    assert bastion.Severity.CRITICAL > bastion.Severity.HIGH > bastion.Severity.MEDIUM
    assert {v.value for v in bastion.Verdict} == {"pass", "fail", "incomplete"}
    for func in (bastion.scan_bytes, bastion.scan_path, bastion.scan_paths, bastion.load_policy):
        assert inspect.isfunction(func)
    assert "data" in inspect.signature(bastion.scan_bytes).parameters
    for cls in (bastion.Finding, bastion.Location, bastion.Policy, bastion.ScanPolicy, bastion.ScanReport):
        assert inspect.isclass(cls)


def test_scan_bytes_from_the_top_level_works_end_to_end() -> None:
    report = bastion.scan_bytes(b"just some text\n", "notes.txt")
    assert report.verdict(bastion.Severity.HIGH) is bastion.Verdict.PASS
