"""Model files written by the real libraries, and one malicious pickle (built, never loaded)."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from pathlib import Path

import numpy as np


class SystemCall:
    """Unpickling this runs a shell command: the classic payload. Only ever `pickle.dumps`-ed."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("echo pwned",))


def malicious_pickle() -> bytes:
    return pickle.dumps(SystemCall())


def numpy_folder(parent: Path, name: str = "numpy-model", seed: int = 0) -> Path:
    """A folder model: weights in .npy and a config.json (different seeds give different bytes)."""
    folder = parent / name
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    np.save(folder / "weights.npy", rng.standard_normal((4, 3)).astype(np.float32))
    (folder / "config.json").write_text(json.dumps({"layers": [4, 3], "seed": seed}), encoding="utf-8")
    return folder


def torch_state_dict(parent: Path, name: str = "model.pt") -> Path:
    """A single-file model: a tiny torch state_dict written by torch.save."""
    import torch  # noqa: PLC0415

    parent.mkdir(parents=True, exist_ok=True)
    path = parent / name
    torch.manual_seed(0)
    torch.save({"linear.weight": torch.randn(2, 3), "linear.bias": torch.zeros(2)}, path)
    return path


def torch_folder(parent: Path, name: str = "torch-model") -> Path:
    folder = parent / name
    torch_state_dict(folder, "pytorch_model.bin")
    (folder / "config.json").write_text(json.dumps({"arch": "linear", "in": 3, "out": 2}), encoding="utf-8")
    return folder


def file_digests(folder: Path) -> dict[str, tuple[str, int]]:
    """path -> (sha256 digest, size) of every file under a folder, as the registry should record them."""
    found = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            found[path.relative_to(folder).as_posix()] = ("sha256:" + hashlib.sha256(data).hexdigest(), len(data))
    return found
