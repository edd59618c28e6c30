"""The registry's library API: every CLI command and HTTP route is one call here.

Each method takes the authenticated `Principal` first and checks its role before doing
anything; each change and each decision is written to the audit log in the same database
transaction as the change itself, so there is never a change without its record.
"""

from __future__ import annotations

import hashlib
import io
import json
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO

from sqlalchemy import Connection, Engine, func, insert, select, update
from sqlalchemy.exc import IntegrityError, OperationalError

from bastion.audit import AuditEvent, AuditLog, AuditReport
from bastion.audit.witness import advance_witness, read_witness
from bastion.db import connect, writer
from bastion.db.tables import approvals, grants, models, principals, promotions, tokens, version_files, versions
from bastion.errors import AccessDenied, ArtifactError, BackendUnavailable, ConfigError, NotFound, RegistryError
from bastion.policy.load import load_policy
from bastion.policy.schema import Policy
from bastion.registry import tokens as token_text
from bastion.registry.attest import attestation_statement, sign_statement
from bastion.registry.blobs import BlobStore
from bastion.registry.config import RegistryConfig, load_config
from bastion.registry.gate import Fetched, parse_assessment, run_checks
from bastion.registry.records import (
    Approval,
    Check,
    GateDecision,
    Lineage,
    ModelSummary,
    ModelVersion,
    StoredFile,
)
from bastion.registry.roles import ANY_MODEL, Action, Principal, Role
from bastion.render.scan_json import render_json
from bastion.scan.api import scan_path
from bastion.sign.keys import PrivateKey, load_private_key, load_public_key
from bastion.sign.manifest import hash_model

SIGNATURE_NAME = "model.sig"
NO_LINEAGE = Lineage()
AUDIT_CHAINS = ("registry", "gateway")  # the registry's decisions; the serving gateways' calls
_HEAD_KEY = "bastion.audit.head"  # connection.info slot: the last entry this transaction wrote
MODEL_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


def _check_name(kind: str, name: str) -> str:
    if not name or len(name) > 200 or not set(name) <= MODEL_NAME_CHARS or name.startswith("."):
        raise ConfigError(
            f"bad {kind} name {name!r}", hint="Use letters, digits, '-', '_' and '.', at most 200 characters."
        )
    return name


def _now() -> datetime:
    return datetime.now(UTC)


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


class Registry:
    """One registry: its database, blob store, policy, signing key and audit log."""

    def __init__(self, config: RegistryConfig, *, policy: Policy | None = None) -> None:
        self.config = config
        self.engine: Engine = connect(config.database)
        self._writes = writer(self.engine)
        self.blobs = BlobStore(config.blobs, config.blob_options)
        self.policy = policy or load_policy(config.policy if config.policy.exists() else None)
        self.policy_digest = (
            "sha256:" + hashlib.sha256(config.policy.read_bytes()).hexdigest() if config.policy.exists() else ""
        )
        self.signing_key: PrivateKey = load_private_key(config.signing_key)
        self.audit = AuditLog(self.engine, "registry", signing_key=self.signing_key, checkpoint_every=1)

    @classmethod
    def open(cls, home: Path) -> Registry:
        return cls(load_config(home))

    def close(self) -> None:
        self.engine.dispose()

    @property
    def stages(self) -> tuple[str, ...]:
        return self.policy.gate.stages

    @property
    def witness_path(self) -> Path:
        return self.config.home / "audit-witness.json"

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
            advance_witness(self.witness_path, self.signing_key, self.audit.chain, *head)

    def _record(self, connection: Connection, actor: str, action: str, subject: str, **details: object) -> None:
        entry = self.audit.append(AuditEvent(actor, action, subject, details), connection=connection)
        connection.info[_HEAD_KEY] = (entry.seq, bytes.fromhex(entry.entry_hash))

    # --- identities, roles and tokens ----------------------------------------------------

    def bootstrap(self, admin: str) -> str:
        """Create the first administrator and return its token; refused once anyone exists."""
        _check_name("principal", admin)
        new = token_text.issue()
        with self._change() as connection:
            if connection.execute(select(func.count()).select_from(principals)).scalar_one():
                raise RegistryError(
                    "the registry already has principals", hint="Ask an administrator for a token instead."
                )
            now = _now()
            connection.execute(insert(principals).values(name=admin, kind="user", created_at=now, created_by=admin))
            connection.execute(insert(grants).values(principal=admin, model=ANY_MODEL, role=Role.ADMIN.label))
            connection.execute(
                insert(tokens).values(
                    token_id=new.token_id, principal=admin, secret_hash=new.secret_hash, created_at=now, revoked=False
                )
            )
            self._record(connection, admin, "registry.bootstrap", admin, role="admin", token_id=new.token_id)
        return new.text

    def authenticate(self, text: str | None) -> Principal:
        """The principal a token stands for; AccessDenied if missing, unknown, revoked or expired."""
        if not text:
            raise AccessDenied("no API token given: nothing here is anonymous", hint="Pass --token or set BASTION_TOKEN.")
        token_id, secret = token_text.split(text)
        with self.engine.connect() as connection:
            row = connection.execute(select(tokens).where(tokens.c.token_id == token_id)).first()
            if row is None or not token_text.secret_matches(secret, bytes(row.secret_hash)):
                raise AccessDenied("the API token is not valid")
            if row.revoked:
                raise AccessDenied(f"token {token_id} was revoked", hint="Ask an administrator for a new token.")
            if row.expires_at is not None and _utc(row.expires_at) <= _now():
                raise AccessDenied(f"token {token_id} expired", hint="Ask an administrator for a new token.")
            held = connection.execute(
                select(grants.c.model, grants.c.role).where(grants.c.principal == row.principal)
            ).all()
        return Principal(row.principal, tuple((model, Role.parse(role)) for model, role in held), token_id)

    def add_principal(self, actor: Principal, name: str, kind: str = "user") -> None:
        actor.require(Action.GRANT)
        _check_name("principal", name)
        if kind not in {"user", "service"}:
            raise ConfigError(f"unknown principal kind {kind!r}", hint="Use user or service.")
        with self._change() as connection:
            try:
                connection.execute(
                    insert(principals).values(name=name, kind=kind, created_at=_now(), created_by=actor.name)
                )
            except IntegrityError as err:
                raise RegistryError(f"principal {name!r} already exists") from err
            self._record(connection, actor.name, "principal.add", name, kind=kind)

    def grant(self, actor: Principal, name: str, role: Role, model: str = ANY_MODEL) -> None:
        """Give `name` `role` on `model` (or every model), replacing any role it held there."""
        actor.require(Action.GRANT, model)
        with self._change() as connection:
            if connection.execute(select(principals.c.name).where(principals.c.name == name)).first() is None:
                raise NotFound(f"no principal named {name!r}", hint="Add it with `bastion registry user add`.")
            where = (grants.c.principal == name) & (grants.c.model == model)
            if connection.execute(select(grants.c.role).where(where)).first() is None:
                connection.execute(insert(grants).values(principal=name, model=model, role=role.label))
            else:
                connection.execute(update(grants).where(where).values(role=role.label))
            self._record(connection, actor.name, "access.grant", name, model=model, role=role.label)

    def issue_token(self, actor: Principal, name: str, expires_in: timedelta | None = None) -> str:
        """A new token for `name`; its text is returned once and only its hash is kept."""
        actor.require(Action.ISSUE_TOKEN)
        new = token_text.issue()
        expires = _now() + expires_in if expires_in is not None else None
        with self._change() as connection:
            if connection.execute(select(principals.c.name).where(principals.c.name == name)).first() is None:
                raise NotFound(f"no principal named {name!r}", hint="Add it with `bastion registry user add`.")
            connection.execute(
                insert(tokens).values(
                    token_id=new.token_id,
                    principal=name,
                    secret_hash=new.secret_hash,
                    created_at=_now(),
                    expires_at=expires,
                    revoked=False,
                )
            )
            self._record(
                connection, actor.name, "token.issue", name, token_id=new.token_id,
                expires_at=expires.isoformat() if expires else None,
            )
        return new.text

    def revoke_token(self, actor: Principal, token_id: str) -> None:
        actor.require(Action.REVOKE_TOKEN)
        with self._change() as connection:
            done = connection.execute(update(tokens).where(tokens.c.token_id == token_id).values(revoked=True))
            if not done.rowcount:
                raise NotFound(f"no token {token_id!r}")
            self._record(connection, actor.name, "token.revoke", token_id)

    # --- registering ---------------------------------------------------------------------

    def register(
        self,
        actor: Principal,
        model: str,
        path: Path,
        *,
        lineage: Lineage = NO_LINEAGE,
        signature: Path | None = None,
        assessment: Path | None = None,
        description: str = "",
    ) -> ModelVersion:
        """Store a model file or folder as the next version of `model`.

        The files go to the blob store by digest (bytes already there are not stored again),
        the scan report and the signature bundle (default: `model.sig` in the folder, or
        `FILE.sig` beside a file) are kept beside them, and the version starts in the first stage.
        """
        _check_name("model", model)
        actor.require(Action.REGISTER, model)
        path = path.resolve()
        if not path.exists():
            raise ArtifactError(f"{path}: no such model file or folder", hint="Check the path.")
        layout = "folder" if path.is_dir() else "file"
        default_signature = path / SIGNATURE_NAME if layout == "folder" else path.with_name(path.name + ".sig")
        signature = signature or (default_signature if default_signature.exists() else None)
        ignore = [SIGNATURE_NAME] if layout == "folder" and signature == default_signature else []
        manifest = hash_model(path, ignore)
        if not manifest.files:
            raise ArtifactError(f"{path}: holds no files to register")
        stored = []
        for item in manifest.files:
            source = path if layout == "file" else path / item.name
            self.blobs.put_file(source, f"sha256:{item.digest}")
            stored.append(StoredFile(item.name, f"sha256:{item.digest}", source.stat().st_size))
        signature_blob = self._store_file(signature) if signature else None
        assessment_blob = self._store_file(assessment) if assessment else None
        report = scan_path(path, self.policy.scan)
        text = io.StringIO()
        render_json(report, self.policy.scan.block_at, text)
        scan_blob = self.blobs.put_bytes(text.getvalue().encode())
        verdict = report.verdict(self.policy.scan.block_at)
        return self._insert_version(
            actor, model, f"sha256:{manifest.root_digest()}", layout, tuple(stored), lineage,
            signature_blob, scan_blob, assessment_blob, description, scan_verdict=verdict.value,
        )

    def _store_file(self, path: Path) -> str:
        data = path.read_bytes()
        return self.blobs.put_bytes(data)

    def register_uploaded(
        self,
        actor: Principal,
        model: str,
        files: Mapping[str, tuple[str, int]],
        *,
        layout: str = "folder",
        lineage: Lineage = NO_LINEAGE,
        signature_blob: str | None = None,
        assessment_blob: str | None = None,
        description: str = "",
    ) -> ModelVersion:
        """Register a version whose blobs were uploaded already (the HTTP API's two-step upload)."""
        _check_name("model", model)
        actor.require(Action.REGISTER, model)
        if not files:
            raise RegistryError("a version needs at least one file")
        if layout not in {"file", "folder"} or (layout == "file" and len(files) != 1):
            raise RegistryError("layout is 'folder', or 'file' with exactly one file")
        from bastion.sign.manifest import FileDigest, Manifest  # noqa: PLC0415

        for name, (digest, _size) in files.items():
            if not self.blobs.exists(digest):
                raise RegistryError(f"{name}: blob {digest} has not been uploaded", hint="PUT it to /v1/blobs first.")
        for extra in (signature_blob, assessment_blob):
            if extra is not None and not self.blobs.exists(extra):
                raise RegistryError(f"blob {extra} has not been uploaded", hint="PUT it to /v1/blobs first.")
        manifest = Manifest(
            tuple(sorted((FileDigest(n, d.removeprefix("sha256:")) for n, (d, _) in files.items()), key=lambda f: f.name))  # type: ignore[arg-type]
        )
        claimed = tuple(StoredFile(n, d, s) for n, (d, s) in sorted(files.items()))
        with self._checked_out(claimed, layout, signature_blob, assessment_blob) as fetched:
            root = fetched.model_path if layout == "folder" else fetched.model_path.parent
            stored = tuple(StoredFile(f.path, f.digest, (root / f.path).stat().st_size) for f in claimed)
            report = scan_path(fetched.model_path, self.policy.scan)
            text = io.StringIO()
            render_json(report, self.policy.scan.block_at, text)
            # The report names the private copy; readers want paths inside the model.
            scan_json = text.getvalue().replace(json.dumps(str(root) + "/")[1:-1], "")
        scan_blob = self.blobs.put_bytes(scan_json.encode())
        return self._insert_version(
            actor, model, f"sha256:{manifest.root_digest()}", layout, stored, lineage, signature_blob, scan_blob,
            assessment_blob, description, scan_verdict=report.verdict(self.policy.scan.block_at).value,
        )

    def _insert_version(
        self,
        actor: Principal,
        model: str,
        root_digest: str,
        layout: str,
        stored: tuple[StoredFile, ...],
        lineage: Lineage,
        signature_blob: str | None,
        scan_blob: str,
        assessment_blob: str | None,
        description: str,
        *,
        scan_verdict: str,
    ) -> ModelVersion:
        if lineage.parent:
            self._parse_parent(lineage.parent)
        now = _now()
        for _attempt in range(5):  # two registrations racing for the same number: retry
            try:
                with self._change() as connection:
                    if connection.execute(select(models.c.name).where(models.c.name == model)).first() is None:
                        connection.execute(
                            insert(models).values(name=model, created_at=now, created_by=actor.name, description=description)
                        )
                        self._record(connection, actor.name, "model.create", model)
                    number = 1 + (
                        connection.execute(
                            select(func.max(versions.c.number)).where(versions.c.model == model)
                        ).scalar_one() or 0
                    )
                    connection.execute(
                        insert(versions).values(
                            model=model, number=number, root_digest=root_digest, layout=layout, stage=self.stages[0],
                            registered_at=now, registered_by=actor.name, source=lineage.source,
                            licence=lineage.licence, training_data_digest=lineage.training_data_digest,
                            parent=lineage.parent, signature_blob=signature_blob, scan_blob=scan_blob,
                            assessment_blob=assessment_blob,
                        )
                    )
                    connection.execute(
                        insert(version_files),
                        [{"model": model, "number": number, "path": f.path, "digest": f.digest, "size": f.size} for f in stored],
                    )
                    self._record(
                        connection, actor.name, "version.register", f"{model}@{number}",
                        root_digest=root_digest, files=len(stored), stage=self.stages[0], scan=scan_verdict,
                        signed=signature_blob is not None, source=lineage.source, licence=lineage.licence,
                        training_data_digest=lineage.training_data_digest, parent=lineage.parent,
                    )
                break
            except IntegrityError:
                continue
        else:
            raise RegistryError(f"could not allocate a version number for {model!r}; try again")
        return self.version(actor, model, number)

    def _parse_parent(self, parent: str) -> tuple[str, int]:
        name, _, number = parent.rpartition("@")
        if not name or not number.isdigit():
            raise ConfigError(f"parent {parent!r} is not MODEL@NUMBER")
        with self.engine.connect() as connection:
            found = connection.execute(
                select(versions.c.number).where(versions.c.model == name, versions.c.number == int(number))
            ).first()
        if found is None:
            raise NotFound(f"parent {parent} is not in this registry")
        return name, int(number)

    # --- reading -------------------------------------------------------------------------

    def _version_in(self, connection: Connection, model: str, number: int | None) -> ModelVersion:
        query = select(versions).where(versions.c.model == model)
        query = query.order_by(versions.c.number.desc()) if number is None else query.where(versions.c.number == number)
        row = connection.execute(query.limit(1)).first()
        if row is None:
            what = f"{model}@{number}" if number is not None else f"model {model!r}"
            raise NotFound(f"{what} is not in this registry", hint="`bastion registry list` shows what is.")
        files = connection.execute(
            select(version_files.c.path, version_files.c.digest, version_files.c.size)
            .where(version_files.c.model == model, version_files.c.number == row.number)
            .order_by(version_files.c.path)
        ).all()
        return ModelVersion(
            model=row.model, number=row.number, root_digest=row.root_digest, layout=row.layout, stage=row.stage,
            registered_at=_utc(row.registered_at), registered_by=row.registered_by,
            lineage=Lineage(row.source, row.licence, row.training_data_digest, row.parent),
            files=tuple(StoredFile(p, d, int(s)) for p, d, s in files),
            signature_blob=row.signature_blob, scan_blob=row.scan_blob, assessment_blob=row.assessment_blob,
        )

    def version(self, actor: Principal, model: str, number: int | None = None) -> ModelVersion:
        """A version of `model` (the newest when `number` is None)."""
        actor.require(Action.READ, model)
        with self.engine.connect() as connection:
            return self._version_in(connection, model, number)

    def versions(self, actor: Principal, model: str) -> list[ModelVersion]:
        actor.require(Action.READ, model)
        with self.engine.connect() as connection:
            numbers = connection.execute(
                select(versions.c.number).where(versions.c.model == model).order_by(versions.c.number)
            ).scalars().all()
            if not numbers:
                raise NotFound(f"model {model!r} is not in this registry")
            return [self._version_in(connection, model, n) for n in numbers]

    def models(self, actor: Principal) -> list[ModelSummary]:
        """Every model the caller may read."""
        with self.engine.connect() as connection:
            rows = connection.execute(select(models).order_by(models.c.name)).all()
            found = []
            for row in rows:
                if actor.role_on(row.name) is None:
                    continue
                staged = connection.execute(
                    select(versions.c.stage, func.max(versions.c.number))
                    .where(versions.c.model == row.name)
                    .group_by(versions.c.stage)
                ).all()
                latest = max((int(n) for _, n in staged), default=0)
                order = {stage: i for i, stage in enumerate(self.stages)}
                stages = tuple(sorted(((s, int(n)) for s, n in staged), key=lambda item: order.get(item[0], 99)))
                found.append(
                    ModelSummary(row.name, _utc(row.created_at), row.created_by, row.description, latest, stages)
                )
        return found

    def scan_report(self, actor: Principal, model: str, number: int) -> bytes:
        version = self.version(actor, model, number)
        if version.scan_blob is None:
            raise NotFound(f"{version.ref} has no scan report")
        return self.blobs.read_bytes(version.scan_blob)

    # --- approving, checking, promoting --------------------------------------------------

    def approve(self, actor: Principal, model: str, number: int, stage: str) -> Approval:
        """Record `actor`'s approval of a version for `stage`."""
        actor.require(Action.APPROVE, model)
        self._check_stage(stage)
        with self._change() as connection:
            version = self._version_in(connection, model, number)
            if self.policy.gate.separation_of_duties and version.registered_by == actor.name:
                self._record(connection, actor.name, "version.approve.refused", version.ref, stage=stage,
                             reason="separation of duties: the registrant may not approve")
                refusal = AccessDenied(
                    f"{actor.name} registered {version.ref} and so may not approve it (separation of duties)",
                    hint="Another approver must approve it.",
                )
            else:
                refusal = None
                now = _now()
                try:
                    with connection.begin_nested():
                        connection.execute(
                            insert(approvals).values(model=model, number=number, stage=stage, approver=actor.name, approved_at=now)
                        )
                except IntegrityError:
                    raise RegistryError(f"{actor.name} already approved {version.ref} for {stage}") from None
                self._record(connection, actor.name, "version.approve", version.ref, stage=stage)
        if refusal is not None:
            raise refusal
        return Approval(model, number, stage, actor.name, now)

    def _check_stage(self, stage: str) -> None:
        if stage not in self.stages:
            raise ConfigError(f"unknown stage {stage!r}", hint=f"Stages are: {', '.join(self.stages)}.")

    @contextmanager
    def _checked_out(
        self, files: tuple[StoredFile, ...], layout: str, signature_blob: str | None, assessment_blob: str | None
    ) -> Iterator[Fetched]:
        """Copy a version's blobs into a private temporary folder, as stored, for checking."""
        with tempfile.TemporaryDirectory(prefix="bastion-gate-") as work:
            root = Path(work) / "model"
            actual: dict[str, str | None] = {}
            for stored in files:
                target = root / stored.path
                if not target.resolve().is_relative_to(root.resolve()):
                    raise RegistryError(f"stored path {stored.path!r} leaves the model folder")
                try:
                    actual[stored.path] = self.blobs.fetch(stored.digest, target)
                except RegistryError:
                    actual[stored.path] = None
            signature_path, signature_problem = None, ""
            if signature_blob is not None:
                signature_path = Path(work) / SIGNATURE_NAME
                try:
                    fetched_digest = self.blobs.fetch(signature_blob, signature_path)
                except RegistryError:
                    signature_path, signature_problem = None, f"the signature blob {signature_blob} is missing from the store"
                else:
                    if fetched_digest != signature_blob:
                        signature_problem = f"the stored signature changed since registration (now {fetched_digest})"
            assessment = None
            if assessment_blob is not None:
                try:
                    assessment = parse_assessment(self.blobs.read_bytes(assessment_blob))
                except (ValueError, RegistryError):
                    assessment = None
            model_path = root / files[0].path if layout == "file" else root
            yield Fetched(model_path, signature_path, actual, assessment, signature_problem)

    @contextmanager
    def checked_out(self, actor: Principal, version: ModelVersion) -> Iterator[Fetched]:
        """A version's stored bytes in a private temporary folder, as stored (check before use)."""
        actor.require(Action.READ, version.model)
        with self._checked_out(version.files, version.layout, version.signature_blob, version.assessment_blob) as fetched:
            yield fetched

    def newest_in(self, actor: Principal, model: str, stage: str) -> ModelVersion:
        """The newest version of `model` now in `stage`; NotFound if none is."""
        actor.require(Action.READ, model)
        self._check_stage(stage)
        with self.engine.connect() as connection:
            number = connection.execute(
                select(func.max(versions.c.number)).where(versions.c.model == model, versions.c.stage == stage)
            ).scalar_one()
            if number is None:
                raise NotFound(f"no version of {model!r} is in stage {stage}", hint="Promote one through the gate first.")
            return self._version_in(connection, model, int(number))

    def _decide(self, actor: Principal, version: ModelVersion, stage: str) -> GateDecision:
        self._check_stage(stage)
        with self.engine.connect() as connection:
            approvers = connection.execute(
                select(approvals.c.approver).where(
                    approvals.c.model == version.model, approvals.c.number == version.number, approvals.c.stage == stage
                )
            ).scalars().all()
        order = self.stages.index
        checks: list[Check] = []
        if version.stage not in self.stages:
            checks.append(
                Check(
                    "stage",
                    False,
                    f"{version.ref} is in stage {version.stage!r}, which the policy no longer lists "
                    f"({', '.join(self.stages)}); restore the stage in the policy or register the model again",
                )
            )
        elif order(stage) <= order(version.stage):
            checks.append(Check("stage", False, f"{version.ref} is already in {version.stage}"))
        elif order(stage) != order(version.stage) + 1:
            skipped = self.stages[order(version.stage) + 1]
            checks.append(Check("stage", False, f"{version.ref} is in {version.stage}: promote it to {skipped} first"))
        with self._checked_out(version.files, version.layout, version.signature_blob, version.assessment_blob) as fetched:
            checks.extend(
                run_checks(
                    version, fetched, self.policy.gate.requirements_for(stage), self.policy.scan, approvers,
                    self.policy.gate.separation_of_duties,
                )
            )
        return GateDecision(
            version.model, version.number, version.stage, stage, all(c.passed for c in checks), tuple(checks),
            actor.name, _now(),
        )

    def check_gate(self, actor: Principal, model: str, number: int | None, stage: str) -> GateDecision:
        """What the gate would decide now, without promoting; the check itself is audited."""
        actor.require(Action.GATE_CHECK, model)
        version = self.version(actor, model, number)
        decision = self._decide(actor, version, stage)
        with self._change() as connection:
            self._record(connection, actor.name, "gate.check", version.ref, **_decision_details(decision))
        return decision

    def promote(self, actor: Principal, model: str, number: int, stage: str) -> GateDecision:
        """Re-check a version against `stage`'s requirements and move it there if every check passes.

        The decision, allowed or not, goes to the audit log with its reasons; an allowed one
        also gets a signed attestation, stored as a blob and named in the decision.
        """
        actor.require(Action.PROMOTE, model)
        version = self.version(actor, model, number)
        decision = self._decide(actor, version, stage)
        attestation = None
        if decision.allowed:
            envelope = sign_statement(attestation_statement(version, decision, self.policy_digest), self.signing_key)
            attestation = self.blobs.put_bytes(envelope)
        with self._change() as connection:
            if decision.allowed:
                moved = connection.execute(
                    update(versions)
                    .where(versions.c.model == model, versions.c.number == number, versions.c.stage == version.stage)
                    .values(stage=stage)
                )
                if not moved.rowcount:
                    raise RegistryError(f"{version.ref} changed stage while it was being checked; try again")
            connection.execute(
                insert(promotions).values(
                    model=model, number=number, from_stage=version.stage, to_stage=stage,
                    decided_at=decision.decided_at, decided_by=actor.name, allowed=decision.allowed,
                    reasons=json.dumps([c.__dict__ for c in decision.checks]), attestation_blob=attestation,
                )
            )
            action = "version.promote" if decision.allowed else "version.promote.refused"
            self._record(connection, actor.name, action, version.ref, attestation=attestation,
                         **_decision_details(decision))
        return GateDecision(
            decision.model, decision.number, decision.from_stage, decision.to_stage, decision.allowed,
            decision.checks, decision.decided_by, decision.decided_at, attestation, decision.allowed,
        )

    def attestation(self, actor: Principal, digest: str) -> bytes:
        """The signed attestation of a promotion, by digest; only promotions' attestations are served."""
        with self.engine.connect() as connection:
            model = connection.execute(
                select(promotions.c.model).where(promotions.c.attestation_blob == digest).limit(1)
            ).scalar_one_or_none()
        if model is None:
            raise NotFound(f"{digest} is not the attestation of any promotion")
        actor.require(Action.READ, model)
        return self.blobs.read_bytes(digest)

    # --- the audit log -------------------------------------------------------------------

    def _chain(self, chain: str) -> AuditLog:
        if chain == self.audit.chain:
            return self.audit
        if chain not in AUDIT_CHAINS:
            raise ConfigError(f"unknown audit chain {chain!r}", hint=f"Chains: {', '.join(AUDIT_CHAINS)}.")
        return AuditLog(self.engine, chain)

    def verify_audit(self, actor: Principal, chain: str = "registry") -> AuditReport:
        """Check one audit chain: the registry's, or the serving gateway's."""
        actor.require(Action.READ_AUDIT)
        log = self._chain(chain)
        witness = read_witness(self.witness_path, chain)
        return log.verify([load_public_key(self.config.public_key)], witness)

    def export_audit(self, actor: Principal, stream: IO[str], chain: str = "registry") -> int:
        actor.require(Action.READ_AUDIT)
        return self._chain(chain).export_jsonl(stream)


def _decision_details(decision: GateDecision) -> dict[str, object]:
    return {
        "from_stage": decision.from_stage,
        "to_stage": decision.to_stage,
        "allowed": decision.allowed,
        "checks": [{"name": c.name, "passed": c.passed, "detail": c.detail} for c in decision.checks],
    }
