"""Registering versions from one read, and reading them back as frozen records.

What is hashed is what is stored is what is scanned. A model on disk is read once, each file
copied into a private work folder while it is hashed; the blob store takes that copy (and
re-hashes it while it streams, refusing any mismatch) and the scanner reads that copy, so the
digests, the stored bytes and the scan report describe the same bytes even if the source
changes meanwhile. An upload over HTTP is already in the store: it is checked out the same way
(one read of each blob, hashed while copied) and the copy is scanned.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, func, insert, select
from sqlalchemy.exc import IntegrityError

from bastion.db.tables import models, version_files, versions
from bastion.errors import ArtifactError, NotFound, RegistryError
from bastion.findings import Verdict
from bastion.registry import fields
from bastion.registry.access import utc
from bastion.registry.evidence import SIGNATURE_NAME, copy_hashing, parse_assessment, place
from bastion.registry.records import Lineage, ModelSummary, ModelVersion, StoredFile
from bastion.registry.roles import Action, Principal
from bastion.render.scan_json import render_json
from bastion.scan.api import scan_path
from bastion.sign.manifest import FileDigest, Manifest, Sha256, list_model_files

if TYPE_CHECKING:
    from bastion.registry.service import Registry

NO_LINEAGE = Lineage()


def _now() -> datetime:
    return datetime.now(UTC)


def _root_digest(stored: tuple[StoredFile, ...]) -> str:
    ordered = sorted(stored, key=lambda f: [*f.path.split("/")])
    return "sha256:" + Manifest(
        tuple(FileDigest(f.path, Sha256(f.digest.removeprefix("sha256:"))) for f in ordered)
    ).root_digest()


def _scan_blob(registry: Registry, model_path: Path, root: Path) -> tuple[str, Verdict]:
    """Scan the private copy; store the report (paths inside the model, not the private folder)."""
    report = scan_path(model_path, registry.policy.scan)
    text = io.StringIO()
    render_json(report, registry.policy.scan.block_at, text)
    scan_json = text.getvalue().replace(json.dumps(str(root) + "/")[1:-1], "")
    return registry.blobs.put_bytes(scan_json.encode()), report.verdict(registry.policy.scan.block_at)


def register(
    registry: Registry,
    actor: Principal,
    model: str,
    path: Path,
    *,
    lineage: Lineage = NO_LINEAGE,
    signature: Path | None = None,
    assessment: Path | None = None,
    description: str = "",
) -> ModelVersion:
    """Store a model file or folder as the next version of `model`, from one read of each file.

    The signature bundle defaults to `model.sig` in the folder (or `FILE.sig` beside a file)
    and is kept beside the files, not among them; the version starts in the first stage.
    """
    fields.check_model_name(model)
    actor.require(Action.REGISTER, model)
    _check_lineage(registry, actor, lineage)
    fields.check_description(description)
    path = path.resolve()
    if not path.exists():
        raise ArtifactError(f"{path}: no such model file or folder", hint="Check the path.")
    layout = "folder" if path.is_dir() else "file"
    default_signature = path / SIGNATURE_NAME if layout == "folder" else path.with_name(path.name + ".sig")
    signature = signature or (default_signature if default_signature.exists() else None)
    ignore = [SIGNATURE_NAME] if layout == "folder" and signature == default_signature else []
    names = [name.as_posix() for name in list_model_files(path, ignore)]
    if not names:
        raise ArtifactError(f"{path}: holds no files to register")
    fields.check_member_paths(names, layout=layout)
    with registry.work.folder("register") as work:
        root = work / "model"
        stored = []
        for name in names:
            copy = place(root, name)
            try:
                digest, size = copy_hashing(path if layout == "file" else path / name, copy)
            except OSError as err:
                raise ArtifactError(f"{name}: cannot be read: {err.strerror}") from err
            registry.blobs.put_file(copy, digest)  # re-hashed while it streams: a mismatch is refused
            stored.append(StoredFile(name, digest, size))
        signature_blob = registry.blobs.put_bytes(signature.read_bytes()) if signature else None
        assessment_blob = None
        if assessment is not None:
            report = assessment.read_bytes()
            check_assessment_report(report, {f.digest for f in stored}, str(assessment))
            assessment_blob = registry.blobs.put_bytes(report)
        model_path = root / names[0] if layout == "file" else root
        scan_blob, verdict = _scan_blob(registry, model_path, root)
    files = tuple(stored)
    return _insert_version(
        registry, actor, model, _root_digest(files), layout, files, lineage, signature_blob, scan_blob,
        assessment_blob, description, scan_verdict=verdict,
    )


def register_uploaded(
    registry: Registry,
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
    fields.check_model_name(model)
    actor.require(Action.REGISTER, model)
    fields.check_layout(layout)
    _check_lineage(registry, actor, lineage)
    fields.check_description(description)
    paths = fields.check_member_paths(list(files), layout=layout)
    claimed = []
    for raw, path in zip(files, paths, strict=True):
        digest, size = files[raw]
        claimed.append(StoredFile(path, fields.check_digest(digest, f"files.{path}.digest"), fields.check_file_size(size)))
    for extra, name in ((signature_blob, "signature_blob"), (assessment_blob, "assessment_blob")):
        if extra is not None:
            fields.check_digest(extra, name)
    for stored in claimed:
        if not registry.blobs.exists(stored.digest):
            raise RegistryError(f"{stored.path}: blob {stored.digest} has not been uploaded", hint="PUT it to /v1/blobs first.")
    for extra in (signature_blob, assessment_blob):
        if extra is not None and not registry.blobs.exists(extra):
            raise RegistryError(f"blob {extra} has not been uploaded", hint="PUT it to /v1/blobs first.")
    with registry.work.folder("register") as work:
        root = work / "model"
        stored_files = []
        for stored in claimed:
            copy = place(root, stored.path)
            actual = registry.blobs.fetch(stored.digest, copy)
            if actual != stored.digest:
                raise RegistryError(f"{stored.path}: blob {stored.digest} holds other bytes ({actual})")
            stored_files.append(StoredFile(stored.path, stored.digest, copy.stat().st_size))
        model_path = root / claimed[0].path if layout == "file" else root
        scan_blob, verdict = _scan_blob(registry, model_path, root)
    if assessment_blob is not None:
        check_assessment_report(
            registry.blobs.read_bytes(assessment_blob), {f.digest for f in claimed}, f"blob {assessment_blob}"
        )
    ordered = tuple(sorted(stored_files, key=lambda f: f.path))
    return _insert_version(
        registry, actor, model, _root_digest(ordered), layout, ordered, lineage, signature_blob, scan_blob,
        assessment_blob, description, scan_verdict=verdict,
    )


def check_assessment_report(report: bytes, model_digests: set[str], source: str) -> None:
    """Refuse, at registration, an assessment report the gate and the gateway would not read:
    not a JSON object, or the report of another model (its `model_digest` is no file of this one)."""
    try:
        parse_assessment(report, model_digests)
    except ValueError as err:
        raise ArtifactError(
            f"{source}: {err}", hint="Attach the report `bastion assess` wrote for this model folder."
        ) from None


def _check_lineage(registry: Registry, actor: Principal, lineage: Lineage) -> None:
    if lineage.licence:
        fields.check_licence(lineage.licence)
    if lineage.source:
        fields.check_source(lineage.source)
    if lineage.training_data_digest:
        fields.check_digest(lineage.training_data_digest, "training_data_digest")
    if lineage.parent:
        parent_model, number = fields.parse_ref(lineage.parent)
        # Reading the parent's versions needs read access on its model: otherwise "not in this
        # registry" and success would tell a caller with no role there which versions exist.
        actor.require(Action.READ, parent_model)
        with registry.engine.connect() as connection:
            found = connection.execute(
                select(versions.c.number).where(versions.c.model == parent_model, versions.c.number == number)
            ).first()
        if found is None:
            raise NotFound(f"parent {lineage.parent} is not in this registry")


def _insert_version(
    registry: Registry,
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
    scan_verdict: Verdict,
) -> ModelVersion:
    now = _now()
    first = registry.stages[0]
    for _attempt in range(5):  # two registrations racing for the same number: retry
        try:
            with registry._change() as connection:
                if connection.execute(select(models.c.name).where(models.c.name == model)).first() is None:
                    connection.execute(
                        insert(models).values(name=model, created_at=now, created_by=actor.name, description=description)
                    )
                    registry._record(connection, actor.name, "model.create", model)
                number = 1 + (
                    connection.execute(select(func.max(versions.c.number)).where(versions.c.model == model)).scalar_one()
                    or 0
                )
                connection.execute(
                    insert(versions).values(
                        model=model, number=number, root_digest=root_digest, layout=layout, stage=first,
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
                registry._record(
                    connection, actor.name, "version.register", f"{model}@{number}",
                    root_digest=root_digest, files=len(stored), stage=first, scan=scan_verdict.value,
                    signed=signature_blob is not None, source=lineage.source, licence=lineage.licence,
                    training_data_digest=lineage.training_data_digest, parent=lineage.parent,
                )
            break
        except IntegrityError:
            continue
    else:
        raise RegistryError(f"could not allocate a version number for {model!r}; try again")
    return version(registry, actor, model, number)


# --- reading -----------------------------------------------------------------------------------


def version_in(connection: Connection, model: str, number: int | None) -> ModelVersion:
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
        registered_at=utc(row.registered_at), registered_by=row.registered_by,
        lineage=Lineage(row.source, row.licence, row.training_data_digest, row.parent),
        files=tuple(StoredFile(p, d, int(s)) for p, d, s in files),
        signature_blob=row.signature_blob, scan_blob=row.scan_blob, assessment_blob=row.assessment_blob,
    )


def version(registry: Registry, actor: Principal, model: str, number: int | None = None) -> ModelVersion:
    """A version of `model` (the newest when `number` is None)."""
    fields.check_model_name(model)
    actor.require(Action.READ, model)
    if number is not None:
        fields.check_version_number(number)
    with registry.engine.connect() as connection:
        return version_in(connection, model, number)


def list_versions(registry: Registry, actor: Principal, model: str) -> list[ModelVersion]:
    fields.check_model_name(model)
    actor.require(Action.READ, model)
    with registry.engine.connect() as connection:
        numbers = connection.execute(
            select(versions.c.number).where(versions.c.model == model).order_by(versions.c.number)
        ).scalars().all()
        if not numbers:
            raise NotFound(f"model {model!r} is not in this registry")
        return [version_in(connection, model, n) for n in numbers]


def list_models(registry: Registry, actor: Principal) -> list[ModelSummary]:
    """Every model the caller may read."""
    order = {stage: i for i, stage in enumerate(registry.stages)}
    with registry.engine.connect() as connection:
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
            stages = tuple(sorted(((s, int(n)) for s, n in staged), key=lambda item: order.get(item[0], 99)))
            found.append(ModelSummary(row.name, utc(row.created_at), row.created_by, row.description, latest, stages))
    return found


def newest_in(registry: Registry, actor: Principal, model: str, stage: str) -> ModelVersion:
    """The newest version of `model` recorded in `stage`; NotFound if none is (the record is not proof)."""
    fields.check_model_name(model)
    actor.require(Action.READ, model)
    with registry.engine.connect() as connection:
        number = connection.execute(
            select(func.max(versions.c.number)).where(versions.c.model == model, versions.c.stage == stage)
        ).scalar_one()
        if number is None:
            raise NotFound(f"no version of {model!r} is in stage {stage}", hint="Promote one through the gate first.")
        return version_in(connection, model, int(number))
