"""Model folders built once per session: fitting and exporting them is most of a test's time."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion.assess.assessment import LoadedModel, load_model_folder

from .targets import write_boosted_trees, write_logistic


@pytest.fixture(scope="session")
def logistic_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_logistic(tmp_path_factory.mktemp("logistic"))


@pytest.fixture(scope="session")
def trees_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_boosted_trees(tmp_path_factory.mktemp("trees"))


@pytest.fixture(scope="session")
def logistic(logistic_folder: Path) -> LoadedModel:
    return load_model_folder(logistic_folder)


@pytest.fixture(scope="session")
def trees(trees_folder: Path) -> LoadedModel:
    return load_model_folder(trees_folder)
