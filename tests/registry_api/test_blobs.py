"""Uploads: bytes that do not match their digest are refused, the same bytes are stored once."""

from __future__ import annotations

from pathlib import Path

import httpx

from registry_api.clients import digest_of
from registry_api.conftest import Server


def _stored_files(server: Server) -> list[Path]:
    return [p for p in Path(server.registry.blobs.root).rglob("*") if p.is_file()]


def test_bytes_that_do_not_match_the_digest_are_refused(server: Server, admin: httpx.Client) -> None:
    before = _stored_files(server)
    claimed = digest_of(b"the real weights")
    answer = admin.put(f"/v1/blobs/{claimed}", content=b"a swapped payload")
    assert answer.status_code == 400
    assert "hash to" in answer.json()["error"] and answer.json()["hint"]
    assert admin.head(f"/v1/blobs/{claimed}").status_code == 404
    assert _stored_files(server) == before  # nothing kept, not even in the staging area


def test_the_same_bytes_are_stored_once(server: Server, admin: httpx.Client) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB: more than one batch and one spool threshold
    digest = digest_of(data)
    first = admin.put(f"/v1/blobs/{digest}", content=data)
    assert first.status_code == 201 and first.json() == {"digest": digest, "stored": True}
    again = admin.put(f"/v1/blobs/{digest}", content=data)
    assert again.status_code == 200 and again.json() == {"digest": digest, "stored": False}
    assert server.registry.blobs.read_bytes(digest) == data


def test_a_streamed_upload_of_unknown_length_is_stored(admin: httpx.Client) -> None:
    parts = [b"a" * 700_000, b"b" * 700_000, b"c" * 10]
    digest = digest_of(b"".join(parts))
    answer = admin.put(f"/v1/blobs/{digest}", content=iter(parts))  # chunked: no Content-Length
    assert answer.status_code == 201, answer.text


def test_a_malformed_digest_is_422(admin: httpx.Client) -> None:
    for digest in ["sha256:XYZ", "md5:" + "0" * 32, "sha256:" + "A" * 64]:
        answer = admin.put(f"/v1/blobs/{digest}", content=b"x")
        assert answer.status_code == 422, digest
        assert set(answer.json()) == {"error", "hint"}


def test_an_upload_over_the_limit_is_413_and_not_stored(server: Server, admin: httpx.Client) -> None:
    server.app.state.max_blob_bytes = 1000
    data = b"x" * 2000
    digest = digest_of(data)
    declared = admin.put(f"/v1/blobs/{digest}", content=data)  # refused on its Content-Length
    assert declared.status_code == 413 and set(declared.json()) == {"error", "hint"}
    with server.client(server.admin_token) as fresh:
        streamed = fresh.put(f"/v1/blobs/{digest}", content=iter([data[:900], data[900:]]))  # refused while read
        assert streamed.status_code == 413
        assert fresh.head(f"/v1/blobs/{digest}").status_code == 404
