"""`bastion policy check`: validate a policy file and show the policy it puts in force."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.group("policy")
def policy_group() -> None:
    """The policy file read by scan and by the registry's gate."""


@policy_group.command("check")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def policy_check_command(path: Path, fmt: str) -> None:
    """Validate PATH and print the policy in force.

    Exit 0 valid; 1 valid but a named key file is missing (every promotion would fail);
    2 invalid, naming each bad field.
    """
    from bastion.policy.load import load_policy  # noqa: PLC0415

    policy = load_policy(path)
    if fmt == "json":
        from bastion.render.registry_text import as_json  # noqa: PLC0415  # the text path needs no extra

        click.echo(as_json(policy))
        return
    click.echo(f"{path}: valid")
    click.echo(f"scan: block at {policy.scan.block_at.name.lower()}, {len(policy.scan.allow_globals)} extra allowed globals")
    gate = policy.gate
    missing_any = False
    duties = "separated" if gate.separation_of_duties else "not separated"
    click.echo(f"gate: stages {' -> '.join(gate.stages)}; duties {duties}")
    for stage in gate.stages[1:]:
        need = gate.requirements_for(stage)
        parts = [f"scan below {(need.scan_block_at or policy.scan.block_at).name.lower()}"]
        if need.signature_keys:
            missing = [str(k) for k in need.signature_keys if not k.exists()]
            parts.append(f"signature by one of {len(need.signature_keys)} key(s)")
            if missing:
                missing_any = True
                parts.append(f"MISSING KEY FILES: {json.dumps(missing)}")
        if need.sources:
            parts.append(f"source in {list(need.sources)}")
        if need.licences:
            parts.append(f"licence in {list(need.licences)}")
        if need.approvals:
            parts.append(f"{need.approvals} approval(s)")
        if need.assessment_min or need.assessment_max:
            parts.append(f"assessment min {dict(need.assessment_min)} max {dict(need.assessment_max)}")
        click.echo(f"  {stage}: " + "; ".join(parts))
    click.echo(f"serve: a budget over a model's extraction cost: {policy.serve.budget_over_extraction_cost}")
    if missing_any:
        raise SystemExit(1)
