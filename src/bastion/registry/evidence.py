"""Checkout: a version's stored bytes, copied once into a private folder, and what they show.

Nothing recorded at registration is trusted. A checkout reads each blob once, hashing it while
it writes the private copy; the scan, the signature verification and every later read (the
gateway's loader) work on that copy, whose digests were recomputed from the very read that
made it. `CheckedOutVersion` carries the evidence; the gate (`bastion.registry.gate`) is a
pure function of it, and the gateway consumes it without re-running any check.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from bastion.errors import BastionError, IntegrityFailure, VerificationError
from bastion.policy.schema import ScanPolicy
from bastion.registry.blobs import CHUNK, BlobStore
from bastion.registry.records import ModelVersion, StoredFile
from bastion.registry.workspace import WorkFolder
from bastion.scan.api import scan_path
from bastion.scan.report import ScanReport
from bastion.sign.keys import load_public_key
from bastion.sign.manifest import FileDigest, Manifest, Sha256
from bastion.sign.ossf import verify_model
from bastion.sign.raw import key_id

SIGNATURE_NAME = "model.sig"
MODEL_FOLDER = "model"


@dataclass(frozen=True)
class SignatureEvidence:
    """What verifying the stored signature with the candidate keys established."""

    registered: bool  # a signature bundle was registered with the version
    verified_by: str = ""  # "key <id> (<file>)" of the key that verified it; empty: none did
    problem: str = ""  # why no key verified it; empty when one did
    signed_files: tuple[str, ...] = ()  # the paths the signed manifest lists

    def uncovered(self, stored: Sequence[str]) -> tuple[str, ...]:
        """Stored paths the signed manifest does not list."""
        signed = set(self.signed_files)
        return tuple(path for path in stored if path not in signed)


@dataclass(frozen=True)
class PromotionEvidence:
    """The signed attestation and the audit entry behind a version's present stage."""

    stage: str
    attestation: str | None = None  # its digest, when one verified
    problem: str = ""  # empty when the attestation verified and the audit log records it
    root_digest: str = ""  # what the attestation names: the promoted bytes' manifest root

    def attests(self, evidence: Evidence) -> bool:
        """The attestation names the bytes read now (not merely the digests the database records)."""
        return not self.attestation or self.root_digest == evidence.root_digest()

    @property
    def proven(self) -> bool:
        return not self.problem


@dataclass(frozen=True)
class Evidence:
    """What a version's stored bytes showed when checked out: the part worth caching by digest."""

    digests: Mapping[str, str | None]  # path -> digest of the bytes read; None: the blob is missing
    scan: ScanReport | None
    scan_problem: str  # why there is no scan report; empty when there is one
    scan_root: str  # the private folder the report's paths start with
    signature: SignatureEvidence
    assessment: Mapping[str, float] | None
    assessment_problem: str = ""  # why an attached report is not read; empty when it is or none is attached

    def root_digest(self) -> str | None:
        """The manifest root digest of the bytes read, None if any blob was missing."""
        if any(d is None for d in self.digests.values()):
            return None
        files = sorted(self.digests.items(), key=lambda item: PurePosixPath(item[0]))
        manifest = Manifest(tuple(FileDigest(p, Sha256(str(d).removeprefix("sha256:"))) for p, d in files))
        return "sha256:" + manifest.root_digest()


@dataclass(frozen=True)
class CheckedOutVersion:
    """A version as stored, copied privately, with the evidence the gate and the gateway consume."""

    version: ModelVersion
    folder: Path  # the private copy of the model's files
    evidence: Evidence
    approvals: tuple[str, ...] = ()
    promotion: PromotionEvidence | None = None  # for the version's present stage; None: first stage

    @property
    def model_path(self) -> Path:
        return self.folder / self.version.files[0].path if self.version.layout == "file" else self.folder

    def read_checked(self, path: str) -> bytes:
        """The bytes of one file of the private copy, once more checked against the recorded digest.

        Raises:
            IntegrityFailure: the file is not the version's, or its bytes are not those recorded.
        """
        stored = next((f for f in self.version.files if f.path == path), None)
        if stored is None:
            raise IntegrityFailure(f"{self.version.ref} has no file {path!r}")
        data = (self.folder / path).read_bytes()
        if "sha256:" + hashlib.sha256(data).hexdigest() != stored.digest:
            raise IntegrityFailure(f"{self.version.ref}: {path} is not the bytes recorded at registration")
        return data


def parse_assessment(data: bytes, model_digests: Collection[str] | None = None) -> dict[str, float]:
    """An assessment report: a JSON object whose numeric members are the metrics.

    A report that names the model it measured (`model_digest`, as `bastion assess` writes) is
    read only for a version holding a file of that digest, when `model_digests` (the version's
    file digests) are given: the measured price of one model must not set the budgets of, or
    pass the gate for, another.

    Raises:
        ValueError: not a JSON object, or a report of another model.
    """
    raw = json.loads(data)
    if not isinstance(raw, dict):
        raise ValueError("an assessment report must be a JSON object of metric: number")
    measured = raw.get("model_digest")
    if model_digests is not None and measured is not None and measured not in model_digests:
        raise ValueError(
            f"the assessment report measured another model (model_digest {str(measured)[:80]}), "
            "not a file of this version"
        )
    return {str(k): float(v) for k, v in raw.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def copy_hashing(source: Path, target: Path) -> tuple[str, int]:
    """Copy `source` to `target` in one read; the digest and size of exactly what was written."""
    target.parent.mkdir(parents=True, exist_ok=True)
    hasher = hashlib.sha256()
    size = 0
    with source.open("rb") as stream, target.open("xb") as out:
        while chunk := stream.read(CHUNK):
            hasher.update(chunk)
            out.write(chunk)
            size += len(chunk)
    return "sha256:" + hasher.hexdigest(), size


def place(root: Path, path: str) -> Path:
    """Where a stored path goes under `root`; a path leaving it is an integrity failure."""
    target = root / path
    if not target.resolve().is_relative_to(root.resolve()) or target.resolve() == root.resolve():
        raise IntegrityFailure(f"stored path {path!r} leaves the model folder")
    return target


def _fetch_all(blobs: BlobStore, files: Sequence[StoredFile], root: Path) -> dict[str, str | None]:
    digests: dict[str, str | None] = {}
    for stored in files:
        try:
            digests[stored.path] = blobs.fetch(stored.digest, place(root, stored.path))
        except IntegrityFailure:
            raise
        except BastionError:  # missing from the store: a finding the gate names
            digests[stored.path] = None
    return digests


def _signed_paths(bundle: bytes) -> tuple[str, ...]:
    """The paths a verified bundle's manifest lists (read only after the signature verified)."""
    try:
        envelope = json.loads(bundle)["dsseEnvelope"]
        statement = json.loads(base64.b64decode(envelope["payload"], validate=True))
        return tuple(str(resource["name"]) for resource in statement["predicate"]["resources"])
    except (ValueError, KeyError, TypeError) as err:
        raise VerificationError(f"the verified bundle lists no files: {err}") from err


def verify_signature(model_path: Path, bundle_path: Path | None, keys: Sequence[Path]) -> SignatureEvidence:
    """Verify the bundle with each key in turn; the first that verifies is named."""
    if bundle_path is None:
        return SignatureEvidence(registered=False, problem="no signature was registered with this version; sign it and register again")
    failures = []
    for path in keys:
        try:
            public_key = load_public_key(path)
        except BastionError as err:
            failures.append(f"{path.name}: {err.message}")
            continue
        try:
            verify_model(model_path, public_key, bundle_path)
            signed = _signed_paths(bundle_path.read_bytes())
        except VerificationError as err:
            message = err.message.replace(f"{model_path}: ", "").replace(f"{bundle_path}: ", "")
            failures.append(f"key {key_id(public_key)} ({path.name}): {message}")
            continue
        return SignatureEvidence(True, f"key {key_id(public_key)} ({path.name})", "", signed)
    if not keys:
        return SignatureEvidence(True, problem="no key to verify the signature with")
    return SignatureEvidence(True, problem="no allowed key verifies the signature: " + "; ".join(failures))


def gather(
    blobs: BlobStore, version: ModelVersion, folder: Path, scan_policy: ScanPolicy, keys: Sequence[Path]
) -> Evidence:
    """Copy the version's blobs under `folder` once, then scan and verify that copy."""
    root = folder / MODEL_FOLDER
    root.mkdir()
    digests = _fetch_all(blobs, version.files, root)
    model_path = root / version.files[0].path if version.layout == "file" else root
    bundle: Path | None = None
    signature_problem = ""
    if version.signature_blob is not None:
        bundle = folder / SIGNATURE_NAME
        try:
            fetched = blobs.fetch(version.signature_blob, bundle)
        except BastionError:
            bundle, signature_problem = None, f"the signature blob {version.signature_blob} is missing from the store"
        else:
            if fetched != version.signature_blob:
                bundle, signature_problem = None, f"the stored signature changed since registration (now {fetched})"
    if signature_problem:
        signature = SignatureEvidence(True, problem=signature_problem)
    else:
        signature = verify_signature(model_path, bundle, keys)
    assessment, assessment_problem = None, ""
    if version.assessment_blob is not None:
        try:
            assessment = parse_assessment(
                blobs.read_bytes(version.assessment_blob), {d for d in digests.values() if d is not None}
            )
        except ValueError as err:
            assessment_problem = f"the attached assessment report is not read: {err}"
        except BastionError as err:
            assessment_problem = f"the attached assessment report cannot be read: {err.message}"
    scan, scan_problem = None, ""
    try:
        scan = scan_path(model_path, scan_policy)
    except BastionError as err:
        scan_problem = err.message
    return Evidence(digests, scan, scan_problem, str(root), signature, assessment, assessment_problem)


@contextmanager
def check_out(
    blobs: BlobStore, work: WorkFolder, version: ModelVersion, scan_policy: ScanPolicy, keys: Sequence[Path]
) -> Iterator[tuple[Path, Evidence]]:
    """The private folder holding the version's copy, and the evidence gathered from it."""
    with work.folder("checkout") as folder:
        yield folder / MODEL_FOLDER, gather(blobs, version, folder, scan_policy, keys)


def matches_any(path: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(path, pattern) for pattern in patterns)
