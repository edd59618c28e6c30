"""Bastion's signatures and those of OpenSSF model-signing 1.1.1 verify in each other.

model-signing is run as its own CLI (`python -m model_signing`). It supports ECDSA keys
only in 1.1.1 (Ed25519 signing fails there), so interop uses P-256, with a bare key
(`sign key`) and with a certificate chain (`sign certificate`).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bastion.errors import VerificationError
from bastion.sign.certs import load_certificates
from bastion.sign.keys import generate_key, load_private_key, load_public_key, save_keypair
from bastion.sign.ossf import sign_model, verify_model, verify_model_with_certificates
from corpus.hang_guard import HANG_GUARD
from corpus.pki import DAY, LEAF_SUBJECT, NOW, Pki, build_pki, issue_leaf, write_pem


def _model(root: Path) -> Path:
    (root / "shards").mkdir(parents=True)
    (root / "config.json").write_text('{"hidden": 8}')
    (root / "a.txt").write_text("readme")
    (root / "a-b").mkdir()
    (root / "a-b" / "c.bin").write_bytes(b"\x01" * 300)
    (root / "shards" / "model-00001.safetensors").write_bytes(b"\x00\x10" * 4096)
    (root / ".gitattributes").write_text("*.safetensors filter=lfs\n")
    return root


def _model_signing(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "model_signing", *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
        timeout=HANG_GUARD,
    )


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    private = tmp_path / "release.key"
    return private, save_keypair(generate_key("ecdsa-p256"), private)


def test_bastion_signature_verifies_in_model_signing(keys: tuple[Path, Path], tmp_path: Path) -> None:
    model = _model(tmp_path / "model")
    signature = sign_model(model, load_private_key(keys[0]))
    done = _model_signing("verify", "key", model, "--signature", signature, "--public_key", keys[1])
    assert done.returncode == 0, done.stdout + done.stderr


def test_model_signing_signature_verifies_in_bastion(keys: tuple[Path, Path], tmp_path: Path) -> None:
    model = _model(tmp_path / "model")
    signature = model / "model.sig"
    done = _model_signing("sign", "key", model, "--private_key", keys[0], "--signature", signature)
    assert done.returncode == 0, done.stdout + done.stderr
    verified = verify_model(model, load_public_key(keys[1]), signature)
    assert verified.files == 4  # .gitattributes and model.sig are not signed


def test_model_signing_refuses_a_model_bastion_signed_then_tampered(keys: tuple[Path, Path], tmp_path: Path) -> None:
    model = _model(tmp_path / "model")
    signature = sign_model(model, load_private_key(keys[0]))
    (model / "config.json").write_text('{"hidden": 9}')
    done = _model_signing("verify", "key", model, "--signature", signature, "--public_key", keys[1])
    assert done.returncode != 0


def test_bastion_names_the_file_tampered_after_model_signing_signed(keys: tuple[Path, Path], tmp_path: Path) -> None:
    model = _model(tmp_path / "model")
    signature = model / "model.sig"
    assert _model_signing("sign", "key", model, "--private_key", keys[0], "--signature", signature).returncode == 0
    (model / "shards" / "model-00001.safetensors").write_bytes(b"\x00\x11" * 4096)
    with pytest.raises(VerificationError, match=r"shards/model-00001\.safetensors: digest differs"):
        verify_model(model, load_public_key(keys[1]), signature)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return build_pki(tmp_path / "pki")


def test_bastion_certificate_signature_verifies_in_model_signing(pki: Pki, tmp_path: Path) -> None:
    model = _model(tmp_path / "model")
    chain = load_certificates([pki.leaf, pki.intermediate])
    signature = sign_model(model, load_private_key(pki.leaf_key), certificate_chain=chain)
    done = _model_signing("verify", "certificate", model, "--signature", signature, "--certificate_chain", pki.root)
    assert done.returncode == 0, done.stdout + done.stderr


def test_model_signing_refuses_a_bastion_certificate_signature_under_another_root(pki: Pki, tmp_path: Path) -> None:
    model = _model(tmp_path / "model")
    chain = load_certificates([pki.leaf, pki.intermediate])
    signature = sign_model(model, load_private_key(pki.leaf_key), certificate_chain=chain)
    stranger = build_pki(tmp_path / "other", prefix="other-")
    done = _model_signing(
        "verify", "certificate", model, "--signature", signature, "--certificate_chain", stranger.root
    )
    assert done.returncode != 0


def _model_signing_sign_certificate(model: Path, pki: Pki) -> Path:
    signature = model / "model.sig"
    done = _model_signing(
        "sign", "certificate", model, "--private_key", pki.leaf_key, "--signing_certificate", pki.leaf,
        "--certificate_chain", pki.intermediate, "--signature", signature,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return signature


def test_model_signing_certificate_signature_verifies_in_bastion(pki: Pki, tmp_path: Path) -> None:
    model = _model(tmp_path / "model")
    signature = _model_signing_sign_certificate(model, pki)
    verified = verify_model_with_certificates(model, load_certificates([pki.root]), signature)
    assert verified.files == 4
    assert verified.key_hint == LEAF_SUBJECT


def test_bastion_refuses_a_model_signing_certificate_signature_under_another_root(pki: Pki, tmp_path: Path) -> None:
    model = _model(tmp_path / "model")
    signature = _model_signing_sign_certificate(model, pki)
    stranger = build_pki(tmp_path / "other", prefix="other-")
    with pytest.raises(VerificationError, match="certificate chain is not trusted"):
        verify_model_with_certificates(model, load_certificates([stranger.root]), signature)


def test_bastion_names_the_file_tampered_after_model_signing_signed_with_a_certificate(
    pki: Pki, tmp_path: Path
) -> None:
    model = _model(tmp_path / "model")
    signature = _model_signing_sign_certificate(model, pki)
    (model / "a-b" / "c.bin").write_bytes(b"\x02" * 300)
    with pytest.raises(VerificationError, match=r"a-b/c\.bin: digest differs"):
        verify_model_with_certificates(model, load_certificates([pki.root]), signature)


def test_bastion_refuses_an_expired_leaf_that_model_signing_signs_with(pki: Pki, tmp_path: Path) -> None:
    # model-signing neither checks validity when signing nor checks expiry when verifying
    # (it validates the chain at the leaf's notBefore); Bastion validates it now.
    expired = issue_leaf(
        load_private_key(pki.leaf_key), pki.intermediate_cert, pki.intermediate_private,
        not_before=NOW - 2 * DAY, not_after=NOW - DAY,
    )  # fmt: skip
    write_pem(pki.leaf, expired)
    model = _model(tmp_path / "model")
    signature = _model_signing_sign_certificate(model, pki)
    with pytest.raises(VerificationError, match="expired on"):
        verify_model_with_certificates(model, load_certificates([pki.root]), signature)
