"""One table from Bastion's errors to HTTP statuses, used by every HTTP API.

The registry API and the gateway's admin API once each had a table, and they disagreed (the
admin API answered 400 for a database outage, the registry 404 for a tampered blob). Both now
ask `status_of`, which walks the error's class hierarchy to the most specific entry here.

Why an integrity failure is 409 Conflict: the request is well formed and names something the
registry holds, but what the store holds now conflicts with what the registry recorded about it.
404 would say "not here" and hide the tampering, 500 would call it a bug of ours, 422 would blame
the request. The body names what was altered; the registry audits each one.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from bastion.errors import (
    AccessDenied,
    ArtifactError,
    BackendUnavailable,
    BastionError,
    ConfigError,
    IntegrityFailure,
    LimitExceeded,
    NotFound,
    RegistryError,
    UnsupportedFormat,
    VerificationError,
)

BAD_REQUEST = 400
FORBIDDEN = 403
NOT_FOUND = 404
CONFLICT = 409
INTERNAL = 500
UNAVAILABLE = 503

STATUS: Mapping[type, int] = MappingProxyType(
    {
        ConfigError: BAD_REQUEST,  # a bad field, flag or policy key
        ArtifactError: BAD_REQUEST,  # input that cannot be read
        UnsupportedFormat: BAD_REQUEST,
        LimitExceeded: BAD_REQUEST,
        VerificationError: BAD_REQUEST,  # a digest, signature or manifest sent that does not verify
        IntegrityFailure: CONFLICT,  # stored bytes or records no longer match what was recorded
        AccessDenied: FORBIDDEN,  # authenticated, but the role is too low (no token at all is 401, at the edge)
        NotFound: NOT_FOUND,
        RegistryError: CONFLICT,  # already exists, already approved, changed meanwhile
        BackendUnavailable: UNAVAILABLE,
        BastionError: INTERNAL,  # only an error class missing from this table lands here
    }
)


def status_of(err: BastionError) -> int:
    """The HTTP status for `err`: the entry of its most specific class in `STATUS`."""
    for cls in type(err).__mro__:
        status = STATUS.get(cls)
        if status is not None:
            return status
    return INTERNAL
