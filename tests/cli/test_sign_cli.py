"""`bastion keygen`, `sign` and `verify` (by key and by certificate) through the real CLI: exit codes and messages."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from corpus.pki import LEAF_SUBJECT, build_pki


def _bastion(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bastion.cli.main", *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **(env or {})},
    )


def _model(tmp_path: Path) -> Path:
    model = tmp_path / "model"
    model.mkdir()
    (model / "weights.safetensors").write_bytes(b"\x00" * 1000)
    (model / "config.json").write_text("{}")
    return model


def test_keygen_sign_verify_round_trip(tmp_path: Path) -> None:
    key = tmp_path / "release.key"
    assert _bastion("keygen", key).returncode == 0
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    model = _model(tmp_path)
    assert _bastion("sign", model, "--key", key).returncode == 0
    done = _bastion("verify", model, "--key", tmp_path / "release.pub")
    assert done.returncode == 0 and "2 files" in done.stdout


def test_verify_of_a_tampered_model_exits_1_naming_the_file(tmp_path: Path) -> None:
    key = tmp_path / "release.key"
    _bastion("keygen", key, "--type", "ed25519")
    model = _model(tmp_path)
    _bastion("sign", model, "--key", key)
    (model / "config.json").write_text('{"x": 1}')
    done = _bastion("verify", model, "--key", tmp_path / "release.pub")
    assert done.returncode == 1
    assert "config.json: digest differs" in done.stderr


def test_passphrase_comes_from_an_environment_variable(tmp_path: Path) -> None:
    key = tmp_path / "release.key"
    assert _bastion("keygen", key, "--passphrase-env", "KEY_PW", env={"KEY_PW": "s3cret"}).returncode == 0
    model = _model(tmp_path)
    wrong = _bastion("sign", model, "--key", key, "--passphrase-env", "KEY_PW", env={"KEY_PW": "nope"})
    assert wrong.returncode == 2 and "passphrase" in wrong.stderr
    assert _bastion("sign", model, "--key", key, "--passphrase-env", "KEY_PW", env={"KEY_PW": "s3cret"}).returncode == 0


def test_keygen_never_overwrites_a_key(tmp_path: Path) -> None:
    key = tmp_path / "release.key"
    _bastion("keygen", key)
    before = key.read_bytes()
    done = _bastion("keygen", key)
    assert done.returncode == 2 and "refusing to overwrite" in done.stderr
    assert key.read_bytes() == before


def test_certificate_sign_and_verify_name_the_signer(tmp_path: Path) -> None:
    pki = build_pki(tmp_path / "pki")
    model = _model(tmp_path)
    signed = _bastion(
        "sign", model, "--key", pki.leaf_key, "--certificate", pki.leaf, "--certificate-chain", pki.intermediate
    )
    assert signed.returncode == 0, signed.stderr
    done = _bastion("verify", model, "--certificate-root", pki.root)
    assert done.returncode == 0, done.stderr
    assert "2 files" in done.stdout and f"signer {LEAF_SUBJECT}" in done.stdout


def test_verify_under_another_root_exits_1_saying_the_chain_is_not_trusted(tmp_path: Path) -> None:
    pki = build_pki(tmp_path / "pki")
    model = _model(tmp_path)
    _bastion("sign", model, "--key", pki.leaf_key, "--certificate", pki.leaf, "--certificate-chain", pki.intermediate)
    done = _bastion("verify", model, "--certificate-root", build_pki(tmp_path / "other", prefix="o-").root)
    assert done.returncode == 1
    assert "certificate chain is not trusted" in done.stderr


def test_verify_needs_exactly_one_of_key_and_certificate_root(tmp_path: Path) -> None:
    pki = build_pki(tmp_path / "pki")
    key = tmp_path / "release.key"
    _bastion("keygen", key)
    model = _model(tmp_path)
    _bastion("sign", model, "--key", key)
    neither = _bastion("verify", model)
    both = _bastion("verify", model, "--key", tmp_path / "release.pub", "--certificate-root", pki.root)
    for done in (neither, both):
        assert done.returncode == 2 and "either --key or --certificate-root" in done.stderr


def test_certificate_chain_without_certificate_is_a_usage_error(tmp_path: Path) -> None:
    pki = build_pki(tmp_path / "pki")
    done = _bastion("sign", _model(tmp_path), "--key", pki.leaf_key, "--certificate-chain", pki.intermediate)
    assert done.returncode == 2 and "needs --certificate" in done.stderr


def test_sign_with_a_certificate_for_another_key_exits_2(tmp_path: Path) -> None:
    pki = build_pki(tmp_path / "pki")
    key = tmp_path / "other.key"
    _bastion("keygen", key)
    done = _bastion("sign", _model(tmp_path), "--key", key, "--certificate", pki.leaf)
    assert done.returncode == 2 and "does not match the public key of the certificate" in done.stderr
