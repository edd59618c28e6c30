"""`bastion serve`, `bastion keys ...` and `bastion models disable|enable`: thin wiring over bastion.serve."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from bastion.cli.registry import REGISTRY_OPTION, _emit, _registry_options

if TYPE_CHECKING:
    from bastion.registry import Principal, Registry
    from bastion.serve.keys import AccountLimits, BudgetReview, KeyStore


def _key_store(registry: Registry) -> KeyStore:
    from bastion.audit import AuditLog  # noqa: PLC0415
    from bastion.serve.keys import KeyStore  # noqa: PLC0415
    from bastion.serve.run import AUDIT_CHAIN  # noqa: PLC0415

    log = AuditLog(registry.engine, AUDIT_CHAIN, signing_key=registry.signing_key, checkpoint_every=1, witness=registry.witness)
    return KeyStore(registry.engine, log)


@click.command("serve")
@REGISTRY_OPTION
@click.option("--model", "models", multiple=True, required=True, help="A model to serve; repeatable.")
@click.option("--stage", default="production", show_default=True, help="Serve the newest version in this stage.")
@click.option(
    "--trusted-key", "trusted_keys", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Public key a served model must be signed with; repeatable [default: the policy's keys for --stage].",
)
@click.option(
    "--registry-key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Public key the registry signs promotions with; a version is served only with its signed promotion "
    "to --stage [default: registry.pub in the registry folder; pinning a copy kept outside it is stronger].",
)
@click.option("--redis", "redis_url", envvar="BASTION_REDIS_URL", help="Share limits and quotas across replicas.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--admin-host", default="127.0.0.1", show_default=True)
@click.option("--admin-port", default=8001, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--on-alarm", type=click.Choice(["throttle", "suspend", "alert"]), default="throttle", show_default=True,
    help="What a detector alarm does to the key (every alarm is audited and counted).",
)
@click.option("--webhook", help="POST each alarm as JSON to this URL.")
@click.option(
    "--observer", type=click.Choice(["process", "inline"]), default="process", show_default=True,
    help="Run the detectors and the audit writer in a process beside the server (faster), or inline "
    "(an alarm then acts on the very next request rather than milliseconds later).",
)
@click.option("--max-connections", default=1000, show_default=True, type=click.IntRange(2),
              help="Open connections per port; past it requests get 503.")
@click.option("--read-timeout", default=30.0, show_default=True, type=click.FloatRange(0.1, 3600),
              help="Seconds a request body or head may stall before the client is dropped.")
@click.option(
    "--account-budget-share", default=0.5, show_default=True, type=click.FloatRange(0, 100),
    help="Rows an account may send a model per month when its owner set no budget (`bastion keys account`), "
    "as a share of the rows a copy of the model needs for 95% agreement (the extraction cost in its "
    "assessment, `bastion assess --only extraction`); 0: no budget from the cost.",
)
@click.option("--log-inputs", is_flag=True, help="Write request inputs to the audit log (off by default).")
@click.option("--mask-feature", "masked", multiple=True, type=click.IntRange(0), help="With --log-inputs: mask this "
              "feature index (personal data); repeatable.")
def serve_command(
    home: Path, models: tuple[str, ...], stage: str, trusted_keys: tuple[Path, ...], registry_key: Path | None,
    redis_url: str | None,
    host: str, port: int, admin_host: str, admin_port: int, on_alarm: str, webhook: str | None, observer: str,
    log_inputs: bool, masked: tuple[int, ...], max_connections: int, read_timeout: float, account_budget_share: float,
) -> None:
    """Serve promoted, signed models behind the gateway (Open Inference Protocol on --port).

    Only the newest version of each --model in --stage is served, and only if its stored bytes,
    signature and scan check out at load. Callers need an API key (`bastion keys create`);
    BASTION_TOKEN is the registry token the gateway loads models with.

    Each model version holds a serving.yaml naming its format: onnx (ONNX Runtime), sklearn
    (skops), safetensors (PyTorch weights with the declared layers, run without PyTorch) or
    joblib (a pickle: only where the stage's policy sets allow_pickle and the scan is clean).
    """
    from bastion.http_limits import HttpLimits  # noqa: PLC0415
    from bastion.registry import Registry  # noqa: PLC0415
    from bastion.serve.gateway import AlarmPolicy  # noqa: PLC0415
    from bastion.serve.run import GatewaySettings, assemble, run_gateway  # noqa: PLC0415

    settings = GatewaySettings(
        models=models, stage=stage, trusted_keys=trusted_keys, registry_key=registry_key, redis_url=redis_url,
        alarm_policy=AlarmPolicy(action=on_alarm, webhook=webhook),
        host=host, port=port, admin_host=admin_host, admin_port=admin_port, log_inputs=log_inputs,
        masked_features=masked, observer=observer,
        http=HttpLimits(read_timeout=read_timeout, head_timeout=read_timeout, max_connections=max_connections),
        account_budget_share=account_budget_share or None,
    )
    registry = Registry.open(home)
    caller = registry.authenticate(os.environ.get("BASTION_TOKEN"))
    assembled = assemble(registry, caller, settings)
    for name, reason in assembled.refused.items():
        click.echo(f"refused {name}: {reason}", err=True)
    if not assembled.gateway.models:
        assembled.close()
        raise click.ClickException("no model passed its checks; nothing to serve")
    for model in assembled.gateway.models.values():
        click.echo(f"serving {model.ref} ({model.spec.format}) on http://{host}:{port}/v2/models/{model.name}", err=True)
        click.echo(f"  {assembled.gateway.budget_summary(model.name)}", err=True)
    click.echo(f"admin API on http://{admin_host}:{admin_port}", err=True)
    try:
        run_gateway(assembled, settings)
    finally:
        assembled.close()


@click.group("keys")
def keys_group() -> None:
    """API keys of the serving gateway, and the accounts that own them.

    Limits and quotas count rows (a 64-row request costs 64), per key and per account: the
    keys of one account also share the account's budget (`bastion keys account`), so ten keys
    cannot spend ten budgets on one model. Managing a key needs registry admin on every model
    it may call; an account's budget, admin on every model.
    """


def _budget_notes(review: BudgetReview) -> None:
    """The review's lines on stderr: what the budget can copy, and what is not measured."""
    for line in review.notes():
        prefix = "note" if line.startswith("extraction cost not measured") else "refused" if review.refused else "warning"
        click.echo(f"{prefix}: {line}", err=True)
    if review.refused:
        click.echo(
            "hint: the policy says serve.budget_over_extraction_cost: refuse; grant fewer rows "
            "(--daily, --monthly, --rate) or a shorter --expires-days, or put the key in an account with a smaller budget",
            err=True,
        )


@keys_group.command("create")
@click.argument("name")
@click.option("--model", "models", multiple=True, default=("*",), show_default=True, help="Models it may call.")
@click.option(
    "--operation", "operations", multiple=True, type=click.Choice(["infer", "metadata", "token"]),
    default=("infer", "metadata"), show_default=True,
)
@click.option("--output", type=click.Choice(["label", "score", "probabilities"]), default="label", show_default=True,
              help="How much an answer shows.")
@click.option("--precision", type=click.IntRange(0, 6), help="Decimals of scores or probabilities.")
@click.option("--rate", type=float, default=10.0, show_default=True, help="Rows per second (0: unlimited).")
@click.option("--burst", type=click.IntRange(1), default=20, show_default=True, help="Rows at once, when idle.")
@click.option("--daily", type=click.IntRange(0), default=10_000, show_default=True, help="Rows per UTC day (0: none).")
@click.option("--monthly", type=click.IntRange(0), default=0, show_default=True, help="Rows per UTC month (0: none).")
@click.option("--expires-days", type=float, default=90.0, show_default=True, help="Lifetime in days (0: never).")
@click.option("--account", help="The account it belongs to: its keys share the account's budget [default: NAME].")
@click.option("--max-rows", type=click.IntRange(1, 100_000),
              help="Most rows one request may carry [default: 16; a larger request is refused].")
@_registry_options
def keys_create_command(
    registry: Registry, caller: Principal, fmt: str, name: str, models: tuple[str, ...],
    operations: tuple[str, ...], output: str, precision: int | None, rate: float, burst: int, daily: int,
    monthly: int, expires_days: float, account: str | None, max_rows: int | None,
) -> None:
    """Create a key for NAME (who holds it); the key is printed once.

    Its budget is priced against what copying each model it may call costs: the rows an
    attacker needs for 95% agreement (`extraction_queries_95` in the assessment of the newest
    production version, from `bastion assess --only extraction`). A budget that lets the key
    (within its account's budget) spend that many rows within a month, or within its lifetime
    if shorter, is warned about on stderr; under the policy's
    `serve: {budget_over_extraction_cost: refuse}` nothing is created and the exit code is 1.
    A rate without a quota counts as rate x 86,400 rows a day.
    """
    from bastion.serve.keys import KeySpec, issue_key, key_summary  # noqa: PLC0415
    from bastion.serve.limits import Quota, RateLimit  # noqa: PLC0415

    spec = KeySpec(
        name=name, models=models, operations=operations, output=output, precision=precision,
        rate=RateLimit(rate, burst) if rate > 0 else None,
        quota=Quota(daily or None, monthly or None) if daily or monthly else None,
        expires_in=timedelta(days=expires_days) if expires_days > 0 else None,
        account=account, max_rows=max_rows,
    )
    issued = issue_key(registry, caller, _key_store(registry), spec)  # the library checks the caller's role
    _budget_notes(issued.review)
    if issued.key is None or issued.text is None:
        raise click.exceptions.Exit(1)
    _emit(fmt, {"key": issued.text, **key_summary([issued.key])[0]}, issued.text)


def _state(row: dict[str, Any]) -> str:
    if row["revoked"]:
        return "REVOKED"
    if row["suspended"]:
        return "SUSPENDED"
    if row["throttle"]:
        return f"THROTTLED({row['throttle']['per_second']:g}/s burst {row['throttle']['burst']})"
    return "active"


@keys_group.command("list")
@_registry_options
def keys_list_command(registry: Registry, caller: Principal, fmt: str) -> None:
    """Every key the caller administers: account, scopes, rows per request, limits, expiry and
    state, throttled by an alarm included (never the secret)."""
    from bastion.serve.keys import key_summary  # noqa: PLC0415

    store = _key_store(registry)
    rows = key_summary(store.listed(caller))
    lines = [
        f"{r['key_id']}  {r['name']:<24} account={r['account']}  models={','.join(r['models'])}"  # type: ignore[arg-type]
        f"  output={r['output']}  max_rows={r['max_rows']}  {_state(r)}"
        for r in rows
    ]
    _emit(fmt, rows, "\n".join(lines) or "no keys")


@keys_group.command("account")
@click.argument("account")
@click.option("--daily", type=click.IntRange(0), help="Rows per UTC day, per model (0: none).")
@click.option("--monthly", type=click.IntRange(0), help="Rows per UTC month, per model (0: none).")
@click.option("--rate", type=click.FloatRange(0), help="Rows per second, per model (0: none); needs --burst.")
@click.option("--burst", type=click.IntRange(1), help="Rows at once, when idle; with --rate.")
@_registry_options
def keys_account_command(
    registry: Registry, caller: Principal, fmt: str, account: str, daily: int | None, monthly: int | None,
    rate: float | None, burst: int | None,
) -> None:
    """Set ACCOUNT's budget: what all its keys together may be answered, on each model.

    The budget replaces the account's previous one: a limit not given is removed. It binds
    every key of the account, made before or after, on every model, so it needs registry admin
    on every model. Like `keys create`, it is priced against the models the account's keys
    may call (every model, if one may call `*` or it has none yet): warned about, or refused
    (exit 1, nothing changed) under `serve: {budget_over_extraction_cost: refuse}`.
    """
    from bastion.serve.keys import AccountLimits, set_account_budget  # noqa: PLC0415
    from bastion.serve.limits import Quota, RateLimit  # noqa: PLC0415

    if daily is None and monthly is None and rate is None:
        raise click.UsageError("give at least one of --daily, --monthly, --rate (0 removes a limit)")
    if (rate is not None and rate > 0) != (burst is not None):
        raise click.UsageError("--rate and --burst go together")
    limits = AccountLimits(
        rate=RateLimit(rate, burst) if rate and burst else None,
        quota=Quota(daily or None, monthly or None) if daily or monthly else None,
    )
    review = set_account_budget(registry, caller, _key_store(registry), account, limits)  # checks the role
    _budget_notes(review)
    if review.refused:
        raise click.exceptions.Exit(1)
    record = {
        "account": account,
        "rate": None if limits.rate is None else {"per_second": limits.rate.per_second, "burst": limits.rate.burst},
        "quota": None if limits.quota is None else {"daily": limits.quota.daily, "monthly": limits.quota.monthly},
    }
    _emit(fmt, record, f"account {account}: {_describe(limits)} (gateways apply it within a second)")


def _describe(limits: AccountLimits) -> str:
    parts = []
    if limits.rate is not None:
        parts.append(f"{limits.rate.per_second:g} rows/s, burst {limits.rate.burst}")
    if limits.quota is not None and limits.quota.daily is not None:
        parts.append(f"{limits.quota.daily:,} rows/day")
    if limits.quota is not None and limits.quota.monthly is not None:
        parts.append(f"{limits.quota.monthly:,} rows/month")
    return ", ".join(parts) or "no budget"


def _switch(action: str, method: str, subject: str, help_text: str) -> click.Command:
    """A command that flips a key's or a model's state through `KeyStore.<method>`, audited."""

    @click.command(action, help=help_text)
    @click.argument("subject", metavar=subject)
    @click.option("--reason", default="", help="Why; recorded in the audit log.")
    @_registry_options
    def command(registry: Registry, caller: Principal, fmt: str, subject: str, reason: str) -> None:
        # The library checks the caller's role: admin on the key's models, or on MODEL.
        getattr(_key_store(registry), method)(caller, subject, reason or f"{action} by {caller.name}")
        _emit(fmt, {action: subject}, f"{action}: {subject} (gateways apply it within a second)")

    return command


_KEY_SWITCHES = {
    "revoke": "Revoke a key at once, for good, without restarting any gateway.",
    "suspend": "Suspend a key at once, without restarting any gateway.",
    "resume": "Resume a key at once: lift its suspension and any alarm's throttle, without restarting any gateway.",
    "unthrottle": "Lift an alarm's throttle on a key (its own rate applies again), on every gateway, without a restart.",
}
for _action, _help in _KEY_SWITCHES.items():
    keys_group.add_command(_switch(_action, _action, "KEY_ID", _help))


@click.group("models")
def models_group() -> None:
    """The kill switch: stop or restart serving a model on every gateway, without a restart."""


for _action in ("disable", "enable"):
    models_group.add_command(_switch(_action, f"{_action}_model", "MODEL", f"{_action.capitalize()} serving MODEL."))
