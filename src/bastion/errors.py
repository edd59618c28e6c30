"""The one exception tree: errors mean Bastion could not do its job.

A malicious file is a *result* (a finding), never an exception.

```
BastionError              .hint: str
├── ConfigError           bad flag, bad or unknown policy key
├── ArtifactError         unreadable input
│   ├── UnsupportedFormat
│   └── LimitExceeded     size, nesting depth, opcode or memo budget
├── VerificationError     digest, manifest or signature mismatch
│   └── IntegrityFailure  stored bytes or records no longer match what was recorded
├── RegistryError
│   └── NotFound          no such model, version, principal, token or blob
├── AccessDenied
└── BackendUnavailable
```
"""

from __future__ import annotations


class BastionError(Exception):
    """Root of every error Bastion raises on purpose."""

    default_hint = "Run the command again with --help to see how it is used."

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint if hint is not None else self.default_hint

    def diagnostics(self) -> str:
        """The message and the hint, as shown to a person."""
        return f"error: {self.message}\nhint: {self.hint}"


class ConfigError(BastionError):
    """A flag, environment variable or policy key is wrong or unknown."""

    default_hint = "Fix the named setting; `bastion policy check` shows the policy in force."


class ArtifactError(BastionError):
    """An input could not be read or parsed completely."""

    default_hint = "The file is malformed or truncated: treat it as unsafe until it is replaced."


class UnsupportedFormat(ArtifactError):
    """The input's format is not one Bastion can analyse."""

    default_hint = "Bastion cannot vouch for this format; convert it (e.g. to safetensors) or review it by hand."


class LimitExceeded(ArtifactError):
    """A safety limit (size, depth, member count, opcode budget) was reached."""

    default_hint = "Raise the limit in the policy's `scan.limits` only if you trust the file's origin."


class VerificationError(BastionError):
    """A digest, manifest or signature did not match."""

    default_hint = "Fetch the artifact again from a trusted source."


class IntegrityFailure(VerificationError):
    """Bytes or records the registry stored no longer match what it recorded: tampering or corruption."""

    default_hint = "Treat the artifact as compromised: restore it from a trusted copy and check the audit log."


class RegistryError(BastionError):
    """The registry refused or could not complete an operation."""


class NotFound(RegistryError):
    """What was named is not in the registry."""

    default_hint = "`bastion registry list` shows what is there."


class AccessDenied(BastionError):
    """The caller's key or role lacks the scope for this action."""

    default_hint = "Ask an administrator for a key with the needed scope."


class BackendUnavailable(BastionError):
    """A database, cache or object store could not be reached."""

    default_hint = "Check that the service is running and the configured URL is right."
