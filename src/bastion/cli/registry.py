"""`bastion registry ...`, `bastion gate check` and `bastion audit ...`: thin wiring over bastion.registry.

Every command but `registry init` authenticates with an API token (`BASTION_TOKEN`, or
`--token-file`); the registry is the folder named by `--registry` or `BASTION_REGISTRY`.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from datetime import timedelta
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from bastion.registry import Principal, Registry

F = TypeVar("F", bound=Callable[..., Any])
FORMATS = click.Choice(["text", "json"])


REGISTRY_OPTION = click.option(
    "--registry",
    "home",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="BASTION_REGISTRY",
    default=".bastion-registry",
    show_default=True,
    help="The registry folder (holds registry.yaml) [env BASTION_REGISTRY].",
)


def _registry_options(func: F) -> F:
    """--registry, --token-file and --format on a command; opens the registry and the caller."""

    @REGISTRY_OPTION
    @click.option(
        "--token-file",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="Read the API token from this file instead of BASTION_TOKEN.",
    )
    @click.option("--format", "fmt", type=FORMATS, default="text", show_default=True, help="Output format.")
    @wraps(func)
    def wrapper(home: Path, token_file: Path | None, fmt: str, **kwargs: Any) -> Any:
        from bastion.registry import Registry  # noqa: PLC0415

        token = token_file.read_text(encoding="utf-8").strip() if token_file else os.environ.get("BASTION_TOKEN")
        registry = Registry.open(home)
        try:
            caller = registry.authenticate(token)
            return func(registry, caller, fmt, **kwargs)
        finally:
            registry.close()

    return wrapper  # type: ignore[return-value]


def _ref(text: str) -> tuple[str, int | None]:
    match = re.fullmatch(r"([A-Za-z0-9._-]+)(?:@(\d+))?", text)
    if not match:
        raise click.BadParameter(f"{text!r} is not MODEL or MODEL@VERSION")
    return match[1], int(match[2]) if match[2] else None


def _duration(text: str) -> timedelta:
    match = re.fullmatch(r"(\d+)([smhd])", text)
    if not match:
        raise click.BadParameter(f"{text!r} is not a duration like 90m, 12h or 30d")
    unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[match[2]]
    return timedelta(**{unit: int(match[1])})


def _emit(fmt: str, record: Any, text: str) -> None:
    from bastion.render.registry_text import as_json  # noqa: PLC0415

    click.echo(as_json(record) if fmt == "json" else text)


@click.group("registry")
def registry_group() -> None:
    """Model registry: versions, stages, roles, approvals and promotions through the gate.

    Start with `bastion registry init DIR`, which prints the administrator's token once;
    then `export BASTION_TOKEN=...` and `export BASTION_REGISTRY=DIR`.
    """


@registry_group.command("init")
@click.argument("home", type=click.Path(file_okay=False, path_type=Path))
@click.option("--database", help="SQLAlchemy URL [default: sqlite in HOME]; e.g. postgresql://user@host/db.")
@click.option("--blobs", help="Blob store: a folder or s3://bucket/prefix [default: HOME/blobs].")
@click.option("--admin", default="admin", show_default=True, help="Name of the first administrator.")
def init_command(home: Path, database: str | None, blobs: str | None, admin: str) -> None:
    """Create a registry in HOME: config, default policy, signing key, schema and the first admin."""
    from bastion.registry import Registry, init_registry  # noqa: PLC0415

    config = init_registry(home, database=database, blobs=blobs)
    registry = Registry(config)
    try:
        token = registry.bootstrap(admin)
    finally:
        registry.close()
    click.echo(f"registry created in {home}; policy: {config.policy}", err=True)
    click.echo(f"token for {admin} (shown once; keep it secret):", err=True)
    click.echo(token)


@registry_group.command("serve")
@REGISTRY_OPTION
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8700, show_default=True, type=click.IntRange(1, 65535))
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64), help="Server processes.")
@click.option("--max-connections", default=1000, show_default=True, type=click.IntRange(2),
              help="Open connections per worker; past it requests get 503.")
@click.option("--read-timeout", default=30.0, show_default=True, type=click.FloatRange(0.1, 3600),
              help="Seconds a request body or head may stall before the client is dropped.")
def serve_command(home: Path, host: str, port: int, workers: int, max_connections: int, read_timeout: float) -> None:
    """Serve the registry's HTTP API (every route needs `Authorization: Bearer <token>`).

    Request bodies are capped (blob uploads at the registry's blob limit, everything else at
    8 MB) before they are read, stalled bodies and heads are dropped after --read-timeout, and
    connections are bounded by --max-connections.
    """
    import uvicorn  # noqa: PLC0415

    from bastion.http_limits import APP_VARIABLE, LIMITS_VARIABLE, EnvironmentHttpTools, HttpLimits  # noqa: PLC0415
    from bastion.registry import load_config  # noqa: PLC0415
    from bastion.registry.api import DEFAULT_MAX_BLOB_BYTES  # noqa: PLC0415

    load_config(home)  # fail here, with the reason, not in a worker
    limits = HttpLimits(
        max_body=8 * 1024 * 1024, body_limits=(("/v1/blobs/", DEFAULT_MAX_BLOB_BYTES),), read_timeout=read_timeout,
        head_timeout=read_timeout, max_connections=max_connections,
    )
    os.environ["BASTION_REGISTRY"] = str(home.resolve())
    os.environ[APP_VARIABLE] = "bastion.registry.api:app_from_environment"
    os.environ[LIMITS_VARIABLE] = limits.to_json()
    click.echo(f"registry {home} on http://{host}:{port} (docs off; see README)", err=True)
    uvicorn.run(
        "bastion.http_limits:app_from_environment", factory=True, host=host, port=port, workers=workers,
        log_level="info", server_header=False, http=EnvironmentHttpTools, limit_concurrency=max_connections,
        timeout_keep_alive=limits.keep_alive,
    )


@registry_group.command("register")
@click.argument("model")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--source", default="", help="Where the model came from, e.g. hf://org/name.")
@click.option("--licence", default="", help="Licence id, e.g. apache-2.0.")
@click.option("--training-data-digest", default="", help="sha256 of the training data's manifest.")
@click.option("--parent", default="", help="MODEL@VERSION this one derives from.")
@click.option("--signature", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Signature bundle.")
@click.option("--assessment", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Assessment JSON.")
@click.option("--description", default="")
@_registry_options
def register_command(
    registry: Registry, caller: Principal, fmt: str, model: str, path: Path, source: str, licence: str,
    training_data_digest: str, parent: str, signature: Path | None, assessment: Path | None, description: str,
) -> None:
    """Store PATH (a model file or folder) as the next version of MODEL."""
    from bastion.registry.records import Lineage  # noqa: PLC0415
    from bastion.render.registry_text import version_text  # noqa: PLC0415

    version = registry.register(
        caller, model, path, lineage=Lineage(source, licence, training_data_digest, parent),
        signature=signature, assessment=assessment, description=description,
    )
    _emit(fmt, version, version_text(version))


@registry_group.command("list")
@click.argument("model", required=False)
@_registry_options
def list_command(registry: Registry, caller: Principal, fmt: str, model: str | None) -> None:
    """The models you may read, or MODEL's versions."""
    from bastion.render.registry_text import models_text, version_text  # noqa: PLC0415

    if model:
        found = registry.versions(caller, model)
        _emit(fmt, found, "\n".join(version_text(v) for v in found))
    else:
        summaries = registry.models(caller)
        _emit(fmt, summaries, models_text(summaries))


@registry_group.command("show")
@click.argument("ref")
@_registry_options
def show_command(registry: Registry, caller: Principal, fmt: str, ref: str) -> None:
    """One version (MODEL@VERSION, or MODEL for the newest)."""
    from bastion.render.registry_text import version_text  # noqa: PLC0415

    version = registry.version(caller, *_ref(ref))
    _emit(fmt, version, version_text(version))


@registry_group.command("approve")
@click.argument("ref")
@click.option("--stage", required=True, help="The stage the approval is for.")
@_registry_options
def approve_command(registry: Registry, caller: Principal, fmt: str, ref: str, stage: str) -> None:
    """Approve MODEL@VERSION for STAGE (never a version you registered, by default)."""
    model, number = _ref(ref)
    version = registry.version(caller, model, number)
    approval = registry.approve(caller, model, version.number, stage)
    _emit(fmt, approval, f"{caller.name} approved {version.ref} for {stage}")


@registry_group.command("promote")
@click.argument("ref")
@click.option("--stage", required=True, help="The stage to move the version to.")
@_registry_options
def promote_command(registry: Registry, caller: Principal, fmt: str, ref: str, stage: str) -> None:
    """Re-check MODEL@VERSION against STAGE's policy and move it there; exit 1 if refused."""
    from bastion.render.registry_text import decision_text  # noqa: PLC0415

    model, number = _ref(ref)
    version = registry.version(caller, model, number)
    decision = registry.promote(caller, model, version.number, stage)
    _emit(fmt, decision, decision_text(decision))
    sys.exit(0 if decision.allowed else 1)


@registry_group.group("user")
def user_group() -> None:
    """Users and service accounts."""


@user_group.command("add")
@click.argument("name")
@click.option("--kind", type=click.Choice(["user", "service"]), default="user", show_default=True)
@click.option("--role", type=click.Choice(["reader", "contributor", "approver", "admin"]), help="Grant this role too.")
@click.option("--model", default="*", show_default=True, help="The model the role is for ('*': every model).")
@_registry_options
def user_add_command(
    registry: Registry, caller: Principal, fmt: str, name: str, kind: str, role: str | None, model: str
) -> None:
    """Add a user or service account (admin only)."""
    from bastion.registry import Role  # noqa: PLC0415

    registry.add_principal(caller, name, kind)
    if role:
        registry.grant(caller, name, Role.parse(role), model)
    _emit(fmt, {"name": name, "kind": kind, "role": role, "model": model}, f"added {kind} {name}")


@registry_group.command("grant")
@click.argument("name")
@click.argument("role", type=click.Choice(["reader", "contributor", "approver", "admin"]))
@click.option("--model", default="*", show_default=True, help="The model the role is for ('*': every model).")
@_registry_options
def grant_command(registry: Registry, caller: Principal, fmt: str, name: str, role: str, model: str) -> None:
    """Give NAME ROLE on a model or on every model (admin only)."""
    from bastion.registry import Role  # noqa: PLC0415

    registry.grant(caller, name, Role.parse(role), model)
    _emit(fmt, {"name": name, "role": role, "model": model}, f"{name} is {role} on {model}")


def _principal_switch(disabled: bool) -> click.Command:
    """`user disable` or `user enable`: one library call each, admin only and audited."""
    action = "disable" if disabled else "enable"
    help_text = "Disable NAME: its tokens stop working at once." if disabled else "Enable NAME again."

    @click.command(action, help=f"{help_text} (admin only, audited)")
    @click.argument("name")
    @_registry_options
    def command(registry: Registry, caller: Principal, fmt: str, name: str) -> None:
        (registry.disable_principal if disabled else registry.enable_principal)(caller, name)
        _emit(fmt, {"name": name, "disabled": disabled}, f"{action}d {name}")

    return command


for _disabled in (True, False):
    user_group.add_command(_principal_switch(_disabled))


@registry_group.command("ungrant")
@click.argument("name")
@click.option("--model", default="*", show_default=True, help="The model whose role is removed ('*': the grant on every model).")
@_registry_options
def ungrant_command(registry: Registry, caller: Principal, fmt: str, name: str, model: str) -> None:
    """Remove the role NAME holds on a model, or its grant on every model (admin only)."""
    registry.remove_grant(caller, name, model)
    _emit(fmt, {"name": name, "model": model, "removed": True}, f"{name} no longer holds a role on {model}")


@registry_group.group("token")
def token_group() -> None:
    """API tokens (admin only)."""


@token_group.command("list")
@click.argument("name")
@_registry_options
def token_list_command(registry: Registry, caller: Principal, fmt: str, name: str) -> None:
    """NAME's tokens: id, state, creation and expiry."""
    from bastion.render.registry_text import tokens_text  # noqa: PLC0415

    found = registry.tokens_of(caller, name)
    _emit(fmt, found, tokens_text(found))


@token_group.command("issue")
@click.argument("name")
@click.option("--expires", "expires", help="Lifetime, e.g. 12h or 90d [default: no expiry].")
@_registry_options
def token_issue_command(registry: Registry, caller: Principal, fmt: str, name: str, expires: str | None) -> None:
    """Issue a token for NAME; printed once, only its hash is kept."""
    token = registry.issue_token(caller, name, _duration(expires) if expires else None)
    _emit(fmt, {"principal": name, "token": token}, token)


@token_group.command("revoke")
@click.argument("token_id")
@_registry_options
def token_revoke_command(registry: Registry, caller: Principal, fmt: str, token_id: str) -> None:
    """Revoke a token by its id (the part after bst_)."""
    registry.revoke_token(caller, token_id)
    _emit(fmt, {"revoked": token_id}, f"revoked {token_id}")


@click.group("gate")
def gate_group() -> None:
    """The promotion gate, for CI pipelines."""


@gate_group.command("check")
@click.argument("ref")
@click.option("--stage", required=True, help="The stage to check against, e.g. production.")
@_registry_options
def gate_check_command(registry: Registry, caller: Principal, fmt: str, ref: str, stage: str) -> None:
    """Would MODEL[@VERSION] pass STAGE's gate now? Exit 0 yes, 1 no, 2 error. Changes nothing."""
    from bastion.render.registry_text import decision_text  # noqa: PLC0415

    model, number = _ref(ref)
    decision = registry.check_gate(caller, model, number, stage)
    _emit(fmt, decision, decision_text(decision))
    sys.exit(0 if decision.allowed else 1)


@click.group("audit")
def audit_group() -> None:
    """The registry's tamper-evident audit log (admin only)."""


CHAIN_OPTION = click.option(
    "--chain", type=click.Choice(["registry", "gateway"]), default="registry", show_default=True,
    help="The registry's decisions, or the serving gateways' calls.",
)


@audit_group.command("verify")
@CHAIN_OPTION
@click.option(
    "--trusted-key", "trusted_keys", multiple=True, envvar="BASTION_AUDIT_KEY",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The registry's public key from your own copy, not the registry folder's registry.pub; "
    "repeatable [env BASTION_AUDIT_KEY].",
)
@click.option(
    "--witness", "witness_location", envvar="BASTION_AUDIT_WITNESS", metavar="LOCATION",
    help="Your own witness location (a folder or s3://bucket/prefix; fsspec options from FSSPEC_S3_* "
    "and AWS_* variables) [env BASTION_AUDIT_WITNESS].",
)
@click.option(
    "--require-anchor", is_flag=True, envvar="BASTION_AUDIT_REQUIRE_ANCHOR",
    help="Exit 1 unless both the key and the witness come from this command line or environment.",
)
@click.option(
    "--max-unwitnessed", type=click.IntRange(min=0), envvar="BASTION_AUDIT_MAX_UNWITNESSED", metavar="N",
    help="Exit 1 if more than N entries follow the last witnessed head (0 suits the registry chain, "
    "which is witnessed at every change) [env BASTION_AUDIT_MAX_UNWITNESSED].",
)
@_registry_options
def audit_verify_command(
    registry: Registry,
    caller: Principal,
    fmt: str,
    chain: str,
    trusted_keys: tuple[Path, ...],
    witness_location: str | None,
    require_anchor: bool,
    max_unwitnessed: int | None,
) -> None:
    """Check every entry's hash, link and place, every signed checkpoint and witnessed head.

    Exit 1 if anything was tampered with, or (with --require-anchor) if trust rests on the
    registry folder's own key or witness, which anyone who can write that folder can replace.
    """
    from bastion.audit.witness import Witness  # noqa: PLC0415
    from bastion.render.registry_text import audit_text  # noqa: PLC0415
    from bastion.sign.keys import load_public_key  # noqa: PLC0415

    keys = [load_public_key(path) for path in trusted_keys]
    witness = Witness(witness_location) if witness_location else None
    report = registry.verify_audit(caller, chain, trusted_keys=keys, witness=witness)
    _emit(fmt, report, audit_text(report))
    shortfalls = report.shortfalls(require_anchor=require_anchor, max_unwitnessed=max_unwitnessed)
    for shortfall in shortfalls:
        click.echo(f"fail: {shortfall}", err=True)
    sys.exit(0 if report.ok and not shortfalls else 1)


@audit_group.command("export")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write here, not to stdout.")
@CHAIN_OPTION
@_registry_options
def audit_export_command(registry: Registry, caller: Principal, fmt: str, output: Path | None, chain: str) -> None:
    """Every entry as one JSON line, with its hashes."""
    del fmt  # JSON lines whatever the format
    if output is None:
        count = registry.export_audit(caller, sys.stdout, chain)
    else:
        with output.open("w", encoding="utf-8") as stream:
            count = registry.export_audit(caller, stream, chain)
    click.echo(f"exported {count} entries", err=True)
