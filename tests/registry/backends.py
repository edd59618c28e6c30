"""The four registry deployments under test: SQLite or PostgreSQL, beside a folder or S3 (moto)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bastion.registry import Registry

PG_ADMIN_URL = os.environ.get("BASTION_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
BUCKET = "bastion-registry-tests"
MakeRegistry = Callable[..., Registry]  # make_registry(policy: str | None = None) -> Registry


@dataclass(frozen=True)
class Backend:
    database: str  # "sqlite" | "postgresql"
    blobs: str  # "local" | "s3"

    @property
    def id(self) -> str:
        return f"{self.database}-{self.blobs}"


SQLITE_LOCAL = Backend("sqlite", "local")
ALL_BACKENDS = (
    SQLITE_LOCAL,
    Backend("postgresql", "local"),
    Backend("sqlite", "s3"),
    Backend("postgresql", "s3"),
)
DATABASES = (SQLITE_LOCAL, Backend("postgresql", "local"))

on_all_backends = pytest.mark.parametrize("backend", ALL_BACKENDS, ids=lambda b: b.id, indirect=True)
on_both_databases = pytest.mark.parametrize("backend", DATABASES, ids=lambda b: b.id, indirect=True)


def under_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in {"", "0", "false", "no"}


@dataclass(frozen=True)
class S3Endpoint:
    url: str
    client: Any  # a boto3 S3 client on the moto server

    def options(self) -> dict[str, Any]:
        return {
            "endpoint_url": self.url,
            "key": "testing",
            "secret": "testing",
            "client_kwargs": {"region_name": "us-east-1"},
        }


class BlobProbe:
    """Looks at a registry's blob store from outside it: the folder itself, or S3 through boto3."""

    def __init__(self, registry: Registry, backend: Backend, s3: S3Endpoint | None) -> None:
        self.registry = registry
        self.backend = backend
        self.s3 = s3

    def _key(self, digest: str) -> str:
        bucket, _, key = self.registry.blobs.path_of(digest).partition("/")
        assert bucket == BUCKET
        return key

    def contents(self) -> dict[str, bytes]:
        """Every stored blob by its name (`sha256:` + the hex its path spells), with its bytes."""
        found: dict[str, bytes] = {}
        if self.backend.blobs == "local":
            base = Path(self.registry.config.blobs) / "sha256"
            for path in base.rglob("*"):
                if path.is_file():
                    found[f"sha256:{path.parent.name}{path.name}"] = path.read_bytes()
            return found
        assert self.s3 is not None
        prefix = self.registry.config.blobs.removeprefix(f"s3://{BUCKET}/").rstrip("/") + "/sha256/"
        pages = self.s3.client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
        for page in pages:
            for item in page.get("Contents", []):
                key = item["Key"]
                first, rest = key.removeprefix(prefix).split("/")
                found[f"sha256:{first}{rest}"] = self.s3.client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        return found

    def names(self) -> set[str]:
        return set(self.contents())

    def staging_leftovers(self) -> list[str]:
        """Anything left in the store's upload area."""
        if self.backend.blobs == "local":
            incoming = Path(self.registry.config.blobs) / "incoming"
            return [p.name for p in incoming.rglob("*") if p.is_file()] if incoming.exists() else []
        assert self.s3 is not None
        prefix = self.registry.config.blobs.removeprefix(f"s3://{BUCKET}/").rstrip("/") + "/incoming/"
        listed = self.s3.client.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
        return [item["Key"] for item in listed.get("Contents", [])]

    def overwrite(self, digest: str, data: bytes) -> None:
        """Replace a stored blob's bytes behind the registry's back, as an attacker with store access would."""
        if self.backend.blobs == "local":
            path = Path(self.registry.blobs.path_of(digest))
            assert path.is_file()
            path.chmod(0o644)
            path.write_bytes(data)
        else:
            assert self.s3 is not None
            self.s3.client.put_object(Bucket=BUCKET, Key=self._key(digest), Body=data)


def sha256_name(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()
