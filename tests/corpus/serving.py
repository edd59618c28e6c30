"""Servable model folders built with the real libraries: a scikit-learn logistic regression,
as skops and as ONNX (skl2onnx), with a `serving.yaml` and the training data's profile.

The same data and model back the gateway's tests, its attack simulations and its benchmark.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import joblib
import numpy as np
import yaml
from numpy.typing import NDArray
from skl2onnx import to_onnx
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
from skops.io import dump

from bastion.serve.detect import TrainingProfile

FEATURES = 20
LABELS = ("legit", "fraud")


@dataclass(frozen=True)
class Dataset:
    x_train: NDArray[np.float64]
    y_train: NDArray[np.int64]
    x_test: NDArray[np.float64]
    y_test: NDArray[np.int64]


def dataset(seed: int = 7, samples: int = 10_000) -> Dataset:
    x, y = make_classification(
        n_samples=samples, n_features=FEATURES, n_informative=10, n_redundant=4, random_state=seed
    )
    split = int(samples * 0.8)
    return Dataset(x[:split], y[:split], x[split:], y[split:])


def fit(data: Dataset) -> LogisticRegression:
    return LogisticRegression(max_iter=1000).fit(data.x_train, data.y_train)


def write_model(folder: Path, kind: str = "onnx", data: Dataset | None = None, margin: float = 3.0) -> LogisticRegression:
    """Write a servable folder: the model file and serving.yaml (inputs limited to the data's range ± margin)."""
    data = data or dataset()
    model = fit(data)
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "onnx":
        onnx_model = to_onnx(model, data.x_train[:1].astype(np.float32), options={id(model): {"zipmap": False}})
        (folder / "model.onnx").write_bytes(onnx_model.SerializeToString())
        file, extra = "model.onnx", {"probabilities_output": "probabilities"}
    elif kind == "joblib":
        joblib.dump(model, folder / "model.joblib")
        file, extra = "model.joblib", {}
    else:
        dump(model, folder / "model.skops")
        file, extra = "model.skops", {}
    spec = {
        "format": {"onnx": "onnx", "joblib": "joblib"}.get(kind, "sklearn"),
        "file": file,
        "inputs": [
            {
                "name": "features",
                "datatype": "FP32",
                "shape": [-1, FEATURES],
                "min": float(data.x_train.min() - margin),
                "max": float(data.x_train.max() + margin),
            }
        ],
        "labels": list(LABELS),
        "max_batch": 64,
        "max_request_bytes": 65536,
        "profile": TrainingProfile.from_data(data.x_train).to_dict(),
        **extra,
    }
    (folder / "serving.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return model
