"""What is hashed is what is stored is what is scanned (issue 10, section 3).

Registration read the source three times: to hash it, to store it, to scan it. A file swapped
between the store and the scan left a stored model whose recorded scan describes other bytes:
here a pickle that runs a command is stored, then replaced on disk by a harmless one before the
scan. Now each file is read once into a private copy; the store and the scan both read that copy.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from bastion.registry import Registry
from registry.artifacts import malicious_pickle, numpy_folder
from registry.backends import on_both_databases
from registry.people import Team


@on_both_databases
def test_the_recorded_scan_describes_the_stored_bytes_even_if_the_source_changes(
    registry: Registry, team: Team, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = numpy_folder(tmp_path)
    payload = folder / "model.pkl"
    payload.write_bytes(malicious_pickle())
    store = registry.blobs.put_file

    def store_then_swap_the_source(source: Path, digest: str) -> bool:
        stored = store(source, digest)
        if source.name == payload.name:  # once the pickle is stored, the source turns harmless
            payload.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
        return stored

    monkeypatch.setattr(registry.blobs, "put_file", store_then_swap_the_source)
    version = registry.register(team.contributor, "m", folder)

    stored = next(f for f in version.files if f.path == "model.pkl")
    with registry.blobs.open(stored.digest) as blob:
        assert blob.read() == malicious_pickle()
    report = json.loads(registry.scan_report(team.reader, "m", version.number))
    assert report["verdict"] == "fail"
    rules = {f["rule_id"] for file in report["files"] for f in file["findings"]}
    assert any(rule.startswith("pickle.") for rule in rules), rules
