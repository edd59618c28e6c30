"""Signatures in the OpenSSF model-signing format (v1.0 predicate, key or certificate).

A Sigstore bundle (v0.3 JSON) around a DSSE envelope around an in-toto statement whose
single subject is the model's root digest and whose predicate lists every file's
SHA-256. ECDSA signatures are DER over the DSSE pre-authentication encoding, with the
hash that matches the curve, as model-signing writes and checks them. A key-based
bundle names the key by a hint; a certificate-based one carries the leaf certificate
and its intermediates, and trust comes from the roots the verifier names. See
docs/research/openssf-model-signing.md for the format as established against 1.1.1.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import stat
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from bastion.errors import ArtifactError, VerificationError
from bastion.sign.certs import (
    certificate_chain_material,
    chain_from_bundle,
    check_signing_certificate,
    subject_of,
    verify_certificate_chain,
)
from bastion.sign.keys import PrivateKey, PublicKey, public_pem
from bastion.sign.manifest import (
    GIT_PATHS,
    FileDigest,
    Manifest,
    Sha256,
    checked_digest,
    compare_manifests,
    hash_model,
    is_member_name,
    kind_of,
    shown,
)

BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://model_signing/signature/v1.0"
DEFAULT_SIGNATURE = "model.sig"
MAX_BUNDLE_BYTES = 64 * 1024 * 1024  # a bundle lists one digest per file: 10,000 files take about 2 MB


@dataclass(frozen=True, slots=True)
class Verified:
    """What a successful verification established."""

    root_digest: Sha256
    files: int
    key_hint: str  # the key's hint (SHA-256 of its PEM), or the leaf certificate's subject


def pae(payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding of an in-toto payload."""
    kind = PAYLOAD_TYPE.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def _hash_for(curve: ec.EllipticCurve) -> hashes.HashAlgorithm:
    return {"secp256r1": hashes.SHA256(), "secp384r1": hashes.SHA384()}.get(curve.name, hashes.SHA512())


def _statement(model_name: str, manifest: Manifest, ignore_paths: list[str]) -> bytes:
    doc = {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": model_name, "digest": {"sha256": manifest.root_digest()}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "resources": [{"name": f.name, "algorithm": "sha256", "digest": f.digest} for f in manifest.files],
            "serialization": {
                "method": "files",
                "hash_type": "sha256",
                "allow_symlinks": False,
                "ignore_paths": ignore_paths,
            },
        },
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def sign_model(
    model: Path,
    key: PrivateKey,
    signature: Path | None = None,
    certificate_chain: Sequence[x509.Certificate] | None = None,
) -> Path:
    """Hash a model and write its signature bundle (default: `model.sig` beside it or in it).

    Args:
        model: a model folder or file.
        key: the signing key.
        signature: where to write the bundle.
        certificate_chain: the leaf certificate for `key`, then its intermediates; the
            bundle then carries them instead of a key hint, as `model_signing sign
            certificate` writes it.

    Returns:
        The path of the bundle written.

    Raises:
        ConfigError: the leaf certificate does not hold `key` or is not meant for signing.

    Example:
        >>> sign_model(Path("my-model"), key, certificate_chain=load_certificates([leaf, ca]))
    """
    material: dict[str, object]
    if certificate_chain:
        check_signing_certificate(certificate_chain[0], key)
        material = certificate_chain_material(certificate_chain)
    else:
        material = {"publicKey": {"hint": hashlib.sha256(public_pem(key.public_key())).hexdigest()}, "tlogEntries": []}
    target = signature or _default_signature(model)
    ignore = _ignore_for(model, target)
    manifest = hash_model(model, ignore)
    if not manifest.files:
        raise ArtifactError(
            f"{model}: holds no file to sign", hint="A signature that covers nothing vouches for nothing."
        )
    payload = _statement(model.resolve().name, manifest, [*ignore, *GIT_PATHS])
    message = pae(payload)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        sig = key.sign(message)
    else:
        sig = key.sign(message, ec.ECDSA(_hash_for(key.curve)))
    bundle = {
        "mediaType": BUNDLE_MEDIA_TYPE,
        "verificationMaterial": material,
        "dsseEnvelope": {
            "payload": base64.b64encode(payload).decode(),
            "payloadType": PAYLOAD_TYPE,
            "signatures": [{"sig": base64.b64encode(sig).decode(), "keyid": ""}],
        },
    }
    _write_bundle(target, json.dumps(bundle).encode())
    return target


def _write_bundle(target: Path, data: bytes) -> None:
    """Write `data` beside `target`, then rename it over `target`.

    The default signature lives in the model's folder, which may come from someone else: a
    `model.sig` planted there as a link to another file must be replaced, not written through.
    """
    folder = target.parent
    try:
        fd, temporary = tempfile.mkstemp(dir=folder, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as err:
        raise ArtifactError(f"{target}: the signature cannot be written ({err.strerror})") from err
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(temporary, 0o644)  # a signature is public, like the model it signs
        os.replace(temporary, target)
    except OSError as err:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise ArtifactError(f"{target}: the signature cannot be written ({err.strerror})") from err


def _default_signature(model: Path) -> Path:
    return model / DEFAULT_SIGNATURE if model.is_dir() else model.with_name(model.name + ".sig")


def _ignore_for(model: Path, signature: Path) -> list[str]:
    # The signature's own name, never what it links to: a planted `model.sig -> weights.bin`
    # must not leave the weights out of the manifest.
    where = signature.parent.resolve() / signature.name
    if model.is_dir() and where.is_relative_to(model.resolve()):
        return [where.relative_to(model.resolve()).as_posix()]
    return []


def verify_model(model: Path, public_key: PublicKey, signature: Path | None = None) -> Verified:
    """Check a model against its bundle: the signature, then every file's digest.

    Raises:
        VerificationError: naming the cause (unreadable bundle, wrong key, bad signature,
            or each changed, missing, extra and renamed file).
    """
    target = signature or _default_signature(model)
    bundle = _read_bundle(target)
    hint = hashlib.sha256(public_pem(public_key)).hexdigest()
    material = bundle.get("verificationMaterial", {})
    public = material.get("publicKey", {}) if isinstance(material, dict) else None
    if not isinstance(public, dict):
        raise VerificationError(f"{target}: the bundle's verification material is malformed")
    signed_hint = public.get("hint")
    if signed_hint not in (None, "", hint):
        raise VerificationError(
            f"{target}: signed with a different key (hint {str(signed_hint)[:12]}…, yours {hint[:12]}…)",
            hint="Verify with the public key of the party that released the model.",
        )
    payload = _verified_payload(bundle, public_key, target, "this key")
    signed = _check_files(model, payload, target)
    return Verified(signed.root_digest(), len(signed.files), hint)


def verify_model_with_certificates(
    model: Path, trusted_roots: Sequence[x509.Certificate], signature: Path | None = None
) -> Verified:
    """Check a certificate-signed model: the chain to a trusted root, the signature, every file.

    The chain is validated now, up to one of `trusted_roots` (the certificates after the
    leaf in the bundle serve only as intermediates); the signature is then checked with
    the leaf's key, and the files exactly as `verify_model` does.

    Args:
        model: a model folder or file.
        trusted_roots: the certificates to trust, typically the releasing party's root CA
            (see `bastion.sign.certs.load_certificates`). Never empty: there is no default.
        signature: the bundle (default: `model.sig` beside or in the model).

    Returns:
        What was verified; `key_hint` is the leaf certificate's subject.

    Raises:
        ConfigError: no trusted root was given.
        VerificationError: naming the cause (no or malformed chain, leaf expired or not yet
            valid or not meant for signing, chain not leading to a trusted root, signature
            not made by the leaf's key, or each changed, missing, extra and renamed file).

    Example:
        >>> verify_model_with_certificates(Path("my-model"), load_certificates([Path("root.pem")]))
    """
    target = signature or _default_signature(model)
    bundle = _read_bundle(target)
    chain = chain_from_bundle(bundle, target)
    leaf_key = verify_certificate_chain(chain, trusted_roots, target)
    payload = _verified_payload(bundle, leaf_key, target, f"the key of the leaf certificate {subject_of(chain[0])}")
    signed = _check_files(model, payload, target)
    return Verified(signed.root_digest(), len(signed.files), subject_of(chain[0]))


def _verified_payload(bundle: dict[str, Any], public_key: PublicKey, target: Path, whose: str) -> bytes:
    envelope = bundle["dsseEnvelope"]
    try:
        payload = base64.b64decode(envelope["payload"], validate=True)
        sig = base64.b64decode(envelope["signatures"][0]["sig"], validate=True)
    except (KeyError, IndexError, TypeError, ValueError) as err:
        raise VerificationError(f"{target}: the DSSE envelope is malformed ({err})") from err
    if envelope.get("payloadType") != PAYLOAD_TYPE:
        raise VerificationError(f"{target}: payload type {envelope.get('payloadType')!r} is not in-toto")
    try:
        if isinstance(public_key, ed25519.Ed25519PublicKey):
            public_key.verify(sig, pae(payload))
        else:
            public_key.verify(sig, pae(payload), ec.ECDSA(_hash_for(public_key.curve)))
    except InvalidSignature as err:
        raise VerificationError(
            f"{target}: the signature does not verify with {whose} (wrong key, or the bundle was altered)",
            hint="Verify with the releasing party's public key or root; fetch the signature again.",
        ) from err
    return payload


def _check_files(model: Path, payload: bytes, target: Path) -> Manifest:
    statement = _statement_of(payload, target)
    signed = _manifest_from(statement, target)
    if not signed.files:
        raise VerificationError(
            f"{target}: the signed manifest signs no file (its ignore list may name every file)",
            hint="A signature that covers nothing vouches for nothing: get the model's real signature.",
        )
    ignore = [*_ignore_for(model, target), *_ignored_paths(statement)]
    diff = compare_manifests(signed, hash_model(model, ignore))
    if not diff.is_empty:
        raise VerificationError(
            f"{model}: " + "; ".join(diff.reasons()),
            hint="The model's bytes are not those that were signed: fetch it again from a trusted source.",
        )
    return signed


def _read_signature_bytes(path: Path) -> bytes:
    """The bundle's bytes, if it is a regular file of a sane size: a FIFO or /dev/zero would never end."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as err:
        raise VerificationError(
            f"{path}: signature cannot be read ({err.strerror})", hint="Check the --signature path."
        ) from err
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise VerificationError(
                f"{path}: signature is a {kind_of(info.st_mode)}, not a file", hint="Check the --signature path."
            )
        if info.st_size > MAX_BUNDLE_BYTES:
            raise VerificationError(f"{path}: signature is larger than {MAX_BUNDLE_BYTES} bytes")
        with os.fdopen(os.dup(fd), "rb") as handle:
            return handle.read(MAX_BUNDLE_BYTES + 1)
    finally:
        os.close(fd)


def _read_bundle(path: Path) -> dict[str, Any]:  # JSON at the boundary, checked field by field
    data = _read_signature_bytes(path)
    if len(data) > MAX_BUNDLE_BYTES:
        raise VerificationError(f"{path}: signature is larger than {MAX_BUNDLE_BYTES} bytes")
    try:
        bundle = json.loads(data.decode("utf-8"))
    except ValueError as err:
        raise VerificationError(f"{path}: signature is not JSON ({err})") from err
    if not isinstance(bundle, dict) or bundle.get("mediaType") != BUNDLE_MEDIA_TYPE or "dsseEnvelope" not in bundle:
        raise VerificationError(f"{path}: not a Sigstore v0.3 bundle with a DSSE envelope")
    return bundle


def _statement_of(payload: bytes, target: Path) -> dict[str, Any]:
    try:
        statement = json.loads(payload)
    except ValueError as err:
        raise VerificationError(f"{target}: signed payload is not JSON") from err
    if not isinstance(statement, dict):
        raise VerificationError(f"{target}: signed payload is not a JSON object")
    if statement.get("_type") != STATEMENT_TYPE or statement.get("predicateType") != PREDICATE_TYPE:
        raise VerificationError(f"{target}: not an in-toto statement of a model-signing v1.0 predicate")
    return statement


def _manifest_from(statement: dict[str, Any], target: Path) -> Manifest:
    try:
        resources = statement["predicate"]["resources"]
        subjects = statement["subject"]
        files = tuple(
            FileDigest(_signed_name(r["name"], target), checked_digest(r["digest"]))
            for r in resources
            if r["algorithm"] == "sha256"
        )
        if len(files) != len(resources) or not isinstance(subjects, list) or len(subjects) != 1:
            raise VerificationError(f"{target}: only files-mode SHA-256 signatures with one subject are supported")
        seen: set[str] = set()
        for f in files:
            if f.name in seen:
                raise VerificationError(
                    f"{target}: {shown(f.name)}: listed twice in the signed manifest",
                    hint="A manifest names each file once: the signer's tool is broken, or the bundle is forged.",
                )
            seen.add(f.name)
        manifest = Manifest(files)
        if subjects[0]["digest"]["sha256"] != manifest.root_digest():
            raise VerificationError(f"{target}: the subject digest does not match the listed files")
    except (KeyError, TypeError, ValueError) as err:
        raise VerificationError(f"{target}: the statement is malformed ({err})") from err
    return manifest


def _signed_name(name: object, target: Path) -> str:
    if not isinstance(name, str):
        raise VerificationError(f"{target}: {name!r} is not a file name")
    if not is_member_name(name):
        raise VerificationError(f"{target}: {shown(name)}: not a relative path inside the model")
    return name


def _ignored_paths(statement: dict[str, Any]) -> list[str]:
    serialization = statement.get("predicate", {}).get("serialization", {})
    paths = serialization.get("ignore_paths", []) if isinstance(serialization, dict) else []
    return [p for p in paths if isinstance(p, str)] if isinstance(paths, list) else []
