"""The two-step registration the HTTP API uses: blobs first (put_stream), then register_uploaded."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from bastion.errors import ConfigError, RegistryError
from bastion.registry import Registry
from bastion.registry.blobs import digest_of_bytes
from registry.artifacts import file_digests, malicious_pickle, numpy_folder
from registry.backends import on_all_backends
from registry.people import Team


def _upload(registry: Registry, folder: Path) -> dict[str, tuple[str, int]]:
    files = file_digests(folder)
    for name, (digest, _size) in files.items():
        registry.blobs.put_stream(io.BytesIO((folder / name).read_bytes()), digest)
    return files


@on_all_backends
def test_uploaded_blobs_register_and_promote_like_a_folder(registry: Registry, team: Team, tmp_path: Path) -> None:
    folder = numpy_folder(tmp_path)
    files = _upload(registry, folder)

    uploaded = registry.register_uploaded(team.contributor, "up", files)
    local = registry.register(team.contributor, "up", folder)

    assert uploaded.number == 1
    assert {f.path: (f.digest, f.size) for f in uploaded.files} == files
    assert uploaded.root_digest == local.root_digest
    assert registry.promote(team.contributor, "up", 1, "staging").allowed


def test_uploaded_malicious_bytes_are_scanned_at_registration_and_blocked(
    registry: Registry, team: Team, tmp_path: Path
) -> None:
    payload = malicious_pickle()
    digest = digest_of_bytes(payload)
    registry.blobs.put_stream(io.BytesIO(payload), digest)

    version = registry.register_uploaded(team.contributor, "up", {"model.pkl": (digest, len(payload))}, layout="file")

    assert b"pickle.dangerous-global" in registry.scan_report(team.reader, "up", version.number)
    decision = registry.promote(team.contributor, "up", version.number, "staging")
    assert not decision.allowed
    assert any("pickle.dangerous-global" in r for r in decision.reasons)


def test_registering_a_blob_that_was_never_uploaded_is_refused(registry: Registry, team: Team) -> None:
    missing = digest_of_bytes(b"never sent")

    with pytest.raises(RegistryError, match=f"weights.bin: blob {missing} has not been uploaded"):
        registry.register_uploaded(team.contributor, "up", {"weights.bin": (missing, 10)})

    assert registry.models(team.admin) == []


@pytest.mark.parametrize(
    ("name", "layout", "count", "reason"),
    [
        ("../escape.bin", "folder", 1, "has a '..' segment"),
        ("a.bin", "file", 2, "layout 'file' takes exactly one file"),
        ("a.bin", "zip", 1, "unknown layout 'zip'"),
    ],
    ids=["path-escapes", "file-with-two", "unknown-layout"],
)
def test_a_malformed_upload_is_refused(
    registry: Registry, team: Team, name: str, layout: str, count: int, reason: str
) -> None:
    digest = registry.blobs.put_bytes(b"\x00" * 16)
    files = {name if i == 0 else f"extra{i}.bin": (digest, 16) for i in range(count)}

    with pytest.raises(ConfigError, match=reason):
        registry.register_uploaded(team.contributor, "up", files, layout=layout)

    assert registry.models(team.admin) == []


def test_uploaded_sizes_are_the_stored_sizes_not_the_claimed_ones(
    registry: Registry, team: Team, tmp_path: Path
) -> None:
    # Regression: register_uploaded once recorded each size as the client claimed it.
    files = _upload(registry, numpy_folder(tmp_path))
    lying = {name: (digest, size + 1000) for name, (digest, size) in files.items()}

    version = registry.register_uploaded(team.contributor, "up", lying)

    assert {f.path: f.size for f in version.files} == {name: size for name, (_d, size) in files.items()}
