"""Objects real libraries pickle through the catalogue's callables pass (no false alarm).

Each is made by the library itself and pickled by CPython, so the stream is exactly what a
user's file holds: scikit-learn estimators (SGD losses, trees, Cython types), pandas frames
and their dtypes, indexes and time types, NumPy 2 dtypes and generators, torch values.
"""

from __future__ import annotations

import pickle
import types
import warnings
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
import torch
import torch.ao.quantization
from sklearn import ensemble, linear_model, neighbors, tree

from bastion.scan.api import scan_bytes
from corpus.expect import assert_fails_with, assert_passes
from corpus.spec_streams import call, g, s, stream

_X = np.random.RandomState(0).rand(40, 3)
_Y = (_X[:, 0] > 0.5).astype(int)


def _fit(model: object) -> object:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model.fit(_X, _Y)  # type: ignore[attr-defined]


OBJECTS: dict[str, Callable[[], object]] = {
    "sgd-hinge": lambda: _fit(linear_model.SGDClassifier(max_iter=5)),
    "sgd-modified-huber": lambda: _fit(linear_model.SGDClassifier(loss="modified_huber", max_iter=5)),
    "sgd-regressor": lambda: _fit(linear_model.SGDRegressor(loss="epsilon_insensitive", max_iter=5)),
    "hist-gradient-boosting": lambda: _fit(ensemble.HistGradientBoostingClassifier(max_iter=2)),
    "decision-tree": lambda: _fit(tree.DecisionTreeClassifier()),
    "kd-tree": lambda: neighbors.KDTree(_X),
    "data-frame": lambda: pd.DataFrame({"a": [1, 2], "s": pd.array(["x", None], dtype="string"), "f": [0.5, 1.5]}),
    "time-types": lambda: [
        pd.Timestamp("2024-01-01", tz="UTC"),
        pd.Timedelta("1D"),
        pd.NaT,
        pd.Period("2024-01", "M"),
        pd.offsets.MonthEnd(2),
        pd.date_range("2024", periods=3, freq="D"),
    ],
    "indexes": lambda: [pd.RangeIndex(3), pd.interval_range(0, 2), pd.MultiIndex.from_tuples([(1, "a")])],
    "sparse": lambda: pd.arrays.SparseArray([0, 0, 1]),
    "numpy-2-dtypes": lambda: [np.dtypes.StringDType(), np.dtype("datetime64[ns]"), np.array(["x"], dtype="T")],
    "torch-values": lambda: {"dtype": torch.bfloat16, "layout": torch.sparse_coo, "size": torch.Size([2])},
    "return-types": lambda: [torch.max(torch.ones(2, 2), 0), torch.sort(torch.ones(3)), torch.topk(torch.ones(4), 2)],
    "quantization-qconfigs": lambda: [
        torch.ao.quantization.get_default_qconfig("fbgemm"),
        torch.ao.quantization.get_default_qat_qconfig("fbgemm"),
    ],
}


@pytest.mark.parametrize("protocol", [2, 4, 5])
@pytest.mark.parametrize("name", list(OBJECTS))
def test_library_objects_pickled_by_cpython_pass(name: str, protocol: int) -> None:
    assert_passes(scan_bytes(pickle.dumps(OBJECTS[name](), protocol=protocol), f"{name}.pkl"))


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_simple_namespace_passes_but_its_other_types_names_stay_denied(protocol: int) -> None:
    assert_passes(scan_bytes(pickle.dumps(types.SimpleNamespace(lr=0.1, name="x"), protocol=protocol), "ns.pkl"))
    assert_fails_with(scan_bytes(stream(call(g("types", "FunctionType"), s("x"))), "t.pkl"), "pickle.dangerous-global")
