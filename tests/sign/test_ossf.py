"""Signing and verifying a model in the OpenSSF model-signing bundle format."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest

from bastion.errors import ConfigError, VerificationError
from bastion.sign.keys import generate_key, load_private_key, load_public_key, save_keypair
from bastion.sign.ossf import BUNDLE_MEDIA_TYPE, PAYLOAD_TYPE, PREDICATE_TYPE, sign_model, verify_model


def _model(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "model.safetensors").write_bytes(b"\x10\x00" * 500)
    (root / "config.json").write_text('{"layers": 2}')
    (root / "sub" / "tokenizer.json").write_text('{"vocab": {}}')
    return root


@pytest.fixture(params=["ecdsa-p256", "ed25519", "ecdsa-p384"])
def keypair(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, Path]:
    private = tmp_path / f"{request.param}.key"
    public = save_keypair(generate_key(request.param), private)
    return private, public


def test_signed_model_verifies(keypair: tuple[Path, Path], tmp_path: Path) -> None:
    model = _model(tmp_path / "m")
    bundle = sign_model(model, load_private_key(keypair[0]))
    assert bundle == model / "model.sig"
    verified = verify_model(model, load_public_key(keypair[1]))
    assert verified.files == 3


def test_bundle_has_the_model_signing_shape(tmp_path: Path) -> None:
    model = _model(tmp_path / "m")
    key = generate_key("ecdsa-p256")
    doc = json.loads(sign_model(model, key).read_text())
    assert doc["mediaType"] == BUNDLE_MEDIA_TYPE
    assert doc["verificationMaterial"]["tlogEntries"] == []
    envelope = doc["dsseEnvelope"]
    assert envelope["payloadType"] == PAYLOAD_TYPE and len(envelope["signatures"]) == 1
    statement = json.loads(base64.b64decode(envelope["payload"]))
    assert statement["predicateType"] == PREDICATE_TYPE
    names = [r["name"] for r in statement["predicate"]["resources"]]
    assert names == ["config.json", "model.safetensors", "sub/tokenizer.json"]  # model.sig itself is not signed
    assert "model.sig" in statement["predicate"]["serialization"]["ignore_paths"]


def test_flipped_byte_fails_naming_the_file(tmp_path: Path) -> None:
    model = _model(tmp_path / "m")
    key = generate_key("ecdsa-p256")
    sign_model(model, key)
    data = bytearray((model / "model.safetensors").read_bytes())
    data[100] ^= 0x01
    (model / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(VerificationError, match=r"model\.safetensors: digest differs"):
        verify_model(model, key.public_key())


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (lambda m: (m / "config.json").unlink(), r"config\.json: missing"),
        (lambda m: (m / "payload.pkl").write_bytes(b"x"), r"payload\.pkl: extra file"),
        (
            lambda m: (m / "sub" / "tokenizer.json").rename(m / "tokenizer.json"),
            r"sub/tokenizer\.json was renamed to tokenizer\.json",
        ),
    ],
    ids=["deleted", "added", "renamed"],
)
def test_changed_file_set_fails_naming_the_cause(tamper: object, message: str, tmp_path: Path) -> None:
    model = _model(tmp_path / "m")
    key = generate_key("ed25519")
    sign_model(model, key)
    tamper(model)  # type: ignore[operator]
    with pytest.raises(VerificationError, match=message):
        verify_model(model, key.public_key())


def test_wrong_key_fails_naming_the_key(tmp_path: Path) -> None:
    model = _model(tmp_path / "m")
    sign_model(model, generate_key("ecdsa-p256"))
    with pytest.raises(VerificationError, match="different key"):
        verify_model(model, generate_key("ecdsa-p256").public_key())


def test_altered_statement_fails_the_signature(tmp_path: Path) -> None:
    model = _model(tmp_path / "m")
    key = generate_key("ecdsa-p256")
    path = sign_model(model, key)
    doc = json.loads(path.read_text())
    statement = json.loads(base64.b64decode(doc["dsseEnvelope"]["payload"]))
    statement["predicate"]["resources"][0]["digest"] = "0" * 64
    doc["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    path.write_text(json.dumps(doc))
    with pytest.raises(VerificationError, match="signature does not verify"):
        verify_model(model, key.public_key())


def test_private_key_file_is_owner_only_and_passphrase_protected(tmp_path: Path) -> None:
    private = tmp_path / "release.key"
    save_keypair(generate_key("ed25519"), private, passphrase=b"s3cret")
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    load_private_key(private, b"s3cret")
    with pytest.raises(ConfigError, match="not a readable PEM private key"):
        load_private_key(private, b"wrong")


def test_missing_signature_is_a_clear_error(tmp_path: Path) -> None:
    model = _model(tmp_path / "m")
    with pytest.raises(VerificationError, match="signature cannot be read"):
        verify_model(model, generate_key("ed25519").public_key())
