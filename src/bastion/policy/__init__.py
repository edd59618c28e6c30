"""One policy file (YAML) that says what risk is acceptable, read by every stage."""

from bastion.policy.load import load_policy
from bastion.policy.schema import BudgetAction, Policy, ScanPolicy, ServePolicy

__all__ = ["BudgetAction", "Policy", "ScanPolicy", "ServePolicy", "load_policy"]
