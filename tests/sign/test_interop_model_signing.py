"""Bastion's signatures and those of OpenSSF model-signing 1.1.1 verify in each other.

model-signing is run as its own CLI (`python -m model_signing`). It supports ECDSA keys
only in 1.1.1 (Ed25519 signing fails there), so interop uses P-256.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bastion.errors import VerificationError
from bastion.sign.keys import generate_key, load_private_key, load_public_key, save_keypair
from bastion.sign.ossf import sign_model, verify_model


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
        timeout=120,
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
