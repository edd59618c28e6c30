"""Short-lived tokens: a backend trades its key for a token of minutes, scoped to one model,
so an app on a phone never holds a long-lived key.

`bst1.<payload>.<mac>`: the payload (key id, model, expiry) in URL-safe base64, and an
HMAC-SHA256 over it with the gateway's token secret. A token is worth no more than its key:
revoking or suspending the key ends its tokens at once, and they share the key's limits.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

from bastion.errors import ConfigError

TOKEN_PREFIX = "bst1."  # noqa: S105  # nosec B105  # a format marker, not a secret
MAX_LIFETIME = 3600


@dataclass(frozen=True)
class TokenClaims:
    key_id: str
    model: str
    expires: int  # Unix seconds


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenMinter:
    """Issues and checks tokens with one secret (shared by every replica of a gateway)."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 32:
            raise ConfigError("the token secret must be at least 32 bytes")
        self._secret = secret

    @classmethod
    def from_file(cls, path: Path) -> TokenMinter:
        """The secret in `path`, created (mode 0600) with 32 random bytes if absent."""
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return cls(path.read_bytes())
        secret = secrets.token_bytes(32)
        with os.fdopen(fd, "wb") as handle:
            handle.write(secret)
        return cls(secret)

    def issue(self, key_id: str, model: str, lifetime: int, now: float | None = None) -> tuple[str, int]:
        """A token for `model` on behalf of `key_id`, and its expiry (Unix seconds)."""
        lifetime = max(1, min(lifetime, MAX_LIFETIME))
        expires = int(now if now is not None else time.time()) + lifetime
        payload = orjson.dumps({"k": key_id, "m": model, "e": expires})
        mac = hmac.new(self._secret, payload, hashlib.sha256).digest()
        return f"{TOKEN_PREFIX}{_b64(payload)}.{_b64(mac)}", expires

    def check(self, text: str, now: float | None = None) -> TokenClaims | None:
        """The claims of a genuine, unexpired token; None for anything else."""
        if not text.startswith(TOKEN_PREFIX):
            return None
        try:
            payload_text, mac_text = text[len(TOKEN_PREFIX) :].split(".", 1)
            payload, mac = _unb64(payload_text), _unb64(mac_text)
        except ValueError:
            return None
        if not hmac.compare_digest(mac, hmac.new(self._secret, payload, hashlib.sha256).digest()):
            return None
        try:
            claims = orjson.loads(payload)
            parsed = TokenClaims(str(claims["k"]), str(claims["m"]), int(claims["e"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None
        if parsed.expires <= (now if now is not None else time.time()):
            return None
        return parsed
