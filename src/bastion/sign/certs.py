"""Signing certificates: which X.509 chains may vouch for a model signature, and who signed.

The leaf (signing) certificate must hold the signer's key and be meant for signing:
key usage, when stated, allows digital signatures; extended key usage, when stated,
includes code signing; at least one of the two is stated, as model-signing requires.
Its chain is built to one of the trusted roots the verifier names, never to a system
store, by `cryptography`'s X.509 verifier at the time of verification.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID

from bastion.errors import ConfigError, VerificationError
from bastion.sign.keys import KINDS, PrivateKey, PublicKey, public_pem

_CURVES = frozenset({"secp256r1", "secp384r1", "secp521r1"})


def load_certificates(paths: Sequence[Path]) -> tuple[x509.Certificate, ...]:
    """Read PEM certificates, in order; a file may hold several.

    Raises:
        ConfigError: a file cannot be read or holds no PEM certificate.
    """
    certificates: list[x509.Certificate] = []
    for path in paths:
        try:
            certificates.extend(x509.load_pem_x509_certificates(path.read_bytes()))
        except OSError as err:
            raise ConfigError(f"{path}: certificate cannot be read ({err.strerror})", hint="Check the path.") from err
        except ValueError as err:
            raise ConfigError(f"{path}: not a PEM certificate ({err})", hint="Give PEM-encoded X.509 files.") from err
    return tuple(certificates)


def subject_of(certificate: x509.Certificate) -> str:
    """The certificate's subject as an RFC 4514 string, e.g. `CN=release,O=Example`."""
    return certificate.subject.rfc4514_string()


def check_signing_certificate(leaf: x509.Certificate, key: PrivateKey) -> None:
    """Refuse to sign with a certificate that does not hold `key` or is not meant for signing.

    Raises:
        ConfigError: naming the mismatch.
    """
    if public_pem(key.public_key()) != leaf.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ):
        raise ConfigError(
            f"the private key does not match the public key of the certificate {subject_of(leaf)}",
            hint="Pass the key the certificate was issued for.",
        )
    problem = _signing_usage_problem(leaf)
    if problem:
        raise ConfigError(f"certificate {subject_of(leaf)} {problem}", hint="Use a code-signing certificate.")


def certificate_chain_material(chain: Sequence[x509.Certificate]) -> dict[str, object]:
    """The bundle's `verificationMaterial` for a leaf-first chain, as model-signing writes it."""
    raw = [{"rawBytes": base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode()} for c in chain]
    return {"x509CertificateChain": {"certificates": raw}, "tlogEntries": []}


def chain_from_bundle(bundle: dict[str, Any], where: Path) -> tuple[x509.Certificate, ...]:
    """The leaf-first certificates of a bundle's `x509CertificateChain`.

    Raises:
        VerificationError: the bundle carries no chain, or a certificate is not DER X.509.
    """
    material = bundle.get("verificationMaterial")
    chain = material.get("x509CertificateChain") if isinstance(material, dict) else None
    if not isinstance(chain, dict):
        raise VerificationError(
            f"{where}: the bundle carries no certificate chain",
            hint="It was probably signed with a bare key: verify it with --key and the signer's public key.",
        )
    try:
        return tuple(
            x509.load_der_x509_certificate(base64.b64decode(c["rawBytes"], validate=True))
            for c in chain["certificates"]
        )
    except (KeyError, TypeError, ValueError) as err:
        raise VerificationError(f"{where}: the bundle's certificate chain is malformed ({err})") from err


def verify_certificate_chain(
    chain: Sequence[x509.Certificate], trusted_roots: Sequence[x509.Certificate], where: Path
) -> PublicKey:
    """Validate a leaf-first chain from a bundle up to one of `trusted_roots`, now.

    The certificates after the leaf are only candidates for intermediates: trust comes
    from `trusted_roots` alone. Any certificate among those is a trust anchor.

    Returns:
        The leaf's public key, with which the signature is then checked.

    Raises:
        ConfigError: no trusted root was given.
        VerificationError: naming the cause (leaf not valid now, not meant for signing,
            unsupported key, or no path to a trusted root).
    """
    if not trusted_roots:
        # model-signing falls back to every root in certifi here; a model signed by
        # anyone holding a TLS certificate is not a trusted release.
        raise ConfigError("no trusted root certificate given", hint="Pass the root CA of the releasing party.")
    if not chain:
        raise VerificationError(f"{where}: the bundle's certificate chain is empty")
    leaf, now = chain[0], dt.datetime.now(dt.UTC)
    who = subject_of(leaf)
    if now < leaf.not_valid_before_utc:
        raise VerificationError(
            f"{where}: the leaf certificate {who} is not valid until {leaf.not_valid_before_utc:%Y-%m-%d %H:%M} UTC",
            hint="Check this machine's clock; a certificate from the future is not trusted.",
        )
    if now > leaf.not_valid_after_utc:
        raise VerificationError(
            f"{where}: the leaf certificate {who} expired on {leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC",
            hint="Ask the releasing party to sign the model again with a current certificate.",
        )
    problem = _signing_usage_problem(leaf)
    if problem:
        raise VerificationError(f"{where}: the leaf certificate {who} {problem}")
    key = leaf.public_key()
    if not (
        isinstance(key, ed25519.Ed25519PublicKey)
        or (isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name in _CURVES)
    ):
        raise VerificationError(
            f"{where}: the leaf certificate {who} holds an unsupported key (use {', '.join(KINDS)})"
        )
    verifier = (
        verification.PolicyBuilder()
        .store(verification.Store(list(trusted_roots)))
        .time(now)
        .extension_policies(
            ca_policy=verification.ExtensionPolicy.webpki_defaults_ca(),
            # Usage is checked above, with a clearer message; the web-PKI defaults would
            # demand a subjectAltName, which code-signing certificates need not have.
            ee_policy=verification.ExtensionPolicy.permit_all().may_be_present(
                x509.BasicConstraints, verification.Criticality.AGNOSTIC, _refuse_ca_leaf
            ),
        )
        .build_client_verifier()
    )
    try:
        verifier.verify(leaf, list(chain[1:]))
    except verification.VerificationError as err:
        raise VerificationError(
            f"{where}: the certificate chain is not trusted: {who} (issuer {leaf.issuer.rfc4514_string()}) "
            f"does not chain to a trusted root ({err})",
            hint="Verify with the root certificate of the party that released the model.",
        ) from err
    return key


def _refuse_ca_leaf(
    _policy: verification.Policy, _leaf: x509.Certificate, constraints: x509.BasicConstraints | None
) -> None:
    if constraints is not None and constraints.ca:
        raise ValueError("a CA certificate cannot sign models")


def _signing_usage_problem(leaf: x509.Certificate) -> str:
    try:
        usage: x509.KeyUsage | None = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        usage = None
    try:
        extended: x509.ExtendedKeyUsage | None = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        extended = None
    if usage is None and extended is None:
        return "states neither key usage nor extended key usage, so it is not meant for signing"
    if usage is not None and not usage.digital_signature:
        return "has a key usage without digitalSignature"
    if extended is not None and ExtendedKeyUsageOID.CODE_SIGNING not in extended:
        return "has an extended key usage without codeSigning"
    return ""
