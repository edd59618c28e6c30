"""A small real PKI for certificate signing: root CA -> intermediate CA -> code-signing leaf.

Made with `cryptography`, written as PEM files. The CAs are ECDSA P-256 (the web-PKI
chain validator refuses Ed25519 CAs); the leaf's key kind is chosen by the test. The
root and intermediate become valid before the leaf, because model-signing 1.1.1 checks
the whole chain at the leaf's notBefore.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bastion.sign.keys import PrivateKey, generate_key

LEAF_SUBJECT = "CN=release signer,O=Example ML"
NOW = dt.datetime.now(dt.UTC)
DAY = dt.timedelta(days=1)


@dataclass(frozen=True, slots=True)
class Pki:
    root: Path
    intermediate: Path
    leaf: Path
    leaf_key: Path
    leaf_private: PrivateKey
    intermediate_private: ec.EllipticCurvePrivateKey
    intermediate_cert: x509.Certificate


def _name(common_name: str, org: str = "Example ML") -> x509.Name:
    return x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org), x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    )


def _key_usage(*, signer: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=signer,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=not signer,
        crl_sign=not signer,
        encipher_only=False,
        decipher_only=False,
    )


def issue_ca(
    common_name: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None = None,
    issuer_key: ec.EllipticCurvePrivateKey | None = None,
    *,
    start: dt.datetime,
) -> x509.Certificate:
    """A CA certificate, self-signed when no issuer is given."""
    signer_key = issuer_key or key
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(issuer.subject if issuer else _name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(NOW + 365 * DAY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_key_usage(signer=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signer_key.public_key()), critical=False)
    )
    return builder.sign(signer_key, hashes.SHA256())


def issue_leaf(
    key: PrivateKey,
    issuer: x509.Certificate,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    not_before: dt.datetime = NOW - DAY,
    not_after: dt.datetime = NOW + 30 * DAY,
    usages: Sequence[x509.ObjectIdentifier] = (ExtendedKeyUsageOID.CODE_SIGNING,),
) -> x509.Certificate:
    """A code-signing leaf for `key`; `usages` is its extended key usage."""
    return (
        x509.CertificateBuilder()
        .subject_name(_name("release signer"))
        .issuer_name(issuer.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(signer=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
        .sign(issuer_key, hashes.SHA256())
    )


def write_pem(path: Path, certificate: x509.Certificate) -> Path:
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return path


def build_pki(folder: Path, leaf_kind: str = "ecdsa-p256", *, prefix: str = "") -> Pki:
    """Root, intermediate and leaf certificates plus the leaf's key, as PEM files in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    root_key = ec.generate_private_key(ec.SECP256R1())
    root = issue_ca(f"{prefix}Example Root CA", root_key, start=NOW - 10 * DAY)
    intermediate_key = ec.generate_private_key(ec.SECP256R1())
    intermediate = issue_ca(f"{prefix}Example Signing CA", intermediate_key, root, root_key, start=NOW - 5 * DAY)
    leaf_private = generate_key(leaf_kind)
    leaf = issue_leaf(leaf_private, intermediate, intermediate_key)
    leaf_key = folder / f"{prefix}leaf.key"
    leaf_key.write_bytes(
        leaf_private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return Pki(
        root=write_pem(folder / f"{prefix}root.pem", root),
        intermediate=write_pem(folder / f"{prefix}intermediate.pem", intermediate),
        leaf=write_pem(folder / f"{prefix}leaf.pem", leaf),
        leaf_key=leaf_key,
        leaf_private=leaf_private,
        intermediate_private=intermediate_key,
        intermediate_cert=intermediate,
    )
