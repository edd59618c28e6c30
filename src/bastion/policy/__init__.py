"""One policy file (YAML) that says what risk is acceptable, read by every stage."""

from bastion.policy.load import load_policy
from bastion.policy.schema import Policy, ScanPolicy

__all__ = ["Policy", "ScanPolicy", "load_policy"]
