"""The promotion gate's checks, run on bytes fetched from the blob store moments before.

Nothing recorded at registration is trusted: digests are recomputed, the files re-scanned,
the signature re-verified. Each check yields a `Check` with a sentence a person can act on.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bastion.errors import BastionError, VerificationError
from bastion.findings import Verdict
from bastion.policy.schema import ScanPolicy, StageRequirements
from bastion.registry.records import Check, ModelVersion
from bastion.scan.api import scan_path
from bastion.sign.keys import load_public_key
from bastion.sign.ossf import verify_model
from bastion.sign.raw import key_id

MAX_LISTED = 5


@dataclass(frozen=True)
class Fetched:
    """A version copied out of the blob store for checking."""

    model_path: Path  # the folder, or the one file
    signature_path: Path | None
    actual_digests: Mapping[str, str | None]  # path -> digest of the bytes fetched; None: blob missing
    assessment: Mapping[str, float] | None
    signature_problem: str = ""  # the stored bundle is gone or changed; empty when it is intact


def _listed(items: Sequence[str]) -> str:
    shown = "; ".join(items[:MAX_LISTED])
    return shown + (f"; and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else "")


def check_stored_bytes(version: ModelVersion, fetched: Fetched) -> Check:
    problems = []
    for stored in version.files:
        actual = fetched.actual_digests.get(stored.path)
        if actual is None:
            problems.append(f"{stored.path}: its blob {stored.digest} is missing from the store")
        elif actual != stored.digest:
            problems.append(f"{stored.path}: the stored bytes changed since registration (now {actual})")
    if problems:
        return Check("stored-bytes", False, _listed(problems))
    return Check("stored-bytes", True, f"all {len(version.files)} files match the digests recorded at registration")


def check_scan(fetched: Fetched, policy: ScanPolicy) -> Check:
    try:
        report = scan_path(fetched.model_path, policy)
    except BastionError as err:
        return Check("scan", False, f"the stored files could not be scanned: {err.message}")
    verdict = report.verdict(policy.block_at)
    blocking = [f for f in report.findings if f.severity >= policy.block_at or f.is_incomplete]
    if verdict is Verdict.PASS:
        return Check("scan", True, f"re-scanned {len(report.files)} files: nothing at or above {policy.block_at.name.lower()}")
    root = fetched.model_path if fetched.model_path.is_dir() else fetched.model_path.parent
    described = [
        f"{Path(f.location.file).relative_to(root) if Path(f.location.file).is_relative_to(root) else f.location.file}"
        f": {f.rule_id} ({f.severity.name.lower()}) {f.message}"
        for f in blocking
    ]
    what = "could not be fully analysed" if verdict is Verdict.INCOMPLETE else "holds code that runs on load"
    return Check("scan", False, f"re-scan: the model {what}: {_listed(described)}")


def check_signature(fetched: Fetched, keys: Sequence[Path]) -> Check:
    if fetched.signature_problem:
        return Check("signature", False, fetched.signature_problem)
    if fetched.signature_path is None:
        return Check("signature", False, "no signature was registered with this version; sign it and register again")
    failures = []
    for path in keys:
        try:
            public_key = load_public_key(path)
        except BastionError as err:
            failures.append(f"{path.name}: {err.message}")
            continue
        try:
            verify_model(fetched.model_path, public_key, fetched.signature_path)
        except VerificationError as err:
            message = err.message.replace(f"{fetched.model_path}: ", "")  # the path is a private copy
            failures.append(f"key {key_id(public_key)} ({path.name}): {message}")
            continue
        return Check("signature", True, f"signature verified with allowed key {key_id(public_key)} ({path.name})")
    return Check("signature", False, "no allowed key verifies the signature: " + _listed(failures))


def check_source(version: ModelVersion, allowed: Sequence[str]) -> Check:
    source = version.lineage.source
    if source and any(fnmatch.fnmatchcase(source, pattern) for pattern in allowed):
        return Check("source", True, f"source {source!r} is allowed")
    shown = repr(source) if source else "no source was recorded"
    return Check("source", False, f"{shown}; allowed sources are {', '.join(allowed)}")


def check_licence(version: ModelVersion, allowed: Sequence[str]) -> Check:
    licence = version.lineage.licence.lower()
    if licence and licence in allowed:
        return Check("licence", True, f"licence {licence} is allowed")
    shown = f"licence {licence!r} is not allowed" if licence else "no licence was recorded"
    return Check("licence", False, f"{shown}; allowed: {', '.join(allowed)}")


def check_approvals(version: ModelVersion, approvers: Sequence[str], needed: int, separate: bool) -> Check:
    counted = sorted({a for a in approvers if not (separate and a == version.registered_by)})
    if len(counted) >= needed:
        return Check("approvals", True, f"approved by {', '.join(counted)}")
    missing = needed - len(counted)
    who = " by someone other than the registrant" if separate else ""
    have = f" (have: {', '.join(counted)})" if counted else ""
    return Check("approvals", False, f"needs {missing} more approval(s){who}{have}")


def check_assessment(fetched: Fetched, requirements: StageRequirements) -> Check:
    if fetched.assessment is None:
        return Check("assessment", False, "no assessment report was attached to this version")
    problems = []
    for metric, floor in requirements.assessment_min.items():
        value = fetched.assessment.get(metric)
        if value is None or value < floor:
            problems.append(f"{metric} is {value} (needs at least {floor})")
    for metric, ceiling in requirements.assessment_max.items():
        value = fetched.assessment.get(metric)
        if value is None or value > ceiling:
            problems.append(f"{metric} is {value} (needs at most {ceiling})")
    if problems:
        return Check("assessment", False, _listed(problems))
    return Check("assessment", True, "every assessment threshold is met")


def parse_assessment(data: bytes) -> dict[str, float]:
    """An assessment report: a JSON object whose numeric members are the metrics."""
    raw = json.loads(data)
    if not isinstance(raw, dict):
        raise ValueError("an assessment report must be a JSON object of metric: number")
    return {str(k): float(v) for k, v in raw.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def run_checks(
    version: ModelVersion,
    fetched: Fetched,
    requirements: StageRequirements,
    scan_policy: ScanPolicy,
    approvers: Sequence[str],
    separate_duties: bool,
) -> tuple[Check, ...]:
    """Every check the stage asks for, plus the ones every promotion runs."""
    if requirements.scan_block_at is not None:
        scan_policy = ScanPolicy(requirements.scan_block_at, scan_policy.allow_globals, scan_policy.limits)
    checks = [check_stored_bytes(version, fetched), check_scan(fetched, scan_policy)]
    if requirements.signature_keys:
        checks.append(check_signature(fetched, requirements.signature_keys))
    if requirements.sources:
        checks.append(check_source(version, requirements.sources))
    if requirements.licences:
        checks.append(check_licence(version, requirements.licences))
    if requirements.approvals:
        checks.append(check_approvals(version, approvers, requirements.approvals, separate_duties))
    if requirements.assessment_min or requirements.assessment_max:
        checks.append(check_assessment(fetched, requirements))
    return tuple(checks)
