"""Small model files for the renderer tests, written fresh into a test's tmp_path.

The malicious pickle calls `os.system("true")` on load; it is only ever dumped here,
never loaded.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

from corpus.hang_guard import HANG_GUARD

FAKE_AWS_KEY = "AKIA" + "QWERTYUIOPASDFGH"
FAKE_PRIVATE_KEY = (
    "-----BEGIN RSA PRIVATE KEY-----\n"
    "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun\n"
    "VTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u+qKhbwKfBstIs+bMY2Zkp18gnTxK\n"
    "-----END RSA PRIVATE KEY-----\n"
)
PRIVATE_KEY_BODY = "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun"


class SystemCall:
    """Pickles as `posix.system("true")`."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("true",))


def clean_pickle(folder: Path) -> Path:
    path = folder / "clean.pkl"
    path.write_bytes(pickle.dumps({"weights": [0.5, 1.5], "name": "tiny"}, protocol=4))
    return path


def malicious_pickle(folder: Path) -> Path:
    path = folder / "evil.pkl"
    path.write_bytes(pickle.dumps({"model": SystemCall()}, protocol=2))
    return path


def nested_zip(folder: Path) -> Path:
    """outer.zip holds inner.zip, which holds evil.pkl."""
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("readme.txt", "nothing to see\n")
        archive.writestr("evil.pkl", pickle.dumps(SystemCall(), protocol=4))
    path = folder / "outer.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("inner.zip", inner.getvalue())
    return path


def truncated_pickle(folder: Path) -> Path:
    """A protocol-2 pickle cut in the middle: it cannot be analysed, so it is not clean."""
    data = pickle.dumps({"weights": list(range(50))}, protocol=2)
    path = folder / "truncated.pkl"
    path.write_bytes(data[: len(data) // 2])
    return path


def notebook_with_secrets(folder: Path) -> Path:
    cells = [
        {"cell_type": "code", "source": [f"aws_key = '{FAKE_AWS_KEY}'\n", "print(aws_key)\n"], "outputs": []},
        {
            "cell_type": "code",
            "source": ["key = open('id_rsa').read()\n"],
            "outputs": [
                {"output_type": "stream", "name": "stdout", "text": FAKE_PRIVATE_KEY.splitlines(keepends=True)}
            ],
        },
    ]
    doc = {"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    path = folder / "leaky.ipynb"
    path.write_text(json.dumps(doc, indent=1), encoding="utf-8")
    return path


def run_scan(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """`bastion scan ARGS` in a fresh interpreter, as a user or CI would run it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    return subprocess.run(
        [sys.executable, "-m", "bastion.cli.main", "scan", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=HANG_GUARD,
        env=env,
        check=False,
    )
