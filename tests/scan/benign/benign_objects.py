"""Benign objects from the real libraries, as real checkpoints hold them.

Each factory returns one object that a user or a library really pickles: the str-Enum fields
of a Hugging Face `TrainingArguments`, FSDP's state-dict enums, `torch.return_types`, NumPy 2
dtypes, pandas 3 objects, scikit-learn's estimator zoo and plain Python data. The files are
written by the libraries' own writers (`pickle.dumps`, `torch.save`, `joblib.dump`,
`pd.to_pickle`); nothing here is hand-encoded, so the corpus follows the libraries as they move.

`object_cases()` and `sklearn_cases()` enumerate what is written with which writer, and `write()`
writes it: the tests and the benchmark's corpus builder share them, so both cover the same files.

Heavy libraries are imported inside the factories, so collecting the tests stays cheap.
"""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

Factory = Callable[[], Any]

PICKLE_WRITERS = ("pickle-p0", "pickle-p2", "pickle-p5", "torch.save")
"""Every object is written by each of these; pandas objects also by `pd.to_pickle`."""
SKLEARN_WRITERS = ("pickle-p5", "joblib.dump")
FIT_ERRORS = (ValueError, TypeError, AttributeError)
"""What an estimator that cannot fit tiny default data raises (TSNE's perplexity, random
projections' target dimension): what cannot be fitted is not a file to write."""


# -- plain Python ---------------------------------------------------------------------------


def _stdlib() -> dict[str, Factory]:
    import argparse  # noqa: PLC0415
    import collections  # noqa: PLC0415
    import datetime as dt  # noqa: PLC0415
    import decimal  # noqa: PLC0415
    import enum  # noqa: PLC0415
    import fractions  # noqa: PLC0415
    import ipaddress  # noqa: PLC0415
    import pathlib  # noqa: PLC0415
    import re  # noqa: PLC0415
    import types  # noqa: PLC0415
    import uuid  # noqa: PLC0415
    import zoneinfo  # noqa: PLC0415

    return {
        "ordered-dict": lambda: collections.OrderedDict([("b", 1), ("a", 2)]),
        "counter": lambda: collections.Counter("abracadabra"),
        "deque": lambda: collections.deque([1, 2, 3], maxlen=5),
        "defaultdict-list": lambda: collections.defaultdict(list, {"a": [1]}),
        "datetime-naive": lambda: dt.datetime(2026, 1, 2, 3, 4, 5, 6),
        "datetime-utc": lambda: dt.datetime(2026, 1, 2, tzinfo=dt.UTC),
        "datetime-offset": lambda: dt.datetime(2026, 1, 2, tzinfo=dt.timezone(dt.timedelta(hours=2), "CEST")),
        "date-time-timedelta": lambda: (dt.date(2026, 1, 2), dt.time(3, 4), dt.timedelta(days=1, seconds=2)),
        "decimal": lambda: decimal.Decimal("3.14159"),
        "fraction": lambda: fractions.Fraction(3, 7),
        "uuid": lambda: uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "path": lambda: (pathlib.Path("/tmp/x"), pathlib.PurePosixPath("a/b"), pathlib.PureWindowsPath("c:/x")),
        "ipaddress": lambda: (
            ipaddress.ip_address("10.0.0.1"),
            ipaddress.ip_address("::1"),
            ipaddress.ip_network("10.0.0.0/8"),
            ipaddress.ip_interface("10.0.0.1/24"),
            ipaddress.ip_network("fe80::/64"),
        ),
        "regex": lambda: re.compile(r"[a-z]+\d*", re.IGNORECASE | re.MULTILINE),
        "simple-namespace": lambda: types.SimpleNamespace(lr=0.1, name="run", steps=[1, 2]),
        "argparse-namespace": lambda: argparse.Namespace(lr=0.1, name="run"),
        "zoneinfo": lambda: zoneinfo.ZoneInfo("Europe/Paris"),
        "stdlib-enums": lambda: (enum.Enum, enum.IntFlag, re.IGNORECASE, re.IGNORECASE | re.MULTILINE),
        "containers": lambda: {"set": {1, 2}, "frozenset": frozenset({"a"}), "bytes": b"\x00", "ba": bytearray(b"x"),
                               "complex": 1 + 2j, "range": range(3), "slice": slice(1, 5, 2), "none": None,
                               "ellipsis": ..., "big": 1 << 100, "float": float("inf")},
    }


# -- PyTorch --------------------------------------------------------------------------------


def _torch() -> dict[str, Factory]:
    def return_types() -> object:
        import torch  # noqa: PLC0415

        x = torch.arange(12.0).reshape(3, 4)
        return {
            "max": torch.max(x, dim=0),
            "min": torch.min(x, dim=1),
            "sort": torch.sort(x, dim=1),
            "topk": torch.topk(x, 2),
            "kthvalue": torch.kthvalue(x, 1),
            "mode": torch.mode(x),
            "median": torch.median(x, dim=0),
            "aminmax": torch.aminmax(x),
            "cummax": torch.cummax(x, dim=0),
            "qr": torch.linalg.qr(x),
            "svd": torch.linalg.svd(x),
            "slogdet": torch.linalg.slogdet(torch.eye(3)),
        }

    def fsdp_state() -> object:
        from torch.distributed.fsdp import (  # noqa: PLC0415
            BackwardPrefetch,
            OptimStateKeyType,
            ShardingStrategy,
            StateDictType,
        )

        return {
            "sharding_strategy": ShardingStrategy.FULL_SHARD,
            "all_strategies": list(ShardingStrategy),
            "state_dict_type": StateDictType.SHARDED_STATE_DICT,
            "all_types": list(StateDictType),
            "backward_prefetch": BackwardPrefetch.BACKWARD_PRE,
            "optim_key": OptimStateKeyType.PARAM_NAME,
        }

    def fsdp_configs() -> object:
        from torch.distributed.fsdp import (  # noqa: PLC0415
            CPUOffload,
            FullOptimStateDictConfig,
            FullStateDictConfig,
            MixedPrecision,
        )

        return {
            "cpu_offload": CPUOffload(offload_params=False),
            "state_dict_config": FullStateDictConfig(offload_to_cpu=True, rank0_only=True),
            "optim_config": FullOptimStateDictConfig(offload_to_cpu=True),
            "mixed_precision": MixedPrecision(),
        }

    def torch_enums() -> object:
        import torch  # noqa: PLC0415

        return {"dtypes": [torch.float32, torch.bfloat16, torch.int8], "device": torch.device("cpu"),
                "layout": torch.strided, "size": torch.Size([2, 3])}

    return {"return-types": return_types, "fsdp-enums": fsdp_state, "fsdp-configs": fsdp_configs,
            "torch-types": torch_enums}


# -- NumPy 2 --------------------------------------------------------------------------------


def _numpy() -> dict[str, Factory]:
    def string_dtype() -> object:
        import numpy as np  # noqa: PLC0415
        from numpy.dtypes import StringDType  # noqa: PLC0415

        return {
            "plain": np.array(["a", "bb", "ccc" * 40], dtype=StringDType()),
            "na": np.array(["a", None], dtype=StringDType(na_object=None)),
            "na-nan": np.array(["a", np.nan], dtype=StringDType(na_object=np.nan)),
            "no-coerce": np.array(["x"], dtype=StringDType(coerce=False)),
            "dtype": StringDType(),
        }

    def dates() -> object:
        import numpy as np  # noqa: PLC0415

        return {
            "datetime64": np.array(["2026-01-01", "NaT"], dtype="datetime64[ns]"),
            "datetime64-D": np.arange("2026-01", "2026-02", dtype="datetime64[D]"),
            "timedelta64": np.array([1, 2], dtype="timedelta64[ms]"),
            "scalars": (np.datetime64("2026-01-01T00:00"), np.timedelta64(3, "h")),
        }

    def structured() -> object:
        import numpy as np  # noqa: PLC0415

        dtype = np.dtype([("name", "U10"), ("age", "<i4"), ("w", ">f8", (2,)), ("flag", "?")])
        return {
            "structured": np.array([("a", 1, (1.0, 2.0), True)], dtype=dtype),
            "record": np.rec.array([(1, 2.0)], dtype=[("a", "i4"), ("b", "f8")]),
            "aligned": np.dtype({"names": ["a", "b"], "formats": ["i1", "i8"]}, align=True),
            "void": np.void(b"\x01\x02"),
        }

    def object_array() -> object:
        import numpy as np  # noqa: PLC0415

        return np.array([1, "two", 3.0, None, (4, 5), {"six": 6}, [7]], dtype=object)

    def scalars_and_kinds() -> object:
        import numpy as np  # noqa: PLC0415

        return {
            "scalars": [np.float16(1.5), np.float32(2.5), np.float64(3.5), np.longdouble(4.5), np.int8(-1),
                        np.uint64(2**63), np.complex64(1j), np.bool_(True), np.str_("s"), np.bytes_(b"b")],
            "arrays": [np.zeros(3, dtype=t) for t in ("f2", "f4", "f8", "c8", "c16", "i1", "u2", "?", "S3", "U3")],
            "fortran": np.asfortranarray(np.ones((2, 3))),
            "masked": np.ma.masked_array([1, 2, 3], mask=[0, 1, 0]),
            "matrix-free-2d": np.eye(2),
            "generator": np.random.default_rng(0),
            "random-state": np.random.RandomState(0),
        }

    return {"string-dtype": string_dtype, "datetimes": dates, "structured": structured,
            "object-array": object_array, "scalars-and-kinds": scalars_and_kinds}


# -- pandas 3 -------------------------------------------------------------------------------


def _pandas() -> dict[str, Factory]:
    def frame() -> object:
        import numpy as np  # noqa: PLC0415
        import pandas as pd  # noqa: PLC0415

        n = 4
        return pd.DataFrame(
            {
                "int": np.arange(n),
                "float": np.linspace(0, 1, n),
                "cat": pd.Categorical(["a", "b", "a", "c"], ordered=True),
                "tz": pd.date_range("2026-01-01", periods=n, tz="Europe/Paris"),
                "utc": pd.date_range("2026-01-01", periods=n, tz="UTC"),
                "naive": pd.date_range("2026-01-01", periods=n, freq="h"),
                "period": pd.period_range("2026-01", periods=n, freq="M"),
                "interval": pd.interval_range(0, n),
                "sparse": pd.arrays.SparseArray([0, 0, 1, 0]),
                "string": pd.array(["w", "x", None, "z"], dtype="string"),
                "pyarrow-free-bool": pd.array([True, None, False, True], dtype="boolean"),
                "nullable-int": pd.array([1, None, 3, 4], dtype="Int64"),
                "timedelta": pd.to_timedelta(np.arange(n), unit="s"),
                "object": ["a", 1, None, 2.0],
            }
        )

    def multiindex() -> object:
        import pandas as pd  # noqa: PLC0415

        index = pd.MultiIndex.from_product([["a", "b"], [1, 2]], names=["k", "n"])
        return pd.DataFrame({"v": range(4)}, index=index)

    def series() -> object:
        import pandas as pd  # noqa: PLC0415

        return {
            "series": pd.Series([1.0, 2.0], index=["x", "y"], name="s"),
            "cat-series": pd.Series(["a", "b"], dtype="category"),
            "timestamp": pd.Timestamp("2026-01-01", tz="US/Eastern"),
            "period": pd.Period("2026-01", freq="M"),
            "offset": pd.offsets.BDay(2),
            "timedelta": pd.Timedelta("1D"),
            "interval": pd.Interval(0, 1, closed="both"),
            "range-index": pd.RangeIndex(5),
            "categorical-index": pd.CategoricalIndex(["a", "b"]),
            "na": pd.NA,
            "nat": pd.NaT,
        }

    return {"dataframe": frame, "multiindex": multiindex, "series-and-scalars": series}


# -- scikit-learn ---------------------------------------------------------------------------

SGD_LOSSES = ("hinge", "log_loss", "modified_huber", "squared_hinge", "perceptron", "squared_error",
              "huber", "epsilon_insensitive", "squared_epsilon_insensitive")
SGD_REGRESSOR_LOSSES = ("squared_error", "huber", "epsilon_insensitive", "squared_epsilon_insensitive")
# Estimators that need what tiny default data cannot give (a required argument, text, labels
# of a special shape); they are built with arguments in `_sklearn_special` instead.
_SKLEARN_SKIP = frozenset(
    {
        "ClassifierChain", "ColumnTransformer", "FeatureUnion", "FixedThresholdClassifier", "FrozenEstimator",
        "GridSearchCV", "HalvingGridSearchCV", "HalvingRandomSearchCV", "MultiOutputClassifier",
        "MultiOutputRegressor", "OneVsOneClassifier", "OneVsRestClassifier", "OutputCodeClassifier", "Pipeline",
        "RandomizedSearchCV", "RegressorChain", "SelectFromModel", "SequentialFeatureSelector", "RFE", "RFECV",
        "SparseCoder", "StackingClassifier", "StackingRegressor", "TransformedTargetRegressor",
        "TunedThresholdClassifierCV", "VotingClassifier", "VotingRegressor", "DictVectorizer", "FeatureHasher",
        "CountVectorizer", "HashingVectorizer", "TfidfVectorizer", "TfidfTransformer", "LabelBinarizer",
        "LabelEncoder", "MultiLabelBinarizer", "IsotonicRegression", "PatchExtractor", "KernelDensity",
        "CalibratedClassifierCV", "GaussianProcessClassifier", "GaussianProcessRegressor",
        "GaussianRandomProjection", "SparseRandomProjection", "KernelCenterer", "PLSSVD", "TSNE",
        "SelfTrainingClassifier",
    }
)


def sklearn_estimator_names() -> list[str]:
    """Every estimator scikit-learn lists as a classifier, regressor, transformer or clusterer."""
    from sklearn.utils import all_estimators  # noqa: PLC0415

    names: set[str] = set()
    for kind in ("classifier", "regressor", "transformer", "cluster"):
        names.update(name for name, _cls in all_estimators(type_filter=kind))
    return sorted(names - _SKLEARN_SKIP)


def _tiny_data() -> tuple[Any, Any]:
    import numpy as np  # noqa: PLC0415

    rng = np.random.default_rng(0)
    x = np.abs(rng.normal(size=(30, 4))) + 0.1
    y = (x[:, 0] > x[:, 1]).astype(int)
    return x, y


def fit_sklearn(name: str) -> object:
    """Fit scikit-learn's `name` with default parameters on tiny data, as it would fit."""
    from sklearn.base import is_classifier, is_regressor  # noqa: PLC0415
    from sklearn.utils import all_estimators  # noqa: PLC0415

    special = _sklearn_special()
    if name in special:
        return special[name]()
    cls = dict(all_estimators())[name]
    x, y = _tiny_data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecated estimators and convergence warn; both still fit
        est = cls()
        if is_classifier(est):
            est.fit(x, y)
        elif is_regressor(est):
            target = x[:, :2] if name.startswith(("MultiTask", "PLS", "CCA")) else x[:, 0]
            est.fit(x, target)
        else:
            try:
                est.fit(x, y)
            except TypeError:
                est.fit(x)
    return est


def _sklearn_special() -> dict[str, Factory]:
    def sgd_all_losses() -> object:
        from sklearn.linear_model import SGDClassifier, SGDRegressor  # noqa: PLC0415

        x, y = _tiny_data()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            clf = [SGDClassifier(loss=loss, max_iter=5).fit(x, y) for loss in SGD_LOSSES]
            reg = [SGDRegressor(loss=loss, max_iter=5).fit(x, x[:, 0]) for loss in SGD_REGRESSOR_LOSSES]
        return clf + reg

    def column_transformer() -> object:
        import pandas as pd  # noqa: PLC0415
        from sklearn.compose import ColumnTransformer  # noqa: PLC0415
        from sklearn.linear_model import LogisticRegression  # noqa: PLC0415
        from sklearn.pipeline import Pipeline  # noqa: PLC0415
        from sklearn.preprocessing import OneHotEncoder, StandardScaler  # noqa: PLC0415

        frame = pd.DataFrame({"n": [1.0, 2.0, 3.0, 4.0], "c": ["a", "b", "a", "b"]})
        pipe = Pipeline([
            ("prep", ColumnTransformer([("num", StandardScaler(), ["n"]), ("cat", OneHotEncoder(), ["c"])])),
            ("clf", LogisticRegression()),
        ])
        return pipe.fit(frame, [0, 1, 0, 1])

    def meta_estimators() -> object:
        from sklearn.compose import TransformedTargetRegressor  # noqa: PLC0415
        from sklearn.decomposition import PCA  # noqa: PLC0415
        from sklearn.ensemble import StackingClassifier, VotingClassifier  # noqa: PLC0415
        from sklearn.feature_selection import RFE, SelectFromModel  # noqa: PLC0415
        from sklearn.linear_model import LinearRegression, LogisticRegression  # noqa: PLC0415
        from sklearn.model_selection import GridSearchCV  # noqa: PLC0415
        from sklearn.multiclass import OneVsRestClassifier  # noqa: PLC0415
        from sklearn.pipeline import FeatureUnion, make_pipeline  # noqa: PLC0415
        from sklearn.preprocessing import StandardScaler  # noqa: PLC0415
        from sklearn.tree import DecisionTreeClassifier  # noqa: PLC0415

        x, y = _tiny_data()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return [
                make_pipeline(StandardScaler(), LogisticRegression()).fit(x, y),
                FeatureUnion([("pca", PCA(2)), ("scale", StandardScaler())]).fit(x),
                VotingClassifier([("lr", LogisticRegression()), ("dt", DecisionTreeClassifier())]).fit(x, y),
                StackingClassifier([("lr", LogisticRegression()), ("dt", DecisionTreeClassifier())], cv=2).fit(x, y),
                GridSearchCV(LogisticRegression(), {"C": [0.1, 1.0]}, cv=2).fit(x, y),
                OneVsRestClassifier(LogisticRegression()).fit(x, y),
                SelectFromModel(LogisticRegression()).fit(x, y),
                RFE(LogisticRegression(), n_features_to_select=2).fit(x, y),
                TransformedTargetRegressor(LinearRegression()).fit(x, x[:, 0]),
            ]

    def text_and_labels() -> object:
        from sklearn.feature_extraction import DictVectorizer  # noqa: PLC0415
        from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer  # noqa: PLC0415
        from sklearn.isotonic import IsotonicRegression  # noqa: PLC0415
        from sklearn.neighbors import KernelDensity  # noqa: PLC0415
        from sklearn.preprocessing import LabelBinarizer, LabelEncoder, MultiLabelBinarizer  # noqa: PLC0415

        docs = ["the cat sat", "the dog ran", "a cat and a dog"]
        x, _y = _tiny_data()
        return [
            CountVectorizer().fit(docs),
            TfidfVectorizer().fit(docs),
            DictVectorizer().fit([{"a": 1}, {"b": 2}]),
            LabelEncoder().fit(["x", "y"]),
            LabelBinarizer().fit([1, 2, 3]),
            MultiLabelBinarizer().fit([{"a"}, {"b", "c"}]),
            IsotonicRegression().fit([1, 2, 3], [1, 3, 2]),
            KernelDensity().fit(x),
        ]

    def gaussian_process() -> object:
        from sklearn.gaussian_process import GaussianProcessClassifier, GaussianProcessRegressor  # noqa: PLC0415

        x, y = _tiny_data()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return [GaussianProcessClassifier().fit(x, y), GaussianProcessRegressor().fit(x, x[:, 0])]

    def needs_arguments() -> object:
        from sklearn.cross_decomposition import PLSSVD  # noqa: PLC0415
        from sklearn.linear_model import LogisticRegression  # noqa: PLC0415
        from sklearn.manifold import TSNE  # noqa: PLC0415
        from sklearn.preprocessing import KernelCenterer  # noqa: PLC0415
        from sklearn.random_projection import GaussianRandomProjection, SparseRandomProjection  # noqa: PLC0415
        from sklearn.semi_supervised import SelfTrainingClassifier  # noqa: PLC0415

        x, y = _tiny_data()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return [
                GaussianRandomProjection(n_components=2, random_state=0).fit(x),
                SparseRandomProjection(n_components=2, random_state=0).fit(x),
                KernelCenterer().fit(x @ x.T),
                PLSSVD(n_components=1).fit(x, x[:, :2]),
                TSNE(perplexity=5, max_iter=250, random_state=0).fit(x),
                SelfTrainingClassifier(LogisticRegression()).fit(x, y),
            ]

    return {"needs-arguments": needs_arguments, "SGD-every-loss": sgd_all_losses, "ColumnTransformer-pipeline": column_transformer,
            "meta-estimators": meta_estimators, "text-and-labels": text_and_labels,
            "gaussian-process": gaussian_process}


def sklearn_case_names() -> list[str]:
    return sklearn_estimator_names() + sorted(_sklearn_special())


# -- transformers ---------------------------------------------------------------------------


def _transformers() -> dict[str, Factory]:
    def tiny_config() -> Any:
        from transformers import BertConfig  # noqa: PLC0415

        return BertConfig(vocab_size=32, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=16, max_position_embeddings=16)

    def full_model() -> object:
        import torch  # noqa: PLC0415
        from transformers import BertForSequenceClassification  # noqa: PLC0415

        torch.manual_seed(0)
        return BertForSequenceClassification(tiny_config())

    def configs() -> object:
        from transformers import GenerationConfig, TrainingArguments  # noqa: PLC0415

        return {"config": tiny_config(), "generation": GenerationConfig(max_new_tokens=3),
                "training_args": TrainingArguments(output_dir="out", report_to="none", use_cpu=True)}

    return {"full-model": full_model, "configs": configs}


# -- the registry the tests parametrise over -------------------------------------------------

OBJECT_FACTORIES: dict[str, Callable[[], dict[str, Factory]]] = {
    "stdlib": _stdlib,
    "torch": _torch,
    "transformers": _transformers,
    "numpy": _numpy,
    "pandas": _pandas,
}


# -- what is written, and how ----------------------------------------------------------------


def object_cases() -> Iterator[tuple[str, str, str]]:
    """(library, object name, writer) for every object of OBJECT_FACTORIES and each of its writers."""
    for library, table in OBJECT_FACTORIES.items():
        writers = PICKLE_WRITERS + (("pd.to_pickle",) if library == "pandas" else ())
        for name in table():
            for writer in writers:
                yield library, name, writer


def sklearn_cases() -> Iterator[tuple[str, str]]:
    """(estimator name, writer) for every scikit-learn case and each of SKLEARN_WRITERS."""
    for name in sklearn_case_names():
        for writer in SKLEARN_WRITERS:
            yield name, writer


WRITER_FORMATS = {
    "pickle-p0": "pickle",
    "pickle-p2": "pickle",
    "pickle-p5": "pickle",
    "pd.to_pickle": "pickle",
    "torch.save": "torch-zip",
    "joblib.dump": "joblib",
}
"""The file format each writer produces, as the benchmark's manifests name formats."""


def write(obj: object, writer: str, folder: Path, stem: str) -> Path:
    """Write `obj` to `folder/stem.<suffix>` with the library writer named `writer`."""
    if writer.startswith("pickle-p"):
        path = folder / f"{stem}.pkl"
        path.write_bytes(pickle.dumps(obj, protocol=int(writer.removeprefix("pickle-p"))))
    elif writer == "torch.save":
        import torch  # noqa: PLC0415

        path = folder / f"{stem}.pt"
        torch.save(obj, path)
    elif writer == "joblib.dump":
        import joblib  # noqa: PLC0415

        path = folder / f"{stem}.joblib"
        joblib.dump(obj, path)
    elif writer == "pd.to_pickle":
        import pandas as pd  # noqa: PLC0415

        path = folder / f"{stem}.pkl"
        pd.to_pickle(obj, path)
    else:
        raise ValueError(f"unknown writer {writer!r}; known: {sorted(WRITER_FORMATS)}")
    return path
