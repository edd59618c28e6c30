"""`bastion keygen`, `sign` and `verify` through the real CLI: exit codes and messages."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path


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
