"""Count the benign corpus files that raise any alarm, per library (issue 11's before/after).

Writes every object of `benign_objects` with every writer the tests use, plus a real Trainer and
Lightning run, scans each file, and prints one row per library: files, files with an alarm at
LOW or above, files with an alarm at HIGH or above. Run it against any source tree:

    PYTHONPATH=src python tests/scan/benign/measure.py
    PYTHONPATH=/tmp/before/src python tests/scan/benign/measure.py   # an older checkout
"""

from __future__ import annotations

import collections
import logging
import pickle
import sys
import tempfile
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benign_objects as objects
import benign_runs as runs

from bastion.findings import Severity
from bastion.scan.api import scan_path


def _write(obj: object, writer: str, path: Path) -> Path:
    if writer.startswith("pickle-p"):
        path.write_bytes(pickle.dumps(obj, protocol=int(writer.removeprefix("pickle-p"))))
    elif writer == "torch.save":
        import torch  # noqa: PLC0415

        torch.save(obj, path)
    elif writer == "joblib.dump":
        import joblib  # noqa: PLC0415

        joblib.dump(obj, path)
    else:
        import pandas as pd  # noqa: PLC0415

        pd.to_pickle(obj, path)
    return path


def main() -> None:
    warnings.simplefilter("ignore")
    logging.disable(logging.WARNING)
    out = Path(tempfile.mkdtemp(prefix="benign-measure-"))
    files: dict[str, list[Path]] = collections.defaultdict(list)
    for library, table in objects.OBJECT_FACTORIES.items():
        writers = ["pickle-p2", "pickle-p5", "torch.save"] + (["pd.to_pickle"] if library == "pandas" else [])
        for name, factory in table().items():
            for writer in writers:
                files[library].append(_write(factory(), writer, out / f"{library}-{name}-{writer}.bin"))
    for name in objects.sklearn_case_names():
        estimator = objects.fit_sklearn(name)
        for writer in ("pickle-p5", "joblib.dump"):
            files["sklearn"].append(_write(estimator, writer, out / f"sklearn-{name}-{writer}.bin"))
    for library, build in (("transformers-trainer", runs.transformers_trainer_folder),
                           ("lightning", runs.lightning_checkpoint_folder),
                           ("accelerate-state", runs.accelerate_state_folder)):
        folder = build(out)
        files[library] = sorted(p for p in folder.rglob("*") if p.is_file())
    print(f"{'library':22} {'files':>6} {'any alarm':>10} {'HIGH+':>6}  names behind the alarms")
    for library, paths in files.items():
        low = high = 0
        names: collections.Counter[str] = collections.Counter()
        for path in paths:
            findings = scan_path(path).findings
            alarms = [f for f in findings if f.severity >= Severity.LOW]
            low += bool(alarms)
            high += any(f.severity >= Severity.HIGH for f in alarms)
            names.update({f.evidence.split("(")[0] or f.rule_id for f in alarms})
        top = ", ".join(n for n, _c in names.most_common(4))
        print(f"{library:22} {len(paths):6} {low:10} {high:6}  {top}")


if __name__ == "__main__":
    main()
