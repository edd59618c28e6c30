"""Model folders to assess, made with the real libraries: the gateway's 20-feature logistic
regression (tests/corpus/serving.py) and a non-linear target, gradient-boosted trees exported
to ONNX, which a copy needs many more answers to imitate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml
from numpy.typing import NDArray
from skl2onnx import to_onnx
from sklearn.ensemble import GradientBoostingClassifier

from bastion.serve.detect import TrainingProfile
from corpus.serving import FEATURES, LABELS, Dataset, dataset, write_model

# Rows that measure agreement and feed Knockoff: a fifth of the held-out split keeps tests quick.
HELDOUT_ROWS = 1000


def heldout(data: Dataset | None = None) -> NDArray[np.float64]:
    return (data or dataset()).x_test[:HELDOUT_ROWS]


def write_logistic(folder: Path) -> Path:
    write_model(folder, kind="onnx")
    return folder


def write_boosted_trees(folder: Path, data: Dataset | None = None) -> Path:
    """Gradient-boosted trees (scikit-learn, exported to ONNX) with the same serving.yaml as the
    logistic regression: same data, same published ranges and profile."""
    data = data or dataset()
    # Fitted on half the training rows: boosting is the slowest step of the suite's set-up, and
    # the trees' staircase boundary, not their accuracy, is what makes them dear to copy.
    half = data.x_train.shape[0] // 2
    model = GradientBoostingClassifier(n_estimators=50, max_depth=3, random_state=0)
    model.fit(data.x_train[:half], data.y_train[:half])
    onnx_model = to_onnx(model, data.x_train[:1].astype(np.float32), options={id(model): {"zipmap": False}})
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.onnx").write_bytes(onnx_model.SerializeToString())
    spec = {
        "format": "onnx",
        "file": "model.onnx",
        "inputs": [
            {
                "name": "features",
                "datatype": "FP32",
                "shape": [-1, FEATURES],
                "min": float(data.x_train.min() - 3.0),
                "max": float(data.x_train.max() + 3.0),
            }
        ],
        "labels": list(LABELS),
        "probabilities_output": "probabilities",
        "profile": TrainingProfile.from_data(data.x_train).to_dict(),
    }
    (folder / "serving.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return folder
