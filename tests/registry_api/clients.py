"""What a client of the registry API does: upload blobs, register versions, hold a token."""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path

import httpx
import numpy as np


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def upload(client: httpx.Client, data: bytes) -> str:
    """PUT `data` as a blob and return its digest."""
    digest = digest_of(data)
    answer = client.put(f"/v1/blobs/{digest}", content=data)
    assert answer.status_code in {200, 201}, answer.text
    return digest


def numpy_model(folder: Path) -> dict[str, bytes]:
    """A small model folder as a user would have it: NumPy weights and a JSON config."""
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "weights.npy", np.arange(24, dtype=np.float32).reshape(4, 6))
    (folder / "config.json").write_text('{"architecture": "linear", "inputs": 6, "outputs": 4}\n', encoding="utf-8")
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def register(client: httpx.Client, model: str, files: dict[str, bytes], **fields: object) -> httpx.Response:
    """Upload every file, then register them as the next version of `model`."""
    refs = {name: {"digest": upload(client, data), "size": len(data)} for name, data in files.items()}
    return client.post(f"/v1/models/{model}/versions", json={"files": refs, **fields})


class SystemCall:
    """Unpickling this runs a shell command. Only ever `pickle.dumps`-ed, never loaded."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("echo pwned",))


def malicious_pickle() -> bytes:
    return pickle.dumps(SystemCall())
