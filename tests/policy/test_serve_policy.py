"""The policy file's `serve:` section: what a budget over a model's extraction cost makes `keys create` do."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bastion.errors import ConfigError
from bastion.policy import BudgetAction, Policy, load_policy


def _policy(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_budget_over_the_cost_is_warned_about_by_default(tmp_path: Path) -> None:
    assert Policy().serve.budget_over_extraction_cost is BudgetAction.WARN
    assert load_policy(None).serve.budget_over_extraction_cost is BudgetAction.WARN
    no_section = load_policy(_policy(tmp_path, "version: 1\nscan: {block_at: high}\n"))
    assert no_section.serve.budget_over_extraction_cost is BudgetAction.WARN


@pytest.mark.parametrize(("value", "action"), [("warn", BudgetAction.WARN), ("refuse", BudgetAction.REFUSE)])
def test_the_serve_section_sets_the_action(tmp_path: Path, value: str, action: BudgetAction) -> None:
    policy = load_policy(_policy(tmp_path, f"version: 1\nserve:\n  budget_over_extraction_cost: {value}\n"))
    assert policy.serve.budget_over_extraction_cost is action


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("serve: {budget_over_extraction_cost: block}\n", "serve.budget_over_extraction_cost: Input should be 'warn' or 'refuse'"),
        ("serve: {budget_over_extraction: refuse}\n", "serve.budget_over_extraction: Extra inputs are not permitted"),
        ("serve: {budget_over_extraction_cost: true}\n", "serve.budget_over_extraction_cost"),
    ],
)
def test_a_bad_serve_setting_is_refused_by_name(tmp_path: Path, text: str, named: str) -> None:
    # A typo must never quietly turn `refuse` back into the default `warn`.
    with pytest.raises(ConfigError, match=named.replace("(", r"\(")):
        load_policy(_policy(tmp_path, text))


def test_policy_check_shows_the_serve_section(tmp_path: Path) -> None:
    path = _policy(tmp_path, "version: 1\nserve: {budget_over_extraction_cost: refuse}\n")
    done = subprocess.run(
        [sys.executable, "-m", "bastion.cli.main", "policy", "check", str(path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "serve: a budget over a model's extraction cost: refuse" in done.stdout
