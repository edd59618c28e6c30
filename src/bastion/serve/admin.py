"""The gateway's admin API, on its own port: keys, the kill switch and metrics.

Callers authenticate with a registry token of an administrator; every change is audited and
takes effect in this process at once (other replicas see it within their refresh interval).
"""

# No `from __future__ import annotations` here: FastAPI must see the `Admin` dependency alias,
# defined inside create_admin_app, as an object, not as a string it cannot resolve.
from datetime import timedelta
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi import Path as FastPath
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from starlette.concurrency import run_in_threadpool

from bastion.errors import AccessDenied, BastionError, ConfigError
from bastion.http_errors import status_of
from bastion.registry import Principal, Registry
from bastion.registry.roles import Action
from bastion.serve.gateway import Gateway
from bastion.serve.keys import MAX_ROWS, KeySpec, issue_key, key_summary
from bastion.serve.limits import Quota, RateLimit

Operation = Literal["infer", "metadata", "token"]


# Every field is bounded: a value past the database's integer columns, or a lifetime that
# overflows a datetime (expires_in_days: 1e300), was a 500; now it is a 422 naming the field.
MAX_MODELS_PER_KEY = 100
MAX_NAME = 200  # the database's name columns
MAX_KEY_ID = 32
MAX_RATE = 1_000_000.0
MAX_COUNT = 1_000_000_000  # below 2**31: the quota columns are 32-bit integers on PostgreSQL
MAX_BURST = 1_000_000
MAX_DAYS = 3650.0
ModelName = Annotated[str, StringConstraints(min_length=1, max_length=MAX_NAME)]
KeyId = Annotated[str, FastPath(min_length=1, max_length=MAX_KEY_ID)]
ServedName = Annotated[str, FastPath(min_length=1, max_length=MAX_NAME)]


class NewKey(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=False)

    name: str = Field(min_length=1, max_length=MAX_NAME)
    models: list[ModelName] = Field(default_factory=lambda: ["*"], min_length=1, max_length=MAX_MODELS_PER_KEY)
    operations: list[Operation] = Field(
        default_factory=lambda: list[Operation](["infer", "metadata"]), min_length=1, max_length=3
    )
    output: Literal["label", "score", "probabilities"] = "label"
    precision: int | None = Field(None, ge=0, le=6)
    rate_per_second: float | None = Field(10.0, gt=0, le=MAX_RATE)
    burst: int = Field(20, ge=1, le=MAX_BURST)
    daily: int | None = Field(10_000, ge=1, le=MAX_COUNT)
    monthly: int | None = Field(None, ge=1, le=MAX_COUNT)
    expires_in_days: float | None = Field(90, gt=0, le=MAX_DAYS)
    account: str | None = Field(None, min_length=1, max_length=MAX_NAME)  # None: the key's name
    max_rows: int | None = Field(None, ge=1, le=MAX_ROWS)  # rows per request; None: the default

    def to_spec(self) -> KeySpec:
        return KeySpec(
            name=self.name,
            models=tuple(self.models),
            operations=tuple(self.operations),
            output=self.output,
            precision=self.precision,
            rate=RateLimit(self.rate_per_second, self.burst) if self.rate_per_second else None,
            quota=Quota(self.daily, self.monthly) if self.daily or self.monthly else None,
            expires_in=timedelta(days=self.expires_in_days) if self.expires_in_days else None,
            account=self.account,
            max_rows=self.max_rows,
        )


class Reason(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    reason: str = Field("", max_length=500)


def create_admin_app(gateway: Gateway, registry: Registry) -> FastAPI:
    app = FastAPI(title="Bastion gateway admin", docs_url=None, redoc_url=None, openapi_url=None)
    bearer = HTTPBearer(auto_error=False)

    def admin(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Principal:
        try:
            principal = registry.authenticate(credentials.credentials if credentials else None)
        except AccessDenied as err:
            raise HTTPException(401, err.message, headers={"WWW-Authenticate": "Bearer"}) from err
        principal.require(Action.ISSUE_TOKEN)
        return principal

    Admin = Annotated[Principal, Depends(admin)]  # noqa: N806  # a type alias, named as one
    store = gateway.store

    @app.exception_handler(BastionError)
    async def bastion_error(_request: Request, err: BastionError) -> JSONResponse:
        return JSONResponse({"error": err.message, "hint": err.hint}, status_code=status_of(err))

    @app.get("/admin/keys")
    def list_keys(caller: Admin) -> list[dict[str, object]]:
        return key_summary(store.listed(caller))

    @app.post("/admin/keys", status_code=201)
    def create_key(body: NewKey, caller: Admin) -> dict[str, object]:
        # Priced like `bastion keys create`: the warnings come back, and a budget the policy
        # refuses (it can copy a model it may call) creates nothing.
        issued = issue_key(registry, caller, store, body.to_spec())
        notes = list(issued.review.notes())
        if issued.key is None or issued.text is None:
            raise ConfigError("refused: " + "; ".join(notes), hint="Lower the key's quota or rate, or its account's budget.")
        gateway.refresh()
        return {"key": issued.text, **key_summary([issued.key])[0], "warnings": notes}

    @app.delete("/admin/keys/{key_id}", status_code=204)
    def revoke_key(key_id: KeyId, caller: Admin) -> Response:
        store.revoke(caller, key_id, "revoked through the admin API")
        gateway.refresh()
        return Response(status_code=204)

    @app.post("/admin/keys/{key_id}/suspend")
    def suspend_key(key_id: KeyId, body: Reason, caller: Admin) -> dict[str, str]:
        store.suspend(caller, key_id, body.reason or "suspended by an operator")
        gateway.refresh()
        return {"suspended": key_id}

    @app.post("/admin/keys/{key_id}/resume")
    def resume_key(key_id: KeyId, body: Reason, caller: Admin) -> dict[str, str]:
        store.resume(caller, key_id, body.reason)  # lifts a suspension and an alarm's throttle
        gateway.unthrottle(key_id)  # first: a throttle pending here would outlive the refresh
        gateway.refresh()
        return {"resumed": key_id}

    @app.post("/admin/models/{name}/disable")
    def disable_model(name: ServedName, body: Reason, caller: Admin) -> dict[str, str]:
        if name not in gateway.models:
            raise ConfigError(f"this gateway does not serve {name!r}")
        store.disable_model(caller, name, body.reason or "disabled by an operator")
        gateway.refresh()
        return {"disabled": name}

    @app.post("/admin/models/{name}/enable")
    def enable_model(name: ServedName, body: Reason, caller: Admin) -> dict[str, str]:
        store.enable_model(caller, name, body.reason)
        gateway.refresh()
        return {"enabled": name}

    @app.get("/metrics")
    async def metrics(_caller: Admin) -> Response:
        body = await run_in_threadpool(gateway.metrics.exposition)
        return Response(body, media_type="text/plain; version=0.0.4")

    return app
