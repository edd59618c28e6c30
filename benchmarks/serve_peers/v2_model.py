"""The model the peers serve, loaded the safe way Bastion loads it, and the V2 answer they give.

`MODEL_DIR` names a folder written by `tests/corpus/serving.py` (model.skops or model.onnx,
and serving.yaml for the labels). scikit-learn is loaded with skops, trusting exactly the
types skops reports (the benchmark wrote the file itself); ONNX runs in ONNX Runtime with one
intra-op and one inter-op thread, as in Bastion's loader. No input is checked: the peers are
the floor, what serving costs with no security at all.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from numpy.typing import NDArray

Predictor = Callable[[NDArray[np.float32]], NDArray[np.float64]]


def model_dir() -> Path:
    return Path(os.environ["MODEL_DIR"])


def labels(folder: Path) -> tuple[str, ...]:
    spec = yaml.safe_load((folder / "serving.yaml").read_text())
    return tuple(spec["labels"])


def load_predictor(folder: Path) -> Predictor:
    """predict_proba of the folder's model, rows of float32 in, class probabilities out."""
    if (folder / "model.onnx").is_file():
        import onnxruntime  # noqa: PLC0415

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"])
        input_name = session.get_inputs()[0].name

        def predict_onnx(rows: NDArray[np.float32]) -> NDArray[np.float64]:
            return np.asarray(session.run(["probabilities"], {input_name: rows})[0], dtype=np.float64)

        return predict_onnx
    from skops.io import get_untrusted_types, load  # noqa: PLC0415

    path = str(folder / "model.skops")
    estimator = load(path, trusted=get_untrusted_types(file=path))

    def predict_skops(rows: NDArray[np.float32]) -> NDArray[np.float64]:
        return np.asarray(estimator.predict_proba(rows), dtype=np.float64)

    return predict_skops


def rows_of(tensor: dict[str, Any]) -> NDArray[np.float32]:
    """The V2 input tensor's rows, unchecked."""
    return np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])


def answer(model: str, request_id: str | None, probabilities: NDArray[np.float64], names: tuple[str, ...]) -> dict[str, Any]:
    """The same V2 document Bastion answers with for a label-only key."""
    winners = probabilities.argmax(axis=1)
    document: dict[str, Any] = {
        "model_name": model,
        "model_version": "1",
        "outputs": [{"name": "label", "datatype": "BYTES", "shape": [len(winners)], "data": [names[i] for i in winners]}],
    }
    if request_id:
        document["id"] = request_id
    return document
