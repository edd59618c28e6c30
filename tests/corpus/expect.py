"""Assertions shared by the scan tests, with messages that show what the scanner found."""

from __future__ import annotations

from bastion.findings import Finding, Severity, Verdict
from bastion.scan.report import FileReport, ScanReport

Report = ScanReport | FileReport


def rules(report: Report) -> set[str]:
    return {f.rule_id for f in report.findings}


def describe(findings: tuple[Finding, ...]) -> str:
    return "; ".join(f"{f.rule_id} {f.severity.name} at {f.location}: {f.message}" for f in findings) or "no findings"


def assert_passes(report: Report, block_at: Severity = Severity.HIGH) -> None:
    """The verdict is PASS: nothing reaches `block_at` and everything was analysed."""
    verdict = report.verdict(block_at)
    assert verdict is Verdict.PASS, f"expected PASS, got {verdict.value}: {describe(report.findings)}"
    assert not [f for f in report.findings if f.severity >= block_at], describe(report.findings)


def assert_fails_with(report: Report, *expected: str) -> None:
    """The verdict is FAIL and at least one of the `expected` rules was reported."""
    verdict = report.verdict(Severity.HIGH)
    assert verdict is Verdict.FAIL, f"expected FAIL, got {verdict.value}: {describe(report.findings)}"
    assert rules(report) & set(expected), f"expected one of {sorted(expected)}: {describe(report.findings)}"


def assert_incomplete_with(report: Report, rule_id: str) -> None:
    """The verdict is INCOMPLETE (not analysed, never clean) and `rule_id` says why."""
    verdict = report.verdict(Severity.HIGH)
    assert verdict is Verdict.INCOMPLETE, f"expected INCOMPLETE, got {verdict.value}: {describe(report.findings)}"
    assert rule_id in rules(report), f"expected {rule_id}: {describe(report.findings)}"
    assert all(f.is_incomplete for f in report.findings if f.rule_id == rule_id)


# -- the shared corpora (`../shared/corpus`, `../shared/external-corpus`) ----------------------
# Each malicious file must be stopped for its own reason: the rule that names its technique, by
# the manifest's `format`, unless the file is listed below with the rules its technique needs.
SHARED_RULE_BY_FORMAT: dict[str, frozenset[str]] = {
    **dict.fromkeys(
        ("pickle", "torch-zip", "torch-legacy", "zip", "tar", "npy", "joblib", "dill"),
        frozenset({"pickle.dangerous-global"}),
    ),
    "keras-h5": frozenset({"keras.lambda-layer"}),
    "gguf": frozenset({"gguf.template-injection"}),
    "tf-savedmodel": frozenset({"tf.python-op"}),
    "safetensors": frozenset({"safetensors.bad-header"}),
}

SHARED_RULES: dict[str, frozenset[str]] = {
    # Globals computed at load time and written onto trusted modules: no dangerous name is ever
    # spelt out, so what stops them is the mutation of a global.
    "corpus/pickle/m_build_attr_smuggle_numpy_prod.pkl": frozenset({"pickle.mutated-global", "pickle.computed-global"}),
    "external-corpus/picklescan/sys_module_override_sploit.pkl": frozenset(
        {"pickle.mutated-global", "pickle.computed-global"}
    ),
    # Frames that lie about their length: a loader and a scanner would read different opcodes.
    **dict.fromkeys(
        (f"external-corpus/fickling/frame_boundary_straddle_variants_{i}.pkl" for i in (0, 1, 2, 4, 5, 6)),
        frozenset({"pickle.frame-violation"}),
    ),
    "corpus/onnx/m_extdata_traversal.onnx": frozenset({"onnx.external-data-traversal"}),
    "corpus/onnx/m_custom_domain_op.onnx": frozenset({"onnx.custom-operator"}),
    "external-corpus/modelaudit/path_traversal.zip": frozenset({"archive.path-traversal", "pickle.dangerous-global"}),
    "external-corpus/modelaudit/malicious.dill": frozenset({"pickle.dangerous-global", "pickle.build-dunder"}),
}

# Files Bastion truly cannot analyse: each must be reported INCOMPLETE with the named rule, and
# the reason says why no analysis is possible (never "clean").
SHARED_NOT_ANALYSABLE: dict[str, tuple[str, str]] = {
    "external-corpus/picklescan/malicious1.7z": (
        "scan.unsupported-format",
        "7z needs a decompressor outside the standard library, which Bastion does not depend on",
    ),
}


def shared_expectation(rel: str, fmt: str) -> frozenset[str]:
    """The rules a malicious shared-corpus file must be reported with (all of them)."""
    if rel in SHARED_RULES:
        return SHARED_RULES[rel]
    return SHARED_RULE_BY_FORMAT.get(fmt, frozenset())
