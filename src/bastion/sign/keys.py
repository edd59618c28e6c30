"""Signing keys: Ed25519 and ECDSA (P-256/384/521), PEM on disk, private keys mode 0600."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from bastion.errors import ConfigError

PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey
PublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey
CURVES: dict[str, ec.EllipticCurve] = {
    "ecdsa-p256": ec.SECP256R1(),
    "ecdsa-p384": ec.SECP384R1(),
    "ecdsa-p521": ec.SECP521R1(),
}
KINDS = ("ed25519", *CURVES)


def generate_key(kind: str) -> PrivateKey:
    """A new private key of `kind` (ed25519, ecdsa-p256, ecdsa-p384, ecdsa-p521)."""
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if kind in CURVES:
        return ec.generate_private_key(CURVES[kind])
    raise ConfigError(f"unknown key type {kind!r}", hint=f"Use one of: {', '.join(KINDS)}.")


def public_pem(key: PublicKey) -> bytes:
    """SubjectPublicKeyInfo PEM, the form whose SHA-256 is the bundle's key hint."""
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def save_keypair(key: PrivateKey, private_path: Path, passphrase: bytes | None = None) -> Path:
    """Write the private key (mode 0600, encrypted when a passphrase is given) and `<name>.pub`."""
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    )
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    public_path = private_path.with_suffix(".pub")
    public_path.write_bytes(public_pem(key.public_key()))
    return public_path


def load_private_key(path: Path, passphrase: bytes | None = None) -> PrivateKey:
    """Read a PEM private key; refuse anything but Ed25519 and the NIST curves above."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=passphrase)
    except (OSError, ValueError, TypeError, UnsupportedAlgorithm) as err:
        raise ConfigError(
            f"{path}: not a readable PEM private key ({err})", hint="Check the path and passphrase."
        ) from err
    if isinstance(key, ed25519.Ed25519PrivateKey) or (
        isinstance(key, ec.EllipticCurvePrivateKey) and _supported_curve(key.curve)
    ):
        return key
    raise ConfigError(f"{path}: unsupported key type", hint=f"Use one of: {', '.join(KINDS)}.")


def load_public_key(path: Path) -> PublicKey:
    """Read a PEM public key (SubjectPublicKeyInfo)."""
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError, UnsupportedAlgorithm) as err:
        raise ConfigError(f"{path}: not a readable PEM public key ({err})", hint="Check the path.") from err
    if isinstance(key, ed25519.Ed25519PublicKey) or (
        isinstance(key, ec.EllipticCurvePublicKey) and _supported_curve(key.curve)
    ):
        return key
    raise ConfigError(f"{path}: unsupported key type", hint=f"Use one of: {', '.join(KINDS)}.")


def _supported_curve(curve: ec.EllipticCurve) -> bool:
    return any(curve.name == c.name for c in CURVES.values())
