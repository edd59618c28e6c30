"""Sign and check short messages (checkpoints, attestations) with an Ed25519 or ECDSA key."""

from __future__ import annotations

import hashlib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from bastion.sign.keys import PrivateKey, PublicKey, public_pem


def hash_for(curve: ec.EllipticCurve) -> hashes.HashAlgorithm:
    """The digest each NIST curve is used with, as Sigstore and model-signing pair them."""
    return {"secp256r1": hashes.SHA256(), "secp384r1": hashes.SHA384()}.get(curve.name, hashes.SHA512())


def sign_bytes(key: PrivateKey, message: bytes) -> bytes:
    """A signature over `message`."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(message)
    return key.sign(message, ec.ECDSA(hash_for(key.curve)))


def signature_valid(key: PublicKey, signature: bytes, message: bytes) -> bool:
    """Whether `signature` over `message` was made by the private half of `key`."""
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, message)
        else:
            key.verify(signature, message, ec.ECDSA(hash_for(key.curve)))
    except InvalidSignature:
        return False
    return True


def key_id(key: PublicKey) -> str:
    """A short, stable name for a public key: the first 16 hex digits of its PEM's SHA-256."""
    return hashlib.sha256(public_pem(key)).hexdigest()[:16]
