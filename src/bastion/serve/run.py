"""Assemble a gateway from a registry and settings, and run it: inference and admin ports.

The inference port speaks the Open Inference Protocol; the admin port (keys, kill switch,
metrics) listens separately so that it can stay on a private interface.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import assert_never

import uvicorn

from bastion.audit import AuditEvent, AuditLog
from bastion.errors import ConfigError
from bastion.http_limits import HttpLimits, server_config
from bastion.registry import Principal, Registry
from bastion.serve.anonymous import RefusalLimit
from bastion.serve.gateway import DEFAULT_BUDGET_SHARE, TOKEN_BODY_BYTES, AlarmPolicy, Gateway, InputLogging
from bastion.serve.keys import KeyStore
from bastion.serve.limits import make_limiter
from bastion.serve.loader import LoadRefused, ServedModel, load_promoted
from bastion.serve.observer import InlineObserver, Observer, ObserverMode, ProcessObserver, RetrySchedule
from bastion.serve.tokens import TokenMinter

AUDIT_CHAIN = "gateway"


@dataclass(frozen=True)
class GatewaySettings:
    """How a gateway is set up; every field has a command-line flag in `bastion serve`."""

    models: tuple[str, ...]
    stage: str = "production"
    trusted_keys: tuple[Path, ...] = ()  # empty: the keys the policy requires for `stage`
    trusted_types: tuple[str, ...] = ()  # extra types skops may load
    registry_key: Path | None = None  # the key promotions must be signed with; None: the registry's registry.pub
    redis_url: str | None = None
    redis_prefix: str = "bastion:limits:"  # replicas sharing limits share this prefix
    alarm_policy: AlarmPolicy = field(default_factory=AlarmPolicy)
    refresh_seconds: float = 1.0
    log_inputs: bool = False  # write request inputs to the audit log
    masked_features: tuple[int, ...] = ()  # ...with these feature indices masked
    observer: str = ObserverMode.INLINE  # an ObserverMode: where detectors and audit writing run
    observer_retry: RetrySchedule = field(default_factory=RetrySchedule)  # database retries, restarts
    refusal_limit: RefusalLimit = field(default_factory=RefusalLimit)  # anonymous refusals per source
    tally_interval: float = 10.0  # seconds of anonymous refusals written as one entry per source
    http: HttpLimits = field(default_factory=HttpLimits)  # bodies, read timeouts, connections
    # An account's monthly rows on a model when its owner set none: this share of the model's
    # measured extraction cost (None: no budget from the cost).
    account_budget_share: float | None = DEFAULT_BUDGET_SHARE
    host: str = "127.0.0.1"
    port: int = 8000
    admin_host: str = "127.0.0.1"
    admin_port: int = 8001


@dataclass
class Assembled:
    """A gateway and what it holds open: close it with `close()` (flushes the audit log)."""

    gateway: Gateway
    registry: Registry
    audit_log: AuditLog
    observer: Observer
    refused: dict[str, str]

    def close(self) -> None:
        self.observer.close()
        self.audit_log.checkpoint()
        self.registry.close()


def assemble(registry: Registry, caller: Principal, settings: GatewaySettings) -> Assembled:
    """Load every named model that passes its checks; refuse (and record) the others."""
    if not settings.models:
        raise ConfigError("name at least one model to serve", hint="bastion serve --model NAME")
    trusted = settings.trusted_keys or registry.policy.gate.requirements_for(settings.stage).signature_keys
    audit_log = AuditLog(registry.engine, AUDIT_CHAIN, signing_key=registry.signing_key, checkpoint_every=1000, witness=registry.witness)
    loaded: dict[str, ServedModel] = {}
    refused: dict[str, str] = {}
    for name in settings.models:
        try:
            model = load_promoted(
                registry, caller, name, settings.stage, trusted, trusted_types=settings.trusted_types,
                registry_key=settings.registry_key,
            )
        except LoadRefused as err:
            refused[name] = err.message
            audit_log.append(AuditEvent(caller.name, "model.load.refused", err.ref, {"reasons": list(err.reasons)}))
            continue
        loaded[name] = model
        audit_log.append(
            AuditEvent(caller.name, "model.load", model.ref, {"root_digest": model.root_digest, "stage": settings.stage})
        )
    try:
        mode = ObserverMode(settings.observer)
    except ValueError:
        raise ConfigError(f"unknown observer {settings.observer!r}", hint="Use inline or process.") from None
    profiles = {name: model.spec.profile for name, model in loaded.items() if model.spec.profile}
    observer: Observer
    match mode:
        case ObserverMode.PROCESS:
            observer = ProcessObserver(registry.config.home, AUDIT_CHAIN, profiles, retry=settings.observer_retry)
        case ObserverMode.INLINE:
            observer = InlineObserver(audit_log, profiles)
        case _:  # pragma: no cover
            assert_never(mode)
    gateway = Gateway(
        loaded,
        KeyStore(registry.engine, audit_log),
        make_limiter(settings.redis_url, settings.redis_prefix),
        TokenMinter.from_file(registry.config.home / "gateway-token.secret"),
        observer,
        alarm_policy=settings.alarm_policy,
        refresh_seconds=settings.refresh_seconds,
        input_logging=InputLogging(frozenset(settings.masked_features)) if settings.log_inputs else None,
        refusal_limit=settings.refusal_limit,
        tally_interval=settings.tally_interval,
        account_budget_share=settings.account_budget_share,
    )
    return Assembled(gateway, registry, audit_log, observer, refused)


ADMIN_BODY_BYTES = 64 * 1024
OTHER_BODY_BYTES = 64 * 1024


def gateway_limits(gateway: Gateway, base: HttpLimits) -> HttpLimits:
    """`base` with body caps for the gateway's routes: the largest model's on inference, a few
    KB on the token route, and little elsewhere (the other routes take no body)."""
    largest = max((model.spec.max_request_bytes for model in gateway.models.values()), default=OTHER_BODY_BYTES)
    routes = (("/v2/models/", largest), ("/v2/tokens", TOKEN_BODY_BYTES), *base.body_limits)
    return replace(base, max_body=min(base.max_body, OTHER_BODY_BYTES), body_limits=routes)


def server_configs(assembled: Assembled, settings: GatewaySettings) -> tuple[uvicorn.Config, uvicorn.Config]:
    """The inference and admin servers' configurations, each within its HTTP limits."""
    from bastion.serve.admin import create_admin_app  # noqa: PLC0415

    # No proxy headers: X-Forwarded-For from any client would otherwise rename the caller.
    options = {"log_level": "warning", "server_header": False, "access_log": False, "proxy_headers": False}
    inference = server_config(
        assembled.gateway.app(), gateway_limits(assembled.gateway, settings.http),
        host=settings.host, port=settings.port, **options,
    )
    admin = server_config(
        create_admin_app(assembled.gateway, assembled.registry),
        replace(settings.http, max_body=min(settings.http.max_body, ADMIN_BODY_BYTES)),
        host=settings.admin_host, port=settings.admin_port, **options,
    )
    return inference, admin


class _Quiet(uvicorn.Server):
    """A uvicorn server without its own signal handling: `serve_forever` stops both together."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve_forever(assembled: Assembled, settings: GatewaySettings) -> None:
    """Serve both ports until SIGINT or SIGTERM; the caller closes `assembled` afterwards."""
    inference_config, admin_config = server_configs(assembled, settings)
    inference, admin = _Quiet(inference_config), _Quiet(admin_config)
    loop = asyncio.get_running_loop()

    def stop() -> None:
        inference.should_exit = True
        admin.should_exit = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    try:
        await asyncio.gather(inference.serve(), admin.serve())
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def run_gateway(assembled: Assembled, settings: GatewaySettings) -> None:
    """Serve until SIGINT or SIGTERM, on uvloop where it is installed (Linux and macOS)."""
    try:
        import uvloop  # noqa: PLC0415
    except ImportError:  # pragma: no cover - Windows
        factory = None
    else:
        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(serve_forever(assembled, settings))
