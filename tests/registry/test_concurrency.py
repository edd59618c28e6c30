"""Registrations racing for the same model each get a version number of their own."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bastion.registry import Registry
from bastion.registry.records import ModelVersion
from corpus.hang_guard import HANG_GUARD
from registry.artifacts import file_digests, numpy_folder
from registry.backends import on_both_databases
from registry.people import Team

RACERS = 4


@on_both_databases
def test_concurrent_registrations_get_distinct_numbers(registry: Registry, team: Team, tmp_path: Path) -> None:
    folders = [numpy_folder(tmp_path, f"v{i}", seed=i) for i in range(RACERS)]
    start = threading.Barrier(RACERS)

    def _register(folder: Path) -> ModelVersion:
        start.wait(timeout=HANG_GUARD)  # a hang guard: all racers start together
        return registry.register(team.contributor, "raced", folder)

    with ThreadPoolExecutor(RACERS) as pool:
        made = list(pool.map(_register, folders))

    assert sorted(v.number for v in made) == list(range(1, RACERS + 1))
    for folder, version in zip(folders, made, strict=True):
        stored = registry.version(team.reader, "raced", version.number)
        assert {f.path: (f.digest, f.size) for f in stored.files} == file_digests(folder)
    actions = [e.action for e in registry.audit.entries()]
    assert actions.count("model.create") == 1
    assert actions.count("version.register") == RACERS
    assert registry.verify_audit(team.admin).ok
