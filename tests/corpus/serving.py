"""Servable model folders built with the real libraries, as skops and as ONNX (skl2onnx), with a
`serving.yaml` and the training data's profile:

- `write_model`: a scikit-learn logistic regression on `dataset()`, 20 features; its decision
  boundary is a hyperplane, so label-only extraction needs about 150 queries for 95 % agreement.
- `write_nonlinear_model`: a two-hidden-layer MLP (32, 32) on `nonlinear_dataset()`, 20 features
  whose classes are four clusters each; a logistic regression reaches 82 % on it, and copying
  it takes about ten times more labelled queries (a copy trained on 2,000 in-distribution
  records agrees on about 95 %).

The same data and models back the gateway's tests, its attack simulations and its benchmark.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import joblib
import numpy as np
import yaml
from numpy.typing import NDArray
from skl2onnx import to_onnx
from sklearn.base import ClassifierMixin
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
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


def nonlinear_data(seed: int = 7, samples: int = 10_000) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Records whose two classes are four clusters each (at hypercube vertices): no hyperplane separates them."""
    x, y = make_classification(
        n_samples=samples,
        n_features=FEATURES,
        n_informative=10,
        n_redundant=4,
        n_clusters_per_class=4,
        class_sep=1.5,
        random_state=seed,
    )
    return x, y


def nonlinear_dataset(seed: int = 7, samples: int = 10_000) -> Dataset:
    x, y = nonlinear_data(seed, samples)
    split = int(samples * 0.8)
    return Dataset(x[:split], y[:split], x[split:], y[split:])


def fit_nonlinear(data: Dataset, seed: int = 0) -> MLPClassifier:
    """An MLP with two hidden layers of 32 (ReLU), early-stopped on a tenth of the training data."""
    model = MLPClassifier((32, 32), max_iter=300, early_stopping=True, random_state=seed).fit(
        data.x_train, data.y_train
    )
    # The optimiser's state serves only further training, and skops does not trust its type.
    model._optimizer = None
    return model


def write_model(
    folder: Path, kind: str = "onnx", data: Dataset | None = None, margin: float = 3.0
) -> LogisticRegression:
    """Write a servable folder: the model file and serving.yaml (inputs limited to the data's range ± margin)."""
    data = data or dataset()
    model = fit(data)
    write_folder(folder, model, kind, data, margin)
    return model


def write_nonlinear_model(
    folder: Path, kind: str = "onnx", data: Dataset | None = None, margin: float = 3.0
) -> MLPClassifier:
    """`write_model` for the MLP of `fit_nonlinear`, on `nonlinear_dataset()` unless `data` is given."""
    data = data or nonlinear_dataset()
    model = fit_nonlinear(data)
    write_folder(folder, model, kind, data, margin)
    return model


def write_folder(folder: Path, model: ClassifierMixin, kind: str, data: Dataset, margin: float = 3.0) -> None:
    """The model file for `kind` (onnx | joblib | sklearn) and serving.yaml, whose input ranges are
    the training data's ± `margin` and whose profile is the training data's."""
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
