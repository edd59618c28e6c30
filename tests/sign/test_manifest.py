"""The model manifest: per-file SHA-256 in model-signing's order, and exactly what differs."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from bastion.errors import ArtifactError, VerificationError
from bastion.sign.manifest import Manifest, compare_manifests, hash_model


def _model(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def test_files_are_ordered_part_by_part_as_model_signing_orders_them(tmp_path: Path) -> None:
    model = _model(tmp_path / "m", {"a.txt": b"1", "a-b/c": b"2", "a/z": b"3"})
    assert [f.name for f in hash_model(model).files] == ["a/z", "a-b/c", "a.txt"]


def test_digests_and_root_digest_are_sha256(tmp_path: Path) -> None:
    model = _model(tmp_path / "m", {"w.bin": b"weights", "config.json": b"{}"})
    manifest = hash_model(model)
    assert {f.name: f.digest for f in manifest.files} == {
        "config.json": hashlib.sha256(b"{}").hexdigest(),
        "w.bin": hashlib.sha256(b"weights").hexdigest(),
    }
    expected_root = hashlib.sha256(hashlib.sha256(b"{}").digest() + hashlib.sha256(b"weights").digest()).hexdigest()
    assert manifest.root_digest() == expected_root


def test_large_file_is_hashed_in_chunks_to_the_same_digest(tmp_path: Path) -> None:
    data = os.urandom(20 << 20)  # larger than two hashing chunks
    model = _model(tmp_path / "m", {"big.bin": data})
    assert hash_model(model).files[0].digest == hashlib.sha256(data).hexdigest()


def test_git_files_at_the_root_are_ignored_but_not_below_it(tmp_path: Path) -> None:
    model = _model(
        tmp_path / "m",
        {"w.bin": b"w", ".gitattributes": b"*", ".git/HEAD": b"ref", "sub/.gitignore": b"x", "model.sig": b"s"},
    )
    names = [f.name for f in hash_model(model, ignore=["model.sig"]).files]
    assert names == ["sub/.gitignore", "w.bin"]


def test_single_file_model_is_named_by_its_file_name(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"abc")
    assert [(f.name, f.digest) for f in hash_model(path).files] == [
        ("model.safetensors", hashlib.sha256(b"abc").hexdigest())
    ]


def test_symlink_is_refused_unless_allowed(tmp_path: Path) -> None:
    model = _model(tmp_path / "m", {"w.bin": b"w", "sub/inside.bin": b"inside"})
    (model / "link.bin").symlink_to("sub/inside.bin")
    with pytest.raises(ArtifactError, match="symbolic link"):
        hash_model(model)
    allowed = {f.name: f.digest for f in hash_model(model, allow_symlinks=True).files}
    assert allowed["link.bin"] == hashlib.sha256(b"inside").hexdigest()
    # A link that leads outside the model is refused even when links are allowed: see test_refusals.py.


def test_missing_model_is_an_artifact_error(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="no such model"):
        hash_model(tmp_path / "absent")


def test_manifest_round_trips_through_json(tmp_path: Path) -> None:
    manifest = hash_model(_model(tmp_path / "m", {"a": b"1", "b/c": b"2"}))
    assert Manifest.from_json(manifest.to_json()) == manifest


@pytest.mark.parametrize("text", ["{", '{"files": [{"name": "a"}]}', '{"files": [{"name": "a", "sha256": "zz"}]}'])
def test_malformed_manifest_is_refused(text: str) -> None:
    with pytest.raises(VerificationError, match="malformed"):
        Manifest.from_json(text)


def _signed_and_tampered(tmp_path: Path) -> tuple[Manifest, Path]:
    model = _model(tmp_path / "m", {"w.bin": b"weights", "tok.json": b"{}", "sub/extra.txt": b"notes"})
    return hash_model(model), model


def test_flipped_byte_is_named_as_changed(tmp_path: Path) -> None:
    signed, model = _signed_and_tampered(tmp_path)
    data = bytearray((model / "w.bin").read_bytes())
    data[3] ^= 0x01
    (model / "w.bin").write_bytes(bytes(data))
    diff = compare_manifests(signed, hash_model(model))
    assert diff.changed == ("w.bin",) and not (diff.missing or diff.extra or diff.renamed)
    assert diff.reasons() == ["w.bin: digest differs from the signed manifest (its bytes changed)"]


def test_deleted_added_and_renamed_files_are_each_named(tmp_path: Path) -> None:
    signed, model = _signed_and_tampered(tmp_path)
    (model / "tok.json").unlink()
    (model / "payload.pkl").write_bytes(b"new")
    (model / "sub" / "extra.txt").rename(model / "sub" / "moved.txt")
    diff = compare_manifests(signed, hash_model(model))
    assert diff.missing == ("tok.json",)
    assert diff.extra == ("payload.pkl",)
    assert diff.renamed == (("sub/extra.txt", "sub/moved.txt"),)
    assert not diff.changed and not diff.is_empty


def test_untouched_model_matches(tmp_path: Path) -> None:
    signed, model = _signed_and_tampered(tmp_path)
    assert compare_manifests(signed, hash_model(model)).is_empty
