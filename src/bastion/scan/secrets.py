"""Credentials left in model artifacts: private keys and common API-key shapes.

A secret is reported with its kind and a redacted prefix, never in full: a scan report
must not become a second leak.
"""

from __future__ import annotations

import re

from bastion.findings import Location, Severity
from bastion.scan.context import ScanContext

SECRET_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("private key", re.compile(r"-----BEGIN (?:RSA |EC |DSA |OPENSSH |ENCRYPTED |PGP )?PRIVATE KEY(?: BLOCK)?-----")),
    ("AWS access key id", re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")),
    ("AWS secret access key", re.compile(r"(?i)aws_secret_access_key\s*[=:]\s*['\"]?[A-Za-z0-9/+=]{40}\b")),
    ("GitHub token", re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{40,})\b")),
    ("OpenAI API key", re.compile(r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{32,}\b")),
    ("Anthropic API key", re.compile(r"\bsk-ant-(?:api|admin)\d{2}-[A-Za-z0-9_-]{40,}\b")),
    ("Hugging Face token", re.compile(r"\bhf_[A-Za-z]{34}\b")),
    ("Slack token", re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}\b")),
    ("Google API key", re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b")),
    ("Stripe secret key", re.compile(r"\b[sr]k_live_[0-9A-Za-z]{20,}\b")),
    ("Azure storage key", re.compile(r"AccountKey=[A-Za-z0-9+/]{86}==")),
)


def redact(secret: str) -> str:
    """The first characters of a secret and its length, enough to find it, not to use it."""
    return f"{secret[:6]}… ({len(secret)} chars)"


def scan_text_for_secrets(ctx: ScanContext, text: str, loc: Location, fmt: str) -> None:
    """Report each kind of secret found in text, once per kind."""
    for kind, pattern in SECRET_PATTERNS:
        match = pattern.search(text)
        if match:
            ctx.add(
                "secrets.credential",
                Severity.HIGH,
                loc,
                f"contains what looks like a {kind}; rotate it and remove it from the artifact",
                fmt,
                f"{kind}: {redact(match.group(0))}",
            )


def scan_notebook(ctx: ScanContext, text: str, loc: Location) -> bool:
    """Scan a Jupyter notebook's cells and outputs for secrets; False if it is not one."""
    import json  # noqa: PLC0415  # only for JSON documents: keeps start-up short

    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        return False
    if not isinstance(doc, dict) or not isinstance(doc.get("cells"), list):
        return False
    ctx.saw("notebook")
    for index, cell in enumerate(doc["cells"]):
        if not isinstance(cell, dict):
            continue
        parts: list[str] = []
        _collect_strings(cell.get("source"), parts)
        _collect_strings(cell.get("outputs"), parts)
        scan_text_for_secrets(ctx, "\n".join(parts), loc.inside(f"cell[{index}]"), "notebook")
    return True


def _collect_strings(value: object, out: list[str], depth: int = 0) -> None:
    if depth > 20:
        return
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, list):
        for item in value:
            _collect_strings(item, out, depth + 1)
    elif isinstance(value, dict):
        for item in value.values():
            _collect_strings(item, out, depth + 1)
