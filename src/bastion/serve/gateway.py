"""The inference gateway: every check in the server, on a lean path of its own.

Per request, in order: authenticate (a key or a short-lived token; nothing anonymous), check
the key's scope and state and the model's kill switch, apply rate limits and quotas, read and
validate the input against the model's declared contract, run the model, cut the answer down
to the detail the key was granted, feed the detectors, and record the call in the gateway's
hash-chained audit log. Refusals carry no detail an attacker could learn from.

Inference requests are served by `GatewayApp`, a bare ASGI application that hands every other
route to Starlette: a framework's routing, middleware and request and response objects cost
as much per request as all of the gateway's checks together. Predictions go through a
`Batcher`, so requests that reach a model in the same event-loop turn share one model call;
their rows are judged against the training profile the same way, in one call per turn. Under
load, a numpy call costs several times what a microbenchmark shows (its code and data are cold
after a request's other work), so the fixed cost of each call is what batching saves.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import httpx
import numpy as np
import orjson
from numpy.typing import NDArray
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from bastion.audit import AuditEvent
from bastion.errors import BackendUnavailable
from bastion.serve.anonymous import RefusalLimit, RefusalTally, bounded_name
from bastion.serve.batching import Batcher
from bastion.serve.detect import Alarm, StreamConfig
from bastion.serve.guard import RequestGuard, RowsVerdict, StreamKind, source_network
from bastion.serve.keys import AccountLimits, ApiKey, KeyStore, StoreSnapshot, secret_matches, split_key
from bastion.serve.limits import Limiter, Quota, RateLimit, SubjectLimit
from bastion.serve.loader import ServedModel
from bastion.serve.metrics import GatewayMetrics
from bastion.serve.observer import Observer
from bastion.serve.output import shape_outputs
from bastion.serve.protocol import GENERIC_REFUSAL, InvalidRequest, infer_response, model_metadata, parse_infer
from bastion.serve.tokens import TokenMinter

JSON = "application/json"
THROTTLED = RateLimit(per_second=0.2, burst=1)  # one row every five seconds
# An account's monthly rows on a model, when its owner set none: this share of the rows an
# attacker needs to copy the model to 95 % agreement (its assessment's extraction cost).
DEFAULT_BUDGET_SHARE = 0.5
INFER_PATH = re.compile(r"/v2/models/([^/]+)(?:/versions/([^/]+))?/infer")
MAX_URL_BYTES = 2048  # a path and query longer than this is refused (414) before any other work
TOKEN_BODY_BYTES = 4096  # {"model": ..., "lifetime": ...} needs far less
RETRY_UNRECORDABLE = (("retry-after", "1"),)
_JSON_HEADERS = ((b"content-type", b"application/json"),)
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AlarmPolicy:
    """What happens to a key when a detector raises an alarm on it."""

    action: str = "throttle"  # throttle | suspend | alert
    throttle: RateLimit = THROTTLED
    webhook: str | None = None


@dataclass(frozen=True)
class InputLogging:
    """Inputs go to the audit log only when asked for, with the listed features masked."""

    masked: frozenset[int] = frozenset()  # feature indices holding personal data

    def render(self, rows: Any) -> list[list[float | str]]:
        return [["***" if i in self.masked else float(v) for i, v in enumerate(row)] for row in rows.tolist()]


@dataclass
class Caller:
    """Who is asking: the key, and the one model a token confines it to."""

    key: ApiKey
    token_model: str | None = None


@dataclass
class _State:
    keys: dict[str, ApiKey] = field(default_factory=dict)
    disabled: dict[str, str] = field(default_factory=dict)
    accounts: dict[str, AccountLimits] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Reply:
    """An answer or a refusal, before it is sent; `refusal` is the reason a refusal carries in
    its `x-bastion-refusal` header (for the caller's operator, the metrics and the audit log)."""

    status: int
    body: bytes = b""
    refusal: str = ""
    headers: tuple[tuple[str, str], ...] = ()

    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        """ASGI headers: content type and length, the refusal, and the extra headers."""
        headers = [*_JSON_HEADERS, (b"content-length", str(len(self.body)).encode())] if self.body else [
            (b"content-length", b"0")
        ]
        if self.refusal:
            headers.append((b"x-bastion-refusal", self.refusal.encode()))
        headers.extend((name.encode(), value.encode("latin-1")) for name, value in self.headers)
        return headers

    def response(self) -> Response:
        """The same reply as a Starlette response."""
        headers = dict(self.headers)
        if self.refusal:
            headers["x-bastion-refusal"] = self.refusal
        return Response(self.body, status_code=self.status, media_type=JSON if self.body else None, headers=headers)


def _error(status: int, message: str, refusal: str = "", headers: tuple[tuple[str, str], ...] = ()) -> Reply:
    return Reply(status, orjson.dumps({"error": message}), refusal, headers)


def _infer_headers(headers: Iterable[tuple[bytes, bytes]]) -> tuple[str, str, bytes | None]:
    """The Authorization and X-API-Key headers' text and the declared Content-Length, one pass."""
    authorization = api_key = ""
    declared: bytes | None = None
    for header, value in headers:
        if header == b"authorization":
            authorization = value.decode("latin-1")
        elif header == b"x-api-key":
            api_key = value.decode("latin-1")
        elif header == b"content-length":
            declared = value
    return authorization, api_key, declared


def client_source(scope: Scope) -> str:
    """The connecting address (never a header a client could forge), as a tally's source."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


class ClientGone(Exception):
    """The client disconnected before its request body arrived."""


async def read_body(receive: Receive, declared: bytes | None, limit: int) -> bytes | None:
    """The request body from ASGI `receive`, or None when it is (or declares itself) over `limit`."""
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        return None
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class Gateway:
    """One gateway process: its models, its view of the keys, its limits, detectors and records."""

    def __init__(
        self,
        models: Mapping[str, ServedModel],
        store: KeyStore,
        limiter: Limiter,
        minter: TokenMinter,
        observer: Observer,
        *,
        alarm_policy: AlarmPolicy | None = None,
        refresh_seconds: float = 1.0,
        clock: Callable[[], float] = time.time,
        input_logging: InputLogging | None = None,
        refusal_limit: RefusalLimit | None = None,
        tally_interval: float = 10.0,
        stream_config: StreamConfig | None = None,
        account_budget_share: float | None = DEFAULT_BUDGET_SHARE,
    ) -> None:
        self.models = dict(models)
        self.store = store
        self.limiter = limiter
        self.minter = minter
        self.observer = observer
        self.alarm_policy = alarm_policy or AlarmPolicy()
        self.refresh_seconds = refresh_seconds
        self.clock = clock
        self.input_logging = input_logging
        self.tally = RefusalTally(interval=tally_interval, limit=refusal_limit)
        self.metrics = GatewayMetrics.create()
        # Per-model counts and batchers are looked up once, not per request.
        self._answered = {name: self.metrics.answered.of(name) for name in self.models}
        self._refs = {name: model.ref for name, model in self.models.items()}
        self.batchers = {name: Batcher(model.predict_proba) for name, model in self.models.items()}
        self._state = _State()
        self._tickets = 0  # snapshots begun
        self._applied = 0  # the ticket of the snapshot in force
        self._suspending: dict[str, str] = {}  # key id -> reason, suspended here, not yet seen in the database
        self._throttling: dict[str, RateLimit] = {}  # key id -> throttle set here, not yet seen in the database
        self.guard = RequestGuard({name: model.spec for name, model in self.models.items()}, stream_config)
        self.judges = {
            name: Batcher(functools.partial(self.guard.judge, name)) for name in self.models if self.guard.guards(name)
        }
        self.account_budget_share = account_budget_share
        self._derived_quota = {name: self._budget_from_cost(model) for name, model in self.models.items()}
        self._http: httpx.AsyncClient | None = None
        self.refresh()

    # --- the view of keys and kill switches ------------------------------------------------

    def refresh(self) -> None:
        """Reload keys and disabled models from the database (done every `refresh_seconds`)."""
        ticket = self._next_ticket()
        self._apply(ticket, self.store.snapshot())

    def _next_ticket(self) -> int:
        self._tickets += 1
        return self._tickets

    def _apply(self, ticket: int, snapshot: StoreSnapshot) -> None:
        """Install a snapshot unless a newer one (begun later) is installed already.

        Suspensions and throttles this gateway made on an alarm stay in force over a snapshot
        read before they were committed, until the database shows them.
        """
        if ticket <= self._applied:
            return
        self._applied = ticket
        keys = dict(snapshot.keys)
        for key_id, reason in list(self._suspending.items()):
            key = keys.get(key_id)
            if key is None or key.suspended_reason is not None:
                del self._suspending[key_id]  # the database has it now
            else:
                keys[key_id] = replace(key, suspended_reason=reason)
        for key_id, throttle in list(self._throttling.items()):
            key = keys.get(key_id)
            if key is None or key.throttle is not None:
                del self._throttling[key_id]
            else:
                keys[key_id] = replace(key, throttle=throttle)
        self._state = _State(keys, dict(snapshot.disabled), dict(snapshot.accounts))

    def unthrottle(self, key_id: str) -> None:
        """Forget a throttle this gateway set and the database has not shown yet (an operator lifted it)."""
        self._throttling.pop(key_id, None)
        key = self._state.keys.get(key_id)
        if key is not None and key.throttle is not None:
            self._state.keys[key_id] = replace(key, throttle=None)

    def _budget_from_cost(self, model: ServedModel) -> Quota | None:
        """An account's monthly rows on `model` when the owner set none: a share of its extraction cost."""
        if self.account_budget_share is None or model.extraction_queries_95 is None:
            return None
        return Quota(monthly=max(1, math.floor(self.account_budget_share * model.extraction_queries_95)))

    def budget_summary(self, model: str) -> str:
        """One line for a person: the model's extraction cost and the accounts' default budget on it."""
        served = self.models[model]
        if served.extraction_queries_95 is None:
            return (
                "extraction cost not measured (no extraction_queries_95 in its assessment): accounts have no "
                "budget from it; run `bastion assess --only extraction` and attach the report"
            )
        quota = self._derived_quota.get(model)
        budget = f"accounts without a budget of their own get {quota.monthly:,} rows a month" if quota and quota.monthly else (
            "accounts get no budget from it (--account-budget-share 0)"
        )
        return f"a copy reaches 95% agreement after {served.extraction_queries_95:,.0f} label-only rows; {budget}"

    def account_limit(self, account: str, model: str) -> SubjectLimit:
        """The account's rate and budget on `model`: the owner's, else the one set from the extraction cost."""
        limits = self._state.accounts.get(account)
        if limits is not None:
            return SubjectLimit(f"account:{account}", limits.rate, limits.quota)
        return SubjectLimit(f"account:{account}", None, self._derived_quota.get(model))

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_seconds)
            ticket = self._next_ticket()
            with contextlib.suppress(Exception):  # a database hiccup keeps the last good view
                self._apply(ticket, await asyncio.to_thread(self.store.snapshot))

    async def _tally_loop(self) -> None:
        while True:
            await asyncio.sleep(min(1.0, self.tally.interval))
            if self.tally.due():
                self.write_tally()

    def write_tally(self) -> None:
        """Record the anonymous refusals counted so far, one entry per source and reason."""
        for event in self.tally.drain():
            self.observer.record(event)

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        self._http = httpx.AsyncClient(timeout=5.0)
        await self.observer.start(self._alarm_from_observer)
        tasks = [asyncio.create_task(self._refresh_loop()), asyncio.create_task(self._tally_loop())]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            self.write_tally()
            await self.observer.stop()
            await self._http.aclose()
            await self.limiter.close()

    # --- authentication ------------------------------------------------------------------

    def _authenticate(self, authorization: str, api_key: str) -> Caller | Reply:
        """The caller that the `Authorization: Bearer` or `X-API-Key` header names, or a refusal."""
        text = authorization[7:].strip() if authorization[:7].lower() == "bearer " else api_key
        if not text:
            return self._deny(401, "missing-credentials", "an API key or token is required")
        now = self.clock()
        if text.startswith("bst1."):
            claims = self.minter.check(text, now)
            key = self._state.keys.get(claims.key_id) if claims else None
            if claims is None or key is None:
                return self._deny(401, "bad-token", "the token is not valid")
            caller = Caller(key, claims.model)
        else:
            parts = split_key(text)
            key = self._state.keys.get(parts[0]) if parts else None
            if parts is None or key is None or not secret_matches(key, parts[1]):
                return self._deny(401, "bad-key", "the API key is not valid")
            caller = Caller(key)
        if key.revoked:
            return self._deny(401, "revoked", "the API key was revoked")
        if key.expired(now):
            return self._deny(401, "expired", "the API key has expired")
        if key.suspended_reason is not None:
            return self._deny(403, "suspended", "the API key is suspended")
        return caller

    def _request_caller(self, request: Request) -> Caller | Reply:
        """`_authenticate` for a Starlette route; the key id is kept for its audit entry."""
        headers = request.headers
        caller = self._authenticate(headers.get("authorization", ""), headers.get("x-api-key", ""))
        if isinstance(caller, Caller):
            request.state.key_id = caller.key.key_id
        return caller

    def _deny(self, status: int, reason: str, message: str) -> Reply:
        self.metrics.refusals.labels(reason).inc()
        headers = (("www-authenticate", 'Bearer realm="bastion"'),) if status == 401 else ()
        return _error(status, message, reason, headers)

    def _scope(self, caller: Caller, model: str, operation: str, version: str | None = None) -> Reply | None:
        key = caller.key
        if operation not in key.operations or not key.allows_model(model) or (
            caller.token_model is not None and caller.token_model != model
        ):
            return self._deny(403, "out-of-scope", "the API key may not do this")
        if model not in self.models or (version is not None and version != str(self.models[model].version)):
            return self._deny(404, "unknown-model", "no such model")
        if model in self._state.disabled:
            return self._deny(503, "model-disabled", "the model is not available")
        return None

    # --- records -------------------------------------------------------------------------

    def _anonymous(self, source: str, action: str, refusal: Reply) -> Reply:
        """Count a refusal of a caller without a valid key; past its source's budget, a 429.

        Nobody is accountable for these requests, so they get no entry each: the tally writes
        one entry per source and reason per interval (a name in the URL is not kept at all).
        """
        if not self.tally.allow(source):
            self.metrics.refusals.labels("refusals-limited").inc()
            refusal = _error(429, "too many requests", "refusals-limited", (("retry-after", "1"),))
        self.tally.count(source, f"{action}.refused", refusal.refusal, refusal.status)
        return refusal

    def _unrecordable(self, source: str, action: str) -> Reply:
        """The refusal while the audit log cannot be written: nothing is answered unrecorded."""
        self.metrics.refusals.labels("audit-unavailable").inc()
        refusal = _error(503, "the service is unavailable", "audit-unavailable", RETRY_UNRECORDABLE)
        self.tally.count(source, f"{action}.refused", refusal.refusal, refusal.status)
        return refusal

    def record(self, key_id: str, what: str, subject: str, **details: Any) -> None:
        """Queue an audit entry; the writer commits it with others (flushed at shutdown)."""
        self.observer.record(AuditEvent(key_id, what, subject, details))

    # --- inference -----------------------------------------------------------------------

    async def infer(
        self,
        name: str,
        version: str | None,
        headers: Iterable[tuple[bytes, bytes]],
        receive: Receive,
        source: str = "unknown",
    ) -> Reply:
        """Answer one V2 inference request for model `name`: every check, the model, the record.

        `headers` and `receive` are the request's ASGI headers and receive channel; `source`
        is the client's address, for the tally of anonymous refusals.
        """
        started = time.perf_counter()
        if not self.observer.ready:
            return self._unrecordable(source, "infer")
        authorization, api_key, declared = _infer_headers(headers)
        caller = self._authenticate(authorization, api_key)
        if isinstance(caller, Reply):
            return self._anonymous(source, "infer", caller)
        key = caller.key
        refused = self._scope(caller, name, "infer", version)
        if refused is not None:
            self.record(key.key_id, "infer.refused", bounded_name(name), status=refused.status, reason=refused.refusal)
            return refused
        model = self.models[name]
        ref = self._refs[name]
        try:
            body = await read_body(receive, declared, model.spec.max_request_bytes)
        except ClientGone:
            self.record(key.key_id, "infer.refused", ref, status=499, reason="client-gone")
            return Reply(499)
        network = source_network(source)
        try:
            if body is None:
                raise InvalidRequest("too-large")
            parsed = parse_infer(body, model.spec)
        except InvalidRequest as invalid:
            return await self._refuse_invalid(invalid, key, model, network)
        rows = int(parsed.rows.shape[0])
        if rows > key.max_rows:
            self.metrics.refusals.labels("too-many-rows").inc()
            self.record(key.key_id, "infer.refused", ref, status=400, reason="too-many-rows", rows=rows)
            return _error(400, f"this key may send at most {key.max_rows} rows per request", "too-many-rows")
        limited = await self._limit(key, name, rows)
        if limited is not None:
            self.record(key.key_id, "infer.refused", ref, status=limited.status, reason=limited.refusal, rows=rows)
            return limited
        judge = self.judges.get(name)
        judged = None if judge is None else await judge.predict(parsed.rows)
        verdict = self.guard.check(name, key.key_id, key.account, network, parsed.rows, judged)
        if verdict.alarms:
            await self._on_stream_alarms(verdict, key, model)
        if verdict.refuse and self.alarm_policy.action != "alert":
            return self._refuse_rows(key, ref, rows)
        probabilities = await self._predict(key.key_id, name, parsed.rows)
        if isinstance(probabilities, Reply):
            return probabilities
        outputs = shape_outputs(probabilities, model.spec.labels, key.output, key.precision)
        alarms = self.observer.observe(key.key_id, name, parsed.rows, verdict.rows)
        elapsed = time.perf_counter() - started
        self._answered[name].observe(elapsed)
        logged = {} if self.input_logging is None else {"inputs": self.input_logging.render(parsed.rows)}
        self.record(
            key.key_id, "infer", ref, status=200, rows=rows,
            latency_ms=round(elapsed * 1000, 3), request_id=parsed.request_id, **logged,
        )
        for alarm in alarms:
            await self._on_alarm(alarm, model)
        return Reply(200, infer_response(name, model.version, parsed.request_id, outputs))

    async def _refuse_invalid(self, invalid: InvalidRequest, key: ApiKey, model: ServedModel, network: str) -> Reply:
        """The generic 400 for a body that is not a valid request.

        Rows that were well formed but out of bounds are a probe: they are charged like any rows
        (past the key's limits the refusal is the 429), judged and counted by the detectors.
        """
        self.metrics.refusals.labels("invalid-input").inc()
        reply = _error(400, GENERIC_REFUSAL, "invalid-input")
        reason = f"invalid-input:{invalid.reason}"
        if invalid.rows is None:
            self.record(key.key_id, "infer.refused", model.ref, status=400, reason=reason)
            return reply
        limited = await self._limit(key, model.name, int(invalid.rows.shape[0]))
        if limited is not None:
            reply, reason = limited, limited.refusal
        verdict = self.guard.check(model.name, key.key_id, key.account, network, invalid.rows)
        await self._on_stream_alarms(verdict, key, model)
        self.record(key.key_id, "infer.refused", model.ref, status=reply.status, reason=reason)
        for alarm in self.observer.observe(key.key_id, model.name, invalid.rows, verdict.rows):
            await self._on_alarm(alarm, model)
        return reply

    def _refuse_rows(self, key: ApiKey, ref: str, rows: int) -> Reply:
        """Refuse a request the before-answer checks stopped: 403 under suspend, 429 under throttle."""
        if self.alarm_policy.action == "suspend":
            current = self._state.keys.get(key.key_id)
            if current is not None and current.suspended_reason is not None:  # this request's alarm suspended it
                self.metrics.refusals.labels("suspended").inc()
                self.record(key.key_id, "infer.refused", ref, status=403, reason="suspended", rows=rows)
                return _error(403, "the API key is suspended", "suspended")
            self.metrics.refusals.labels("alarm").inc()
            self.record(key.key_id, "infer.refused", ref, status=403, reason="alarm", rows=rows)
            return _error(403, "these rows are refused", "alarm")
        self.metrics.refusals.labels("alarm").inc()
        self.record(key.key_id, "infer.refused", ref, status=429, reason="alarm", rows=rows)
        return _error(429, "too many requests", "alarm", (("retry-after", "5"),))

    async def _predict(self, key_id: str, name: str, rows: NDArray[np.float32]) -> NDArray[np.float64] | Reply:
        """The model's probabilities for `rows` (batched with other requests), or a generic 500."""
        try:
            return await self.batchers[name].predict(rows)
        except Exception:
            log.exception("the model %s failed", self._refs[name])
            self.metrics.refusals.labels("error").inc()
            self.record(key_id, "infer.error", self._refs[name], status=500, reason="model-error")
            return _error(500, "internal error", "error")

    async def _limit(self, key: ApiKey, name: str, rows: int) -> Reply | None:
        """None if the key's and its account's limits let `rows` more rows through; else a refusal."""
        rate = key.throttle or key.rate
        subjects = (SubjectLimit(f"key:{key.key_id}", rate, key.quota), self.account_limit(key.account, name))
        try:
            decision = await self.limiter.check_many(name, subjects, rows)
        except BackendUnavailable:
            return self._deny(503, "limits-unavailable", "the service is unavailable")
        if decision.allowed:
            return None
        reason = decision.refusal
        self.metrics.refusals.labels(reason).inc()
        # infinite: no wait would ever let it through, so no Retry-After
        wait = (("retry-after", str(max(1, math.ceil(decision.retry_after)))),) if math.isfinite(decision.retry_after) else ()
        return _error(429, "too many requests", reason, wait)

    async def _infer_route(self, request: Request) -> Response:
        """/infer through Starlette (GatewayApp answers it first; this serves a bare Starlette mount)."""
        params = request.path_params
        reply = await self.infer(
            params["name"], params.get("version"), request.scope["headers"], request.receive, client_source(request.scope)
        )
        return reply.response()

    async def _alarm_from_observer(self, alarm: Alarm, model: str) -> None:
        if model in self.models:
            await self._on_alarm(alarm, self.models[model])

    async def _on_alarm(
        self,
        alarm: Alarm,
        model: ServedModel,
        *,
        stream: str = "",
        targets: tuple[str, ...] | None = None,
        actor: str = "",
    ) -> None:
        """Record an alarm and act on the keys it concerns (by default the key it names).

        `stream` names the traffic it was raised on ("account:acme", ...; empty: one key's);
        `targets` are the key ids the action falls on: empty for an alert-only alarm; `actor`
        is the key whose request raised it (default the alarm's own key).
        """
        policy = self.alarm_policy
        action = policy.action if targets is None or targets else "alert"
        self.metrics.alarms.labels(alarm.kind, action).inc()
        self.record(  # the actor is the key whose request raised it; `stream` says whose traffic
            actor or alarm.key_id, "alarm", model.ref, kind=alarm.kind, queries=alarm.queries, score=alarm.score,
            threshold=alarm.threshold, action=action, message=alarm.message,
            # Stream alarms are raised by a request's rows before it is answered (or refused).
            **({"stream": stream, "keys": list(targets or ()), "before_answer": True} if stream else {}),
        )
        for key_id in targets if targets is not None else (alarm.key_id,):
            await self._act_on_key(key_id, alarm.kind, action)
        if policy.webhook and self._http is not None:
            payload = {"alarm": alarm.kind, "key_id": alarm.key_id, "model": model.ref, "queries": alarm.queries,
                       "score": alarm.score, "threshold": alarm.threshold, "action": action,
                       "message": alarm.message, "stream": stream or f"key:{alarm.key_id}"}
            with contextlib.suppress(httpx.HTTPError):
                await self._http.post(policy.webhook, json=payload)

    async def _act_on_key(self, key_id: str, kind: str, action: str) -> None:
        """Throttle or suspend one key here at once, and in the database for every replica and restart."""
        reason = f"alarm {kind}"
        key = self._state.keys.get(key_id)
        if action == "throttle":
            throttle = self.alarm_policy.throttle
            if key is not None:
                self._throttling[key_id] = throttle
                self._state.keys[key_id] = replace(key, throttle=throttle)
            await asyncio.to_thread(self.store.throttle_on_alarm, key_id, reason, throttle)
        elif action == "suspend":
            if key is not None:
                self._suspending[key_id] = reason
                self._state.keys[key_id] = replace(key, suspended_reason=reason)
            await asyncio.to_thread(self.store.suspend_on_alarm, key_id, reason)

    async def _on_stream_alarms(self, verdict: RowsVerdict, key: ApiKey, model: ServedModel) -> None:
        """Act on the alarms the before-answer checks raised: on the key, every key of the account,
        the key that sent from the network; the model's own stream only alerts."""
        for raised in verdict.alarms:
            targets: tuple[str, ...]
            if raised.kind is StreamKind.ACCOUNT:
                targets = tuple(sorted(k.key_id for k in self._state.keys.values() if k.account == key.account))
            elif raised.kind is StreamKind.MODEL:
                targets = ()
            else:
                targets = (key.key_id,)
            await self._on_alarm(raised.alarm, model, stream=raised.stream, targets=targets, actor=key.key_id)

    # --- the other routes ----------------------------------------------------------------

    async def model_metadata(self, request: Request) -> Reply:
        name = request.path_params["name"]
        caller = self._request_caller(request)
        if isinstance(caller, Reply):
            return caller
        refused = self._scope(caller, name, "metadata", request.path_params.get("version"))
        if refused is not None:
            return refused
        model = self.models[name]
        return Reply(200, model_metadata(name, model.version, model.spec, caller.key.output))

    async def model_ready(self, request: Request) -> Reply:
        name = request.path_params["name"]
        caller = self._request_caller(request)
        if isinstance(caller, Reply):
            return caller
        refused = self._scope(caller, name, "metadata", request.path_params.get("version"))
        return refused if refused is not None else Reply(200)

    async def server_ready(self, request: Request) -> Reply:
        """Ready: models loaded and every answer can be recorded (the observer writes)."""
        caller = self._request_caller(request)
        if isinstance(caller, Reply):
            return caller
        if not self.observer.ready:
            return self._deny(503, "audit-unavailable", "the service is unavailable")
        return Reply(200 if self.models else 503)

    async def server_live(self, request: Request) -> Reply:
        """Live: the process answers (a restart would not help while only the audit log is down)."""
        caller = self._request_caller(request)
        return caller if isinstance(caller, Reply) else Reply(200)

    async def server_metadata(self, request: Request) -> Reply:
        caller = self._request_caller(request)
        if isinstance(caller, Reply):
            return caller
        return Reply(200, orjson.dumps({"name": "bastion", "version": "0.1.0", "extensions": []}))

    async def issue_token(self, request: Request) -> Reply:
        """POST /v2/tokens {"model": ..., "lifetime": seconds}: a short-lived token for one model."""
        caller = self._request_caller(request)
        if isinstance(caller, Reply):
            return caller
        if caller.token_model is not None:
            return self._deny(403, "token-from-token", "a token cannot issue tokens")
        if "token" not in caller.key.operations:  # before reading a byte of the body
            return self._deny(403, "out-of-scope", "the API key may not do this")
        try:
            body = await read_body(request.receive, request.headers.get("content-length", "").encode() or None, TOKEN_BODY_BYTES)
        except ClientGone:
            return Reply(499)
        if body is None:
            return _error(413, "the request body is too large", "too-large")
        try:
            wanted = orjson.loads(body)
            model, lifetime = str(wanted["model"]), int(wanted.get("lifetime", 300))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return _error(400, "send {\"model\": NAME, \"lifetime\": SECONDS}")
        refused = self._scope(caller, model, "token")
        if refused is not None:
            return refused
        token, expires = self.minter.issue(caller.key.key_id, model, lifetime, self.clock())
        return Reply(200, orjson.dumps({"token": token, "expires": expires, "model": model}))

    def _audited(
        self, action: str, handler: Callable[[Request], Awaitable[Reply]], *, needs_record: bool = True
    ) -> Callable[[Request], Awaitable[Response]]:
        """`handler` as a Starlette endpoint, its outcome written to the audit log.

        While the log cannot be written the call is refused (503) unless `needs_record` is
        False (liveness); refusals of callers without a valid key are tallied, not written each.
        """

        async def audited(request: Request) -> Response:
            source = client_source(request.scope)
            if needs_record and not self.observer.ready:
                return self._unrecordable(source, action).response()
            reply = await handler(request)
            key_id = getattr(request.state, "key_id", None)
            if key_id is None and reply.status >= 400:
                return self._anonymous(source, action, reply).response()
            what = f"{action}.refused" if reply.status >= 400 else action
            subject = bounded_name(request.path_params.get("name", "-"))
            details: dict[str, int | str] = {"status": reply.status}
            if reply.refusal:
                details["reason"] = reply.refusal
            self.record(key_id or "-", what, subject, **details)
            return reply.response()

        return audited

    def app(self) -> GatewayApp:
        """The ASGI application: inference on the lean path, the rest through Starlette."""
        metadata, ready = self._audited("metadata", self.model_metadata), self._audited("ready", self.model_ready)
        server_ready = self._audited("ready", self.server_ready)
        routes = [
            Route("/v2/health/ready", server_ready, methods=["GET"]),
            Route("/v2/health/live", self._audited("live", self.server_live, needs_record=False), methods=["GET"]),
            Route("/v2", self._audited("metadata", self.server_metadata), methods=["GET"]),
            Route("/v2/tokens", self._audited("token", self.issue_token), methods=["POST"]),
            Route("/v2/models/{name}", metadata, methods=["GET"]),
            Route("/v2/models/{name}/ready", ready, methods=["GET"]),
            Route("/v2/models/{name}/infer", self._infer_route, methods=["POST"]),
            Route("/v2/models/{name}/versions/{version}", metadata, methods=["GET"]),
            Route("/v2/models/{name}/versions/{version}/ready", ready, methods=["GET"]),
            Route("/v2/models/{name}/versions/{version}/infer", self._infer_route, methods=["POST"]),
        ]
        return GatewayApp(self, Starlette(routes=routes, lifespan=self.lifespan))


class GatewayApp:
    """The gateway's ASGI application: POST .../infer on a path of its own, the rest to Starlette.

    An unexpected error on the inference path is answered with a generic 500 and recorded in the
    audit log, like every other outcome.
    """

    def __init__(self, gateway: Gateway, routes: Starlette) -> None:
        self.gateway = gateway
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"") > MAX_URL_BYTES:
                refusal = _error(414, "the URL is too long", "url-too-long")
                await self._send(self.gateway._anonymous(client_source(scope), "request", refusal), send)
                return
            if scope["method"] == "POST":
                match = INFER_PATH.fullmatch(scope["path"])
                if match is not None:
                    await self._infer(match[1], match[2], scope, receive, send)
                    return
        await self.routes(scope, receive, send)

    async def _infer(self, name: str, version: str | None, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            reply = await self.gateway.infer(name, version, scope["headers"], receive, client_source(scope))
        except Exception:
            log.exception("inference on %s failed", bounded_name(name))
            self.gateway.metrics.refusals.labels("error").inc()
            self.gateway.record("-", "infer.error", bounded_name(name), status=500, reason="internal-error")
            reply = _error(500, "internal error", "error")
        await self._send(reply, send)

    @staticmethod
    async def _send(reply: Reply, send: Send) -> None:
        await send({"type": "http.response.start", "status": reply.status, "headers": reply.raw_headers()})
        await send({"type": "http.response.body", "body": reply.body})
