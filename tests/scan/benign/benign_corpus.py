"""The benign-libraries corpus of `benchmarks/scan.py`: the files the tests in this folder scan.

`benchmark_corpus(folder)` writes every object of `benign_objects` with each of its writers,
every scikit-learn case with each of its writers (an estimator that cannot fit tiny default
data is left out, as the test skips it), and the real Trainer, Lightning and Accelerate run
folders of `benign_runs`, each file kept in its run's folder structure. It yields one benign
manifest entry per file. The benchmark imports this module by its path, with `tests/`,
`tests/scan/` and `src/` importable but not this folder, so the folder is put on sys.path here.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benign_objects as objects
import benign_runs as runs

RUN_FORMATS = {".safetensors": "safetensors", ".json": "json"}
"""Formats of run files that the name tells for sure; the others are left unnamed."""


def benchmark_corpus(folder: Path) -> Iterator[dict[str, str]]:
    """Write the benign corpus into `folder` and yield one manifest entry per file."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecations and convergence warnings; the files are the point
        logging.disable(logging.WARNING)
        try:
            yield from _objects(folder / "objects")
            yield from _sklearn(folder / "sklearn")
            yield from _runs(folder, folder / "runs")
        finally:
            logging.disable(logging.NOTSET)


def _entry(path: Path, root: Path, file_format: str, technique: str) -> dict[str, str]:
    entry = {"file": path.relative_to(root).as_posix(), "verdict": "benign", "technique": technique}
    return entry | ({"format": file_format} if file_format else {})


def _objects(where: Path) -> Iterator[dict[str, str]]:
    where.mkdir(parents=True)
    tables = {library: table() for library, table in objects.OBJECT_FACTORIES.items()}
    for library, name, writer in objects.object_cases():
        path = objects.write(tables[library][name](), writer, where, f"{library}-{name}-{writer}")
        yield _entry(path, where.parent, objects.WRITER_FORMATS[writer], f"{library} {name}, written by {writer}")


def _sklearn(where: Path) -> Iterator[dict[str, str]]:
    where.mkdir(parents=True)
    fitted: dict[str, object] = {}
    for name, writer in objects.sklearn_cases():
        if name not in fitted:
            try:
                fitted[name] = objects.fit_sklearn(name)
            except objects.FIT_ERRORS as err:
                print(f"benign-libraries: {name} does not fit tiny default data ({type(err).__name__})", file=sys.stderr)
                fitted[name] = None
        if fitted[name] is None:
            continue
        path = objects.write(fitted[name], writer, where, f"sklearn-{name}-{writer}")
        yield _entry(path, where.parent, objects.WRITER_FORMATS[writer], f"scikit-learn {name}, written by {writer}")


def _runs(root: Path, where: Path) -> Iterator[dict[str, str]]:
    where.mkdir(parents=True)
    for run, build in runs.RUN_FOLDERS.items():
        with contextlib.redirect_stdout(sys.stderr):  # the Trainer prints its logs; stdout is not ours
            out = build(where)
        for path in sorted(p for p in out.rglob("*") if p.is_file()):
            yield _entry(path, root, RUN_FORMATS.get(path.suffix, ""), f"a file of a real {run} run folder")
