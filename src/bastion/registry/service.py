"""The registry's façade: every CLI command and HTTP route is one call here.

It composes the roles of the registry, each in a module of its own: `access` (principals,
grants, tokens), `versions` (registering from one read, reading), `evidence` (checking a
version out of the blob store, with what its bytes show), `gate` (the pure decision) and
`promotion` (approvals, promotions, attestations, the proof of a stage). Each method takes
the authenticated `Principal` first and its module checks the role before doing anything;
each change and each decision is written to the audit log in the same database transaction
as the change itself, so there is never a change without its record.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import IO

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import OperationalError

from bastion.audit import AuditEvent, AuditLog, AuditReport
from bastion.audit.model import KeySource, WitnessSource
from bastion.audit.witness import Witness
from bastion.db import connect, writer
from bastion.errors import BackendUnavailable, ConfigError, IntegrityFailure, NotFound
from bastion.policy.load import load_policy
from bastion.policy.schema import Policy
from bastion.registry import access, promotion, versions
from bastion.registry.blobs import BlobStore
from bastion.registry.config import RegistryConfig, load_config
from bastion.registry.evidence import CheckedOutVersion, Evidence, PromotionEvidence, check_out
from bastion.registry.records import ModelVersion
from bastion.registry.roles import Action, Principal
from bastion.registry.workspace import STALE_AFTER, WorkFolder
from bastion.sign.keys import PrivateKey, PublicKey, load_private_key, load_public_key

NO_LINEAGE = versions.NO_LINEAGE
AUDIT_CHAINS = ("registry", "gateway")  # the registry's decisions; the serving gateways' calls
_HEAD_KEY = "bastion.audit.head"  # connection.info slot: the last entry this transaction wrote
EVIDENCE_TTL = 300.0  # seconds a dry gate check may reuse the evidence of the same bytes and policy
EVIDENCE_CACHE_SIZE = 256

_EvidenceKey = tuple[str, tuple[str, ...], str | None, str | None, str, tuple[str, ...]]


class Registry:
    """One registry: its database, blob store, policy, signing key and audit log."""

    def __init__(
        self, config: RegistryConfig, *, policy: Policy | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self.config = config
        self.engine: Engine = connect(config.database)
        self._writes = writer(self.engine)
        self.blobs = BlobStore(config.blobs, config.blob_options)
        self.policy = policy or load_policy(config.policy if config.policy.exists() else None)
        self.policy_digest = (
            "sha256:" + hashlib.sha256(config.policy.read_bytes()).hexdigest() if config.policy.exists() else ""
        )
        self.signing_key: PrivateKey = load_private_key(config.signing_key)
        self.audit = AuditLog(
            self.engine, "registry", signing_key=self.signing_key, checkpoint_every=1, witness=config.open_witness()
        )
        self._clock = clock
        self.work = WorkFolder(config.home / "work", clock=clock)
        self.checkouts = 0  # versions copied out of the store and checked, by this object
        self.evidence_ttl = EVIDENCE_TTL
        self._evidence: dict[_EvidenceKey, tuple[float, Evidence]] = {}
        self._evidence_lock = threading.Lock()
        self.remove_leftovers()

    @classmethod
    def open(cls, home: Path) -> Registry:
        return cls(load_config(home))

    def close(self) -> None:
        self.engine.dispose()

    def remove_leftovers(self) -> None:
        """Remove what killed processes left: private copies in `work/`, partial uploads in `blobs/incoming/`."""
        self.work.remove_stale()
        self.blobs.remove_stale_incoming(STALE_AFTER, self._clock())

    @property
    def stages(self) -> tuple[str, ...]:
        return self.policy.gate.stages

    @property
    def witness(self) -> Witness | None:
        """Where this registry appends its signed audit heads (registry.yaml `audit_witness`)."""
        return self.audit.witness

    @contextmanager
    def _change(self) -> Iterator[Connection]:
        """A transaction for a change and its audit entries; the witness follows once it commits."""
        try:
            with self._writes.begin() as connection:
                connection.info.pop(_HEAD_KEY, None)
                yield connection
                head = connection.info.pop(_HEAD_KEY, None)
        except OperationalError as err:
            raise BackendUnavailable(f"the registry database failed: {err.orig}") from err
        if head is not None:
            self.audit.advance_witness(*head)

    def _record(self, connection: Connection, actor: str, action: str, subject: str, **details: object) -> None:
        entry = self.audit.append(AuditEvent(actor, action, subject, details), connection=connection)
        connection.info[_HEAD_KEY] = (entry.seq, bytes.fromhex(entry.entry_hash))

    # --- identities, roles and tokens (bastion.registry.access) --------------------------

    # Each role's functions take the registry first, so they are its methods as they stand.
    bootstrap = access.bootstrap
    authenticate = access.authenticate
    add_principal = access.add_principal
    grant = access.grant
    remove_grant = access.remove_grant
    issue_token = access.issue_token
    revoke_token = access.revoke_token
    tokens_of = access.list_tokens

    def disable_principal(self, actor: Principal, name: str) -> None:
        access.set_disabled(self, actor, name, True)

    def enable_principal(self, actor: Principal, name: str) -> None:
        access.set_disabled(self, actor, name, False)

    # --- registering and reading (bastion.registry.versions) -------------------------------

    register = versions.register
    register_uploaded = versions.register_uploaded
    version = versions.version
    models = versions.list_models

    def _version_in(self, connection: Connection, model: str, number: int | None) -> ModelVersion:
        return versions.version_in(connection, model, number)

    versions = versions.list_versions  # last: inside this class body the name is no longer the module

    def newest_in(self, actor: Principal, model: str, stage: str) -> ModelVersion:
        promotion.check_stage(self, stage)
        return versions.newest_in(self, actor, model, stage)

    def scan_report(self, actor: Principal, model: str, number: int) -> bytes:
        version = self.version(actor, model, number)
        if version.scan_blob is None:
            raise NotFound(f"{version.ref} has no scan report")
        return self.read_recorded_blob(actor, version.scan_blob, f"the scan report of {version.ref}")

    def read_recorded_blob(self, actor: Principal, digest: str, what: str) -> bytes:
        """A blob the registry's records name; a missing or altered one is an audited integrity failure."""
        try:
            return self.blobs.read_bytes(digest)
        except (IntegrityFailure, NotFound) as err:
            problem = "altered" if isinstance(err, IntegrityFailure) else "missing"
            with self._change() as connection:
                self._record(connection, actor.name, "integrity.failure", digest, what=what, problem=problem)
            raise IntegrityFailure(
                f"{what} ({digest}) is {problem} in the blob store: it no longer holds what was recorded"
            ) from err

    # --- checking out, approving, promoting (evidence, gate, promotion) ---------------------

    def gate_inputs(
        self, actor: Principal, version: ModelVersion, stage: str, *, fresh: bool
    ) -> tuple[Evidence, PromotionEvidence | None, tuple[str, ...]]:
        """The evidence of `version`'s bytes for `stage`, the proof of its present stage and its approvals.

        `fresh=False` may reuse the evidence of the same bytes under the same policy gathered
        less than `evidence_ttl` seconds ago; a promotion always passes `fresh=True`.
        """
        keys = self.policy.gate.requirements_for(stage).signature_keys
        with self.engine.connect() as connection:
            proof = promotion.present_stage_evidence(self, connection, version, self.signing_key.public_key())
            approvers = promotion.approvers_of(connection, version, stage)
        cache_key: _EvidenceKey = (
            version.root_digest, tuple(f"{f.path}={f.digest}" for f in version.files), version.signature_blob,
            version.assessment_blob, self.policy_digest, tuple(str(k) for k in keys),
        )
        now = self._clock()
        if not fresh:
            with self._evidence_lock:
                cached = self._evidence.get(cache_key)
            if cached is not None and now - cached[0] < self.evidence_ttl:
                return cached[1], proof, approvers
        with check_out(self.blobs, self.work, version, self.policy.scan, keys) as (_folder, evidence):
            self.checkouts += 1
        self._record_integrity(actor, version, evidence)
        with self._evidence_lock:
            if len(self._evidence) >= EVIDENCE_CACHE_SIZE:
                self._evidence.clear()
            self._evidence[cache_key] = (now, evidence)
        return evidence, proof, approvers

    @contextmanager
    def check_out_promoted(
        self, actor: Principal, model: str, stage: str, *, trusted_keys: Sequence[Path], registry_key: PublicKey
    ) -> Iterator[CheckedOutVersion]:
        """The newest version of `model` recorded in `stage`, copied out once, with its evidence.

        The stage is proven, not read: the evidence holds the promotion attestation for this
        version and stage, verified with `registry_key` (the key the caller trusts), and its
        audit entry. What to make of the evidence is `gate.serving_refusals`'s to say.
        """
        version = self.newest_in(actor, model, stage)
        with self.engine.connect() as connection:
            if stage == self.stages[0]:
                proof = PromotionEvidence(stage)  # registration puts every version there
            else:
                proof = promotion.prove_stage(self, connection, version, stage, registry_key)
        with check_out(self.blobs, self.work, version, self.policy.scan, trusted_keys) as (folder, evidence):
            self.checkouts += 1
            self._record_integrity(actor, version, evidence)
            yield CheckedOutVersion(version, folder, evidence, (), proof)

    def _record_integrity(self, actor: Principal, version: ModelVersion, evidence: Evidence) -> None:
        """A checkout that found stored bytes other than those recorded gets an audit entry of its own."""
        altered = {
            f.path: evidence.digests.get(f.path) or "missing" for f in version.files if evidence.digests.get(f.path) != f.digest
        }
        if altered:
            with self._change() as connection:
                self._record(
                    connection, actor.name, "integrity.failure", version.ref, root_digest=version.root_digest,
                    files=altered,
                )

    approve = promotion.approve
    check_gate = promotion.check_gate
    promote = promotion.promote
    attestation = promotion.attestation

    # --- the audit log -------------------------------------------------------------------

    def _chain(self, chain: str) -> AuditLog:
        if chain == self.audit.chain:
            return self.audit
        if chain not in AUDIT_CHAINS:
            raise ConfigError(f"unknown audit chain {chain!r}", hint=f"Chains: {', '.join(AUDIT_CHAINS)}.")
        return AuditLog(self.engine, chain)

    def verify_audit(
        self,
        actor: Principal,
        chain: str = "registry",
        *,
        trusted_keys: Sequence[PublicKey] = (),
        witness: Witness | None = None,
    ) -> AuditReport:
        """Check one audit chain: the registry's, or the serving gateway's.

        `trusted_keys` and `witness` are the verifier's own anchors. Without them the check
        trusts `registry.pub` and the witness that `registry.yaml` names, both of which anyone
        who can write the registry folder can replace; the report says so (`anchored`).
        """
        actor.require(Action.READ_AUDIT)
        keys = list(trusted_keys) or [load_public_key(self.config.public_key)]
        checked = witness or self.audit.witness
        report = self._chain(chain).verify(keys, checked, witness_required=witness is not None)
        if checked is None:
            source = None
        elif checked.contains(self.config.home):
            source = WitnessSource.REGISTRY_FOLDER
        else:
            source = WitnessSource.VERIFIER if witness is not None else WitnessSource.REGISTRY_CONFIG
        return replace(
            report,
            key_source=KeySource.PINNED if trusted_keys else KeySource.REGISTRY_FOLDER,
            witness_source=source,
        )

    def export_audit(self, actor: Principal, stream: IO[str], chain: str = "registry") -> int:
        actor.require(Action.READ_AUDIT)
        return self._chain(chain).export_jsonl(stream)
