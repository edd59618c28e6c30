"""Bastion: security for the machine-learning model lifecycle.

The library is the product; the `bastion` CLI is a thin skin over it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "ArtifactError",
    "BastionError",
    "ConfigError",
    "Finding",
    "Location",
    "Policy",
    "ScanPolicy",
    "ScanReport",
    "Severity",
    "Verdict",
    "__version__",
    "load_policy",
    "scan_bytes",
    "scan_path",
    "scan_paths",
]

# Imported on first use so that `bastion --help` and small scans start fast.
_LAZY = {
    "ArtifactError": "bastion.errors",
    "BastionError": "bastion.errors",
    "ConfigError": "bastion.errors",
    "Finding": "bastion.findings",
    "Location": "bastion.findings",
    "Severity": "bastion.findings",
    "Verdict": "bastion.findings",
    "Policy": "bastion.policy.schema",
    "ScanPolicy": "bastion.policy.schema",
    "load_policy": "bastion.policy.load",
    "ScanReport": "bastion.scan.report",
    "scan_bytes": "bastion.scan.api",
    "scan_path": "bastion.scan.api",
    "scan_paths": "bastion.scan.api",
}

if TYPE_CHECKING:
    from bastion.errors import ArtifactError, BastionError, ConfigError
    from bastion.findings import Finding, Location, Severity, Verdict
    from bastion.policy.load import load_policy
    from bastion.policy.schema import Policy, ScanPolicy
    from bastion.scan.api import scan_bytes, scan_path, scan_paths
    from bastion.scan.report import ScanReport


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'bastion' has no attribute {name!r}")
    import importlib  # noqa: PLC0415

    return getattr(importlib.import_module(module), name)
