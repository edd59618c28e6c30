"""The registry's HTTP API: a thin skin over `Registry`, one library call per route.

Every route but `GET /healthz` needs `Authorization: Bearer <token>`; the library checks the
caller's role for each action, this module only maps its answers to HTTP:

| library outcome                              | status |
| -------------------------------------------- | ------ |
| no, malformed, unknown, revoked, expired token, disabled principal | 401 + `WWW-Authenticate: Bearer` |
| a request body or path parameter that does not validate | 422 |
| a blob's bytes do not hash to the digest in its URL | 400 |
| a promotion the gate refuses                 | 409, with the decision |
| any other BastionError                       | `bastion.http_errors.status_of`: the one table every API uses (403 role too low, 404 not there, 409 stored bytes altered or already exists, 400 bad input, 503 backend down) |

Error bodies are always `{"error": message, "hint": hint}` (a refused promotion adds the
decision's fields beside them).

Blobs: `HEAD` and `PUT /v1/blobs/{digest}` need the contributor role on at least one model,
since only registering needs them and a blob's presence says which bytes the registry holds.
An upload is spooled to a temporary file (at most `SPOOL_MEMORY` bytes in memory, at most
`max_blob_bytes` in all) and then handed to the blob store, which re-hashes it and stores it
only if it matches its digest.

The library is blocking (SQLAlchemy, scanning): routes are plain `def`, which FastAPI runs in
its thread pool; the one `async` route, the upload, hands blocking work to that pool itself.
"""

from __future__ import annotations

import io
import json
import tempfile
from collections.abc import Iterator
from datetime import timedelta
from typing import IO, Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response, status
from fastapi import Path as FastPath
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.exc import OperationalError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from bastion import __version__
from bastion.errors import (
    AccessDenied,
    BastionError,
    RegistryError,
)
from bastion.http_errors import status_of
from bastion.registry import tokens as token_text
from bastion.registry.api_models import (
    ApprovalBody,
    AuditReportBody,
    BlobStored,
    DecisionBody,
    Digest,
    ErrorBody,
    GrantBody,
    Health,
    ModelName,
    ModelSummaryBody,
    NewGrant,
    NewPrincipal,
    NewToken,
    PrincipalBody,
    PromotionRefused,
    RegisterVersion,
    StageRequest,
    TokenBody,
    TokenId,
    VersionBody,
    VersionNumber,
)
from bastion.registry.roles import Action, Principal, Role
from bastion.registry.service import Registry
from bastion.sign.ossf import PAYLOAD_TYPE

SPOOL_MEMORY = 1024 * 1024  # bytes of an upload or an export held in memory before spilling to disk
WRITE_BATCH = 1024 * 1024  # upload bytes gathered before one write to the spool, off the event loop
READ_CHUNK = 256 * 1024  # bytes per chunk of a streamed response
DEFAULT_MAX_BLOB_BYTES = 64 * 1024**3
MAX_ATTESTATION_BYTES = 1024 * 1024
NDJSON = "application/x-ndjson"

# Path parameters are bounded in api_models (fields.py's checks): a 422 naming them, never a 500.

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody}
    for code in (
        status.HTTP_400_BAD_REQUEST,
        status.HTTP_401_UNAUTHORIZED,
        status.HTTP_403_FORBIDDEN,
        status.HTTP_404_NOT_FOUND,
        status.HTTP_409_CONFLICT,
        status.HTTP_422_UNPROCESSABLE_CONTENT,
        status.HTTP_503_SERVICE_UNAVAILABLE,
    )
}


class ApiError(Exception):
    """An error answered with `status` and the usual `{"error", "hint"}` body."""

    def __init__(self, status_code: int, message: str, hint: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.hint = hint
        self.headers = headers

    @classmethod
    def from_error(cls, status_code: int, err: BastionError) -> ApiError:
        return cls(status_code, err.message, err.hint)


def _error_response(status_code: int, message: str, hint: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(ErrorBody(error=message, hint=hint).model_dump(), status_code=status_code, headers=headers)


# --- dependencies ----------------------------------------------------------------------------

_bearer = HTTPBearer(auto_error=False, description="A registry API token: bst_<id>_<secret>.")


def _registry(request: Request) -> Registry:
    registry: Registry = request.app.state.registry
    return registry


def _caller(
    registry: Annotated[Registry, Depends(_registry)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The principal behind the request's bearer token; 401 for anything else."""
    try:
        return registry.authenticate(credentials.credentials if credentials else None)
    except AccessDenied as err:
        challenge = 'Bearer realm="bastion-registry"'
        hint = err.hint
        if credentials is None:
            hint = "Send the header `Authorization: Bearer <token>`; an administrator issues tokens."
        else:
            challenge += ', error="invalid_token"'
        raise ApiError(status.HTTP_401_UNAUTHORIZED, err.message, hint, {"WWW-Authenticate": challenge}) from err


RegistryDep = Annotated[Registry, Depends(_registry)]
Caller = Annotated[Principal, Depends(_caller)]


def _require_uploader(caller: Principal) -> None:
    """Blobs are shared by every model: uploading or probing one needs contributor somewhere."""
    caller.require_somewhere(Action.REGISTER)


router = APIRouter(responses=_ERRORS)


@router.get("/healthz", response_model=Health, responses={}, tags=["health"])
def healthz() -> Health:
    """Liveness only: the one anonymous route, and it says nothing about the registry."""
    return Health()


# --- models and versions ---------------------------------------------------------------------


@router.get("/v1/models", tags=["models"])
def list_models(registry: RegistryDep, caller: Caller) -> list[ModelSummaryBody]:
    """Every model the caller may read."""
    return [ModelSummaryBody.of(summary) for summary in registry.models(caller)]


@router.get("/v1/models/{name}/versions", tags=["models"])
def list_versions(name: ModelName, registry: RegistryDep, caller: Caller) -> list[VersionBody]:
    return [VersionBody.of(version) for version in registry.versions(caller, name)]


@router.get("/v1/models/{name}/versions/{number}", tags=["models"])
def get_version(name: ModelName, number: VersionNumber, registry: RegistryDep, caller: Caller) -> VersionBody:
    return VersionBody.of(registry.version(caller, name, number))


@router.get(
    "/v1/models/{name}/versions/{number}/scan",
    tags=["models"],
    response_class=Response,
    responses={200: {"content": {"application/json": {}}, "description": "The scan report stored at registration."}},
)
def get_scan_report(name: ModelName, number: VersionNumber, registry: RegistryDep, caller: Caller) -> Response:
    registry.version(caller, name, number)
    report = registry.scan_report(caller, name, number)
    return Response(report, media_type="application/json")


@router.post("/v1/models/{name}/versions", status_code=status.HTTP_201_CREATED, tags=["models"])
def register_version(name: ModelName, body: RegisterVersion, registry: RegistryDep, caller: Caller) -> VersionBody:
    """Register the next version of `name` from blobs uploaded with PUT /v1/blobs/{digest}."""
    version = registry.register_uploaded(
        caller,
        name,
        {path: (ref.digest, ref.size) for path, ref in body.files.items()},
        layout=body.layout,
        lineage=body.lineage,
        signature_blob=body.signature_blob,
        assessment_blob=body.assessment_blob,
        description=body.description,
    )
    return VersionBody.of(version)


# --- approving, checking, promoting ----------------------------------------------------------


@router.post("/v1/models/{name}/versions/{number}/approvals", status_code=status.HTTP_201_CREATED, tags=["gate"])
def approve_version(
    name: ModelName, number: VersionNumber, body: StageRequest, registry: RegistryDep, caller: Caller
) -> ApprovalBody:
    registry.version(caller, name, number)
    return ApprovalBody.of(registry.approve(caller, name, number, body.stage))


@router.post("/v1/models/{name}/versions/{number}/gate-check", tags=["gate"])
def check_gate(
    name: ModelName, number: VersionNumber, body: StageRequest, registry: RegistryDep, caller: Caller
) -> DecisionBody:
    """What the gate would decide now, without promoting (the check itself is audited)."""
    registry.version(caller, name, number)
    return DecisionBody.of(registry.check_gate(caller, name, number, body.stage))


@router.post(
    "/v1/models/{name}/versions/{number}/promotions",
    tags=["gate"],
    response_model=DecisionBody,
    responses={status.HTTP_409_CONFLICT: {"model": PromotionRefused}},
)
def promote_version(
    name: ModelName, number: VersionNumber, body: StageRequest, registry: RegistryDep, caller: Caller
) -> DecisionBody | JSONResponse:
    """Promote if every check passes (200, with the attestation's digest); 409 with the reasons if not."""
    registry.version(caller, name, number)
    decision = registry.promote(caller, name, number, body.stage)
    if not decision.allowed:
        refused = PromotionRefused.refusing(decision)
        return JSONResponse(jsonable_encoder(refused), status_code=status.HTTP_409_CONFLICT)
    return DecisionBody.of(decision)


@router.get(
    "/v1/attestations/{digest}",
    tags=["gate"],
    response_class=Response,
    responses={
        200: {"content": {"application/json": {}}, "description": "A DSSE envelope around an in-toto statement."}
    },
)
def get_attestation(digest: Digest, registry: RegistryDep, caller: Caller) -> Response:
    envelope = registry.attestation(caller, digest)
    if not _is_envelope(envelope):
        raise ApiError(
            status.HTTP_404_NOT_FOUND, f"{digest} is not an attestation", "Use the digest a promotion returned."
        )
    return Response(envelope, media_type="application/json")


def _is_envelope(data: bytes) -> bool:
    """Only promotion attestations are served here, never other blobs that share the store."""
    if len(data) > MAX_ATTESTATION_BYTES:
        return False
    try:
        envelope = json.loads(data)
    except ValueError:
        return False
    return isinstance(envelope, dict) and envelope.get("payloadType") == PAYLOAD_TYPE


# --- blobs -----------------------------------------------------------------------------------


@router.head("/v1/blobs/{digest}", tags=["blobs"], responses={200: {"description": "The blob is stored."}})
def blob_exists(digest: Digest, registry: RegistryDep, caller: Caller) -> Response:
    _require_uploader(caller)
    found = registry.blobs.exists(digest)
    return Response(status_code=status.HTTP_200_OK if found else status.HTTP_404_NOT_FOUND)


@router.put(
    "/v1/blobs/{digest}",
    tags=["blobs"],
    responses={
        status.HTTP_200_OK: {"model": BlobStored, "description": "The store held these bytes already."},
        status.HTTP_201_CREATED: {"model": BlobStored, "description": "Stored."},
        status.HTTP_413_CONTENT_TOO_LARGE: {"model": ErrorBody},
    },
)
async def put_blob(
    digest: Digest, request: Request, response: Response, registry: RegistryDep, caller: Caller
) -> BlobStored:
    """Store the request body as the blob named `digest`; bytes that hash otherwise are refused."""
    _require_uploader(caller)
    limit: int = request.app.state.max_blob_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    if await run_in_threadpool(registry.blobs.exists, digest):
        async for _chunk in request.stream():  # read and drop it, so the connection stays usable
            pass
        response.status_code = status.HTTP_200_OK
        return BlobStored(digest=digest, stored=False)
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY) as spool:
        await _spool_body(request, spool, limit)
        spool.seek(0)
        try:
            stored = await run_in_threadpool(registry.blobs.put_stream, spool, digest)
        except RegistryError as err:  # the bytes do not hash to `digest`: nothing was stored
            raise ApiError.from_error(status.HTTP_400_BAD_REQUEST, err) from err
    response.status_code = status.HTTP_201_CREATED if stored else status.HTTP_200_OK
    return BlobStored(digest=digest, stored=stored)


async def _spool_body(request: Request, spool: IO[bytes], limit: int) -> None:
    """Copy the request body to `spool`, a batch at a time, writing from the thread pool."""
    size = 0
    batch = bytearray()
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        batch += chunk
        if len(batch) >= WRITE_BATCH:
            await run_in_threadpool(spool.write, bytes(batch))
            batch.clear()
    if batch:
        await run_in_threadpool(spool.write, bytes(batch))


def _too_large(limit: int) -> ApiError:
    return ApiError(
        status.HTTP_413_CONTENT_TOO_LARGE,
        f"the blob is larger than this registry accepts ({limit} bytes)",
        "Split the model into smaller files, or ask the operator to raise the limit.",
    )


# --- identities, roles and tokens ------------------------------------------------------------


@router.post("/v1/principals", status_code=status.HTTP_201_CREATED, tags=["access"])
def add_principal(body: NewPrincipal, registry: RegistryDep, caller: Caller) -> PrincipalBody:
    registry.add_principal(caller, body.name, body.kind)
    return PrincipalBody(name=body.name, kind=body.kind)


@router.post("/v1/grants", tags=["access"])
def grant_role(body: NewGrant, registry: RegistryDep, caller: Caller) -> GrantBody:
    """Give a principal a role on one model (or `*`), replacing any role it held there."""
    registry.grant(caller, body.principal, Role.parse(body.role), body.model)
    return GrantBody(principal=body.principal, role=body.role, model=body.model)


@router.post("/v1/tokens", status_code=status.HTTP_201_CREATED, tags=["access"])
def issue_token(body: NewToken, registry: RegistryDep, caller: Caller) -> TokenBody:
    """A new token for a principal; its text is in this response and nowhere else."""
    expires_in = timedelta(seconds=body.expires_in_seconds) if body.expires_in_seconds else None
    text = registry.issue_token(caller, body.principal, expires_in)
    token_id, _secret = token_text.split(text)
    return TokenBody(
        token=text, token_id=token_id, principal=body.principal, expires_in_seconds=body.expires_in_seconds
    )


@router.delete("/v1/tokens/{token_id}", status_code=status.HTTP_204_NO_CONTENT, tags=["access"])
def revoke_token(
    token_id: TokenId, registry: RegistryDep, caller: Caller
) -> Response:
    registry.revoke_token(caller, token_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# Checked again by the library (fields.check_principal_name): a bad name is a 400 naming the field.
PrincipalPath = Annotated[str, FastPath(min_length=1, max_length=200)]
GrantModel = Annotated[str, Query(min_length=1, max_length=200)]


@router.get("/v1/principals/{name}/tokens", tags=["access"])
def list_tokens(name: PrincipalPath, registry: RegistryDep, caller: Caller) -> list[dict[str, object]]:
    """The principal's tokens: id, creation, expiry, revoked (admin; secrets are never kept)."""
    return [
        {"token_id": t.token_id, "principal": t.principal, "created_at": t.created_at, "expires_at": t.expires_at,
         "revoked": t.revoked}
        for t in registry.tokens_of(caller, name)
    ]


@router.delete("/v1/principals/{name}/grants", status_code=status.HTTP_204_NO_CONTENT, tags=["access"])
def remove_grant(name: PrincipalPath, registry: RegistryDep, caller: Caller, model: GrantModel = "*") -> Response:
    """Take away the role `name` holds on `model` (default `*`: its grant on every model)."""
    registry.remove_grant(caller, name, model)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/v1/principals/{name}/disable", tags=["access"])
def disable_principal(name: PrincipalPath, registry: RegistryDep, caller: Caller) -> dict[str, object]:
    """Its tokens stop authenticating at once (admin; audited)."""
    registry.disable_principal(caller, name)
    return {"name": name, "disabled": True}


@router.post("/v1/principals/{name}/enable", tags=["access"])
def enable_principal(name: PrincipalPath, registry: RegistryDep, caller: Caller) -> dict[str, object]:
    registry.enable_principal(caller, name)
    return {"name": name, "disabled": False}


# --- the audit log ---------------------------------------------------------------------------


@router.get("/v1/audit/verify", tags=["audit"])
def verify_audit(registry: RegistryDep, caller: Caller) -> AuditReportBody:
    """Walk the whole chain; `ok` is false, with each problem, if anything was altered."""
    return AuditReportBody.of(registry.verify_audit(caller))


@router.get(
    "/v1/audit/export",
    tags=["audit"],
    response_class=StreamingResponse,
    responses={200: {"content": {NDJSON: {}}, "description": "One JSON object per audit entry, in order."}},
)
def export_audit(registry: RegistryDep, caller: Caller) -> StreamingResponse:
    """Every audit entry with its hashes, one JSON line each (admin)."""
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY)  # noqa: SIM115  # closed by _drain
    try:
        text = io.TextIOWrapper(spool, encoding="utf-8", newline="\n")
        count = registry.export_audit(caller, text)
        text.flush()
        text.detach()
        spool.seek(0)
    except BaseException:
        spool.close()
        raise
    return StreamingResponse(_drain(spool), media_type=NDJSON, headers={"X-Audit-Entries": str(count)})


def _drain(spool: IO[bytes]) -> Iterator[bytes]:
    with spool:
        while chunk := spool.read(READ_CHUNK):
            yield chunk


# --- the application -------------------------------------------------------------------------


def create_app(registry: Registry, *, max_blob_bytes: int = DEFAULT_MAX_BLOB_BYTES) -> FastAPI:
    """The registry's HTTP API over `registry`, which the caller opens and closes."""
    app = FastAPI(
        title="Bastion registry",
        version=__version__,
        openapi_url=None,  # nothing anonymous: no public schema or docs pages
        docs_url=None,
        redoc_url=None,
    )
    app.state.registry = registry
    app.state.max_blob_bytes = max_blob_bytes
    app.include_router(router)

    @app.exception_handler(ApiError)
    async def api_error(_request: Request, err: ApiError) -> JSONResponse:
        return _error_response(err.status_code, err.message, err.hint, err.headers)

    @app.exception_handler(BastionError)
    async def bastion_error(_request: Request, err: BastionError) -> JSONResponse:
        return _error_response(status_of(err), err.message, err.hint)

    @app.exception_handler(OperationalError)
    async def database_down(_request: Request, err: OperationalError) -> JSONResponse:
        return _error_response(
            status.HTTP_503_SERVICE_UNAVAILABLE, "the registry database is unavailable", "Try again shortly."
        )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, err: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in problem['loc'])}: {problem['msg']}" for problem in err.errors()
        )
        return _error_response(
            status.HTTP_422_UNPROCESSABLE_CONTENT, f"invalid request: {problems}", "Fix the named fields and retry."
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, err: StarletteHTTPException) -> JSONResponse:
        return _error_response(
            err.status_code, str(err.detail), "Check the method and the path.", dict(err.headers or {})
        )

    return app


def app_from_environment() -> FastAPI:
    """The app for the registry named by BASTION_REGISTRY: what `bastion registry serve` runs in each worker."""
    import os  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    return create_app(Registry.open(Path(os.environ["BASTION_REGISTRY"])))
