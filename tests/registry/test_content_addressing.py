"""Blobs are named by the SHA-256 of their bytes: the same bytes are stored once, wrong bytes never."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest

from bastion.errors import IntegrityFailure, RegistryError
from bastion.registry import Registry
from bastion.registry.blobs import digest_of_bytes
from registry.artifacts import numpy_folder
from registry.backends import BlobProbe, on_all_backends, sha256_name
from registry.people import Team


@on_all_backends
def test_registering_the_same_bytes_again_makes_a_version_but_no_blob(
    registry: Registry, team: Team, probe: BlobProbe, tmp_path: Path
) -> None:
    folder = numpy_folder(tmp_path)
    first = registry.register(team.contributor, "dup", folder)
    stored = probe.names()

    second = registry.register(team.contributor, "dup", folder)

    assert (first.number, second.number) == (1, 2)
    assert second.files == first.files
    assert second.root_digest == first.root_digest
    assert {f.digest for f in first.files} <= stored
    # The only new blob is the second registration's own scan report (it records the scan's
    # duration, so it differs); no file of the model is stored again.
    assert probe.names() - stored <= {second.scan_blob}
    assert len(probe.names()) <= len(stored) + 1


@on_all_backends
def test_every_blob_is_named_by_the_digest_of_its_bytes(
    registry: Registry, team: Team, probe: BlobProbe, tmp_path: Path
) -> None:
    registry.register(team.contributor, "named", numpy_folder(tmp_path))
    registry.promote(team.contributor, "named", 1, "staging")

    contents = probe.contents()

    assert len(contents) >= 4  # two model files, the scan report, the attestation
    assert {name: sha256_name(data) for name, data in contents.items()} == {name: name for name in contents}


@on_all_backends
def test_put_stream_with_a_wrong_digest_is_refused_and_leaves_nothing(registry: Registry, probe: BlobProbe) -> None:
    before = probe.names()
    claimed = digest_of_bytes(b"what the client said it would send")

    with pytest.raises(RegistryError, match="hash to sha256:" + hashlib.sha256(b"something else").hexdigest()):
        registry.blobs.put_stream(io.BytesIO(b"something else"), claimed)

    assert not registry.blobs.exists(claimed)
    assert probe.names() == before
    assert probe.staging_leftovers() == []


def test_put_stream_with_the_right_digest_stores_once(registry: Registry, probe: BlobProbe) -> None:
    data = b"weights" * 100
    digest = digest_of_bytes(data)

    assert registry.blobs.put_stream(io.BytesIO(data), digest) is True
    assert registry.blobs.put_stream(io.BytesIO(data), digest) is False

    assert probe.contents()[digest] == data
    assert registry.blobs.read_bytes(digest) == data


@pytest.mark.parametrize("digest", ["sha256:abc", "md5:" + "0" * 64, "sha256:" + "G" * 64, "../" + "0" * 64])
def test_a_blob_name_that_is_not_a_sha256_digest_is_refused(registry: Registry, digest: str) -> None:
    with pytest.raises(RegistryError, match="not a sha256 digest"):
        registry.blobs.path_of(digest)


def test_read_bytes_refuses_a_blob_whose_bytes_changed(registry: Registry, probe: BlobProbe) -> None:
    digest = registry.blobs.put_bytes(b"original")
    probe.overwrite(digest, b"swapped!")

    with pytest.raises(IntegrityFailure, match="no longer holds the bytes"):
        registry.blobs.read_bytes(digest)
