"""Certificate signing: the bundle carries leaf + intermediates; trust comes from the roots given."""

from __future__ import annotations

import base64
import datetime as dt
import json
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from bastion.errors import ConfigError, VerificationError
from bastion.sign.certs import load_certificates
from bastion.sign.keys import PrivateKey, generate_key
from bastion.sign.ossf import sign_model, verify_model, verify_model_with_certificates
from corpus.pki import DAY, LEAF_SUBJECT, NOW, Pki, build_pki, issue_leaf, write_pem


def _model(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "model.safetensors").write_bytes(b"\x10\x00" * 500)
    (root / "config.json").write_text('{"layers": 2}')
    (root / "sub" / "tokenizer.json").write_text('{"vocab": {}}')
    return root


@pytest.fixture(params=["ecdsa-p256", "ecdsa-p384", "ed25519"])
def pki(request: pytest.FixtureRequest, tmp_path: Path) -> Pki:
    return build_pki(tmp_path / "pki", request.param)


@pytest.fixture
def p256(tmp_path: Path) -> Pki:
    return build_pki(tmp_path / "pki")


def _sign(model: Path, pki: Pki) -> Path:
    return sign_model(model, pki.leaf_private, certificate_chain=load_certificates([pki.leaf, pki.intermediate]))


def _swap_leaf(bundle: Path, leaf: x509.Certificate) -> None:
    """Put another leaf certificate in a signed bundle, as someone holding only the bundle could."""
    doc = json.loads(bundle.read_text())
    der = base64.b64encode(leaf.public_bytes(serialization.Encoding.DER)).decode()
    doc["verificationMaterial"]["x509CertificateChain"]["certificates"][0]["rawBytes"] = der
    bundle.write_text(json.dumps(doc))


def _reissued(
    pki: Pki,
    key: PrivateKey | None = None,
    not_before: dt.datetime = NOW - DAY,
    not_after: dt.datetime = NOW + DAY,
    usage: x509.ObjectIdentifier = ExtendedKeyUsageOID.CODE_SIGNING,
) -> x509.Certificate:
    """The leaf re-issued by the same trusted intermediate, with one thing changed."""
    return issue_leaf(
        key or pki.leaf_private,
        pki.intermediate_cert,
        pki.intermediate_private,
        not_before=not_before,
        not_after=not_after,
        usages=[usage],
    )


def test_certificate_signed_model_verifies_naming_the_signer(pki: Pki, tmp_path: Path) -> None:
    model = _model(tmp_path / "m")
    _sign(model, pki)
    verified = verify_model_with_certificates(model, load_certificates([pki.root]))
    assert verified.files == 3
    assert verified.key_hint == LEAF_SUBJECT


def test_bundle_carries_leaf_then_intermediates_and_no_key_hint(p256: Pki, tmp_path: Path) -> None:
    model = _model(tmp_path / "m")
    material = json.loads(_sign(model, p256).read_text())["verificationMaterial"]
    assert set(material) == {"x509CertificateChain", "tlogEntries"}
    ders = [base64.b64decode(c["rawBytes"]) for c in material["x509CertificateChain"]["certificates"]]
    expected = load_certificates([p256.leaf, p256.intermediate])
    assert ders == [c.public_bytes(serialization.Encoding.DER) for c in expected]


def test_signing_with_a_key_the_certificate_does_not_hold_is_refused(p256: Pki, tmp_path: Path) -> None:
    model = _model(tmp_path / "m")
    with pytest.raises(ConfigError, match="private key does not match the public key of the certificate"):
        sign_model(model, generate_key("ecdsa-p256"), certificate_chain=load_certificates([p256.leaf]))
    assert not (model / "model.sig").exists()


def test_signing_with_a_certificate_not_meant_for_code_signing_is_refused(p256: Pki, tmp_path: Path) -> None:
    model = _model(tmp_path / "m")
    tls = write_pem(tmp_path / "tls.pem", _reissued(p256, usage=ExtendedKeyUsageOID.SERVER_AUTH))
    with pytest.raises(ConfigError, match="extended key usage without codeSigning"):
        sign_model(model, p256.leaf_private, certificate_chain=load_certificates([tls]))


def test_another_root_is_refused_as_untrusted(p256: Pki, tmp_path: Path) -> None:
    model = _model(tmp_path / "m")
    _sign(model, p256)
    stranger = build_pki(tmp_path / "other", prefix="other-")
    with pytest.raises(VerificationError, match=r"chain is not trusted: CN=release signer.* does not chain"):
        verify_model_with_certificates(model, load_certificates([stranger.root]))


def test_a_signer_certified_by_another_ca_under_a_trusted_name_is_refused(p256: Pki, tmp_path: Path) -> None:
    # The impostor's CAs carry the very same names; only their keys differ.
    model = _model(tmp_path / "m")
    impostor = build_pki(tmp_path / "impostor")
    _sign(model, impostor)
    with pytest.raises(VerificationError, match="chain is not trusted"):
        verify_model_with_certificates(model, load_certificates([p256.root]))


def test_an_intermediate_in_the_bundle_does_not_make_itself_trusted(p256: Pki, tmp_path: Path) -> None:
    model = _model(tmp_path / "m")
    _sign(model, p256)
    with pytest.raises(VerificationError, match="chain is not trusted"):
        verify_model_with_certificates(model, load_certificates([build_pki(tmp_path / "x").root]))
    # ...whereas naming that intermediate as trusted anchors the chain there.
    assert verify_model_with_certificates(model, load_certificates([p256.intermediate])).files == 3


def test_expired_leaf_is_refused(p256: Pki, tmp_path: Path) -> None:
    model = _model(tmp_path / "m")
    bundle = _sign(model, p256)
    _swap_leaf(bundle, _reissued(p256, not_before=NOW - 3 * DAY, not_after=NOW - DAY))
    with pytest.raises(VerificationError, match=r"leaf certificate CN=release signer.* expired on"):
        verify_model_with_certificates(model, load_certificates([p256.root]))


def test_not_yet_valid_leaf_is_refused(p256: Pki, tmp_path: Path) -> None:
    model = _model(tmp_path / "m")
    bundle = _sign(model, p256)
    _swap_leaf(bundle, _reissued(p256, not_before=NOW + DAY, not_after=NOW + 3 * DAY))
    with pytest.raises(VerificationError, match="is not valid until"):
        verify_model_with_certificates(model, load_certificates([p256.root]))


def test_signature_by_another_key_than_the_leaf_is_refused(p256: Pki, tmp_path: Path) -> None:
    model = _model(tmp_path / "m")
    bundle = _sign(model, p256)
    _swap_leaf(bundle, _reissued(p256, key=generate_key("ecdsa-p256")))  # trusted, but not the signer
    with pytest.raises(VerificationError, match="does not verify with the key of the leaf certificate"):
        verify_model_with_certificates(model, load_certificates([p256.root]))


def test_flipped_byte_is_still_a_digest_difference(pki: Pki, tmp_path: Path) -> None:
    model = _model(tmp_path / "m")
    _sign(model, pki)
    data = bytearray((model / "model.safetensors").read_bytes())
    data[100] ^= 0x01
    (model / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(VerificationError, match=r"model\.safetensors: digest differs"):
        verify_model_with_certificates(model, load_certificates([pki.root]))


def test_key_signed_bundle_asks_for_the_key(tmp_path: Path) -> None:
    model = _model(tmp_path / "m")
    key = generate_key("ecdsa-p256")
    sign_model(model, key)
    with pytest.raises(VerificationError, match="carries no certificate chain") as err:
        verify_model_with_certificates(model, load_certificates([build_pki(tmp_path / "pki").root]))
    assert "--key" in err.value.hint
    assert verify_model(model, key.public_key()).files == 3


def test_no_trusted_root_is_a_config_error_not_a_system_store(p256: Pki, tmp_path: Path) -> None:
    model = _model(tmp_path / "m")
    _sign(model, p256)
    with pytest.raises(ConfigError, match="no trusted root"):
        verify_model_with_certificates(model, [])


def test_unreadable_certificate_file_is_a_config_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    with pytest.raises(ConfigError, match="not a PEM certificate"):
        load_certificates([junk])
    with pytest.raises(ConfigError, match="cannot be read"):
        load_certificates([tmp_path / "absent.pem"])
