"""API tokens: `bst_<id>_<secret>`; only SHA-256 of the secret is stored."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from bastion.errors import AccessDenied

PREFIX = "bst"


@dataclass(frozen=True)
class NewToken:
    """A token as issued: the full text is shown once and never stored."""

    token_id: str
    text: str
    secret_hash: bytes


def issue() -> NewToken:
    token_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    return NewToken(token_id, f"{PREFIX}_{token_id}_{secret}", hash_secret(secret))


def hash_secret(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def split(text: str) -> tuple[str, str]:
    """(token id, secret) of a token's text; AccessDenied for anything malformed."""
    parts = text.strip().split("_", 2)
    if len(parts) != 3 or parts[0] != PREFIX or not parts[1] or not parts[2]:
        raise AccessDenied("the token is malformed", hint="Tokens look like bst_<id>_<secret>.")
    return parts[1], parts[2]


def secret_matches(secret: str, stored: bytes) -> bool:
    return hmac.compare_digest(hash_secret(secret), stored)
