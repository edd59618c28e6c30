"""Model files written by the real libraries (torch, numpy, scikit-learn, joblib, safetensors,
onnx, h5py), plus the formats no installed library writes (GGUF, TensorFlow protobufs), encoded
by hand from their specifications.

Each builder writes one file (or folder) under the directory it is given and returns its path.
Heavy libraries are imported inside the builders, so a test pays only for what it builds.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import marshal
import pickle
import struct
import tarfile
import warnings
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from corpus import zips
from corpus.payloads import EvalCall, SystemCall

# -- PyTorch --------------------------------------------------------------------------------


def _torch_sequential() -> object:
    import torch  # noqa: PLC0415
    from torch import nn  # noqa: PLC0415

    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))


def torch_state_dict(folder: Path, name: str = "model.pt") -> Path:
    import torch  # noqa: PLC0415

    path = folder / name
    torch.save(_torch_sequential().state_dict(), path)  # type: ignore[attr-defined]
    return path


def torch_full_sequential(folder: Path) -> Path:
    import torch  # noqa: PLC0415

    path = folder / "sequential.pt"
    torch.save(_torch_sequential(), path)
    return path


def torch_full_module_subclass(folder: Path) -> Path:
    import torch  # noqa: PLC0415

    from corpus.torch_models import TinyNet  # noqa: PLC0415

    path = folder / "tinynet.pt"
    torch.save(TinyNet(), path)
    return path


def torch_training_checkpoint(folder: Path) -> Path:
    import torch  # noqa: PLC0415

    model = _torch_sequential()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)  # type: ignore[attr-defined]
    loss = model(torch.ones(3, 4)).sum()  # type: ignore[operator]
    loss.backward()
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=10)
    path = folder / "checkpoint.pth"
    torch.save(
        {
            "epoch": 3,
            "model_state_dict": model.state_dict(),  # type: ignore[attr-defined]
            "optimizer_state_dict": optimizer.state_dict(),
            "scheduler_state_dict": scheduler.state_dict(),
            "loss": float(loss.detach()),
            "rng_state": torch.get_rng_state(),
        },
        path,
    )
    return path


def torch_legacy(folder: Path, obj: object | None = None, name: str = "legacy.pt") -> Path:
    import torch  # noqa: PLC0415

    path = folder / name
    torch.save(obj if obj is not None else _torch_sequential().state_dict(), path, _use_new_zipfile_serialization=False)  # type: ignore[attr-defined]
    return path


def torchscript_scripted(folder: Path) -> Path:
    import torch  # noqa: PLC0415

    from corpus.torch_models import TinyNet  # noqa: PLC0415

    path = folder / "scripted.pt"
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"`torch\.jit\.\w+` is deprecated", DeprecationWarning)
        torch.jit.save(torch.jit.script(TinyNet()), str(path))
    return path


def torchscript_traced(folder: Path) -> Path:
    import torch  # noqa: PLC0415

    from corpus.torch_models import TinyNet  # noqa: PLC0415

    path = folder / "traced.pt"
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"`torch\.jit\.\w+` is deprecated", DeprecationWarning)
        torch.jit.save(torch.jit.trace(TinyNet(), torch.zeros(1, 4)), str(path))
    return path


def torchscript_quantized(folder: Path, how: str) -> Path:
    """A quantized model saved as TorchScript, as mobile deployments ship it: `dynamic` (int8
    Linear, scripted), or `static` (fbgemm, calibrated once) `scripted` or `traced`."""
    import torch  # noqa: PLC0415
    from torch.ao import quantization as tq  # noqa: PLC0415

    from corpus.torch_models import TinyConvNet, TinyNet  # noqa: PLC0415

    path = folder / f"quantized-{how}.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization and torch.jit deprecation notices
        if how == "dynamic":
            model: torch.nn.Module = tq.quantize_dynamic(TinyNet(), {torch.nn.Linear}, dtype=torch.qint8)
            program = torch.jit.script(model)
        else:
            float_model = TinyConvNet().eval()
            float_model.qconfig = tq.get_default_qconfig("fbgemm")
            prepared = tq.prepare(float_model)
            prepared(torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(0)))
            model = tq.convert(prepared)
            program = torch.jit.script(model) if how == "static-scripted" else torch.jit.trace(model, torch.zeros(1, 3, 8, 8))
        torch.jit.save(program, str(path))
    return path


def torch_tensor_plain_pickle(folder: Path) -> Path:
    """A tensor pickled with `pickle.dumps`: its storage travels as an embedded torch zip."""
    import torch  # noqa: PLC0415

    path = folder / "tensor.pkl"
    path.write_bytes(pickle.dumps({"weight": torch.arange(6, dtype=torch.float32).reshape(2, 3)}))
    return path


def torch_malicious(folder: Path, name: str = "malicious.pt") -> Path:
    """A real `torch.save` zip whose data.pkl calls os.system on load."""
    import torch  # noqa: PLC0415

    path = folder / name
    torch.save({"state_dict": _torch_sequential().state_dict(), "hook": SystemCall()}, path)  # type: ignore[attr-defined]
    return path


def torch_legacy_malicious(folder: Path) -> Path:
    return torch_legacy(folder, {"state_dict": {}, "hook": SystemCall()}, name="legacy_malicious.pt")


def torch_large_state_dict(folder: Path, megabytes: int = 200) -> Path:
    """A state dict with `megabytes` MB of tensor data: scanning it must not read the tensors."""
    import torch  # noqa: PLC0415

    path = folder / "large.pt"
    count = megabytes * 1_000_000 // 4
    torch.save({"embedding.weight": torch.zeros(count, dtype=torch.float32), "bias": torch.ones(8)}, path)
    return path


# -- NumPy ----------------------------------------------------------------------------------


def npy_numeric(folder: Path) -> Path:
    path = folder / "weights.npy"
    np.save(path, np.arange(24, dtype=np.float32).reshape(4, 6))
    return path


def npy_object_benign(folder: Path) -> Path:
    path = folder / "objects.npy"
    np.save(path, np.array([{"label": "cat"}, "dog", 3, None], dtype=object), allow_pickle=True)
    return path


def npy_object_malicious(folder: Path) -> Path:
    path = folder / "objects_malicious.npy"
    np.save(path, np.array([SystemCall(), "dog"], dtype=object), allow_pickle=True)
    return path


def npz_plain(folder: Path) -> Path:
    path = folder / "arrays.npz"
    np.savez(path, weights=np.ones((3, 3), dtype=np.float64), bias=np.zeros(3, dtype=np.int64))
    return path


def npz_compressed(folder: Path) -> Path:
    path = folder / "arrays_compressed.npz"
    np.savez_compressed(path, weights=np.ones((30, 30), dtype=np.float32), labels=np.array(["a", "b"]))
    return path


def npz_malicious(folder: Path) -> Path:
    path = folder / "arrays_malicious.npz"
    np.savez_compressed(path, weights=np.ones(3), extra=np.array([EvalCall()], dtype=object))
    return path


# -- scikit-learn and joblib ------------------------------------------------------------------


def _classification_data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 4))
    y = (x[:, 0] + x[:, 1] > 0).astype(int)
    return x, y


SKLEARN_MODEL_NAMES = (
    "logistic-regression", "random-forest", "gradient-boosting", "hist-gradient-boosting", "pipeline-scaler-logreg",
    "svc", "kneighbors-kd-tree", "kneighbors-ball-tree", "mlp", "gaussian-nb", "kmeans", "isolation-forest",
    "decision-tree-regressor", "ridge", "pca", "tfidf", "one-hot-encoder",
)


def sklearn_models() -> dict[str, object]:
    """Small fitted estimators of many kinds, keyed by a name for test ids."""
    from sklearn.cluster import KMeans  # noqa: PLC0415
    from sklearn.decomposition import PCA  # noqa: PLC0415
    from sklearn.ensemble import (  # noqa: PLC0415
        GradientBoostingClassifier,
        HistGradientBoostingClassifier,
        IsolationForest,
        RandomForestClassifier,
    )
    from sklearn.exceptions import ConvergenceWarning  # noqa: PLC0415
    from sklearn.feature_extraction.text import TfidfVectorizer  # noqa: PLC0415
    from sklearn.linear_model import LogisticRegression, Ridge  # noqa: PLC0415
    from sklearn.naive_bayes import GaussianNB  # noqa: PLC0415
    from sklearn.neighbors import KNeighborsClassifier  # noqa: PLC0415
    from sklearn.neural_network import MLPClassifier  # noqa: PLC0415
    from sklearn.pipeline import Pipeline  # noqa: PLC0415
    from sklearn.preprocessing import OneHotEncoder, StandardScaler  # noqa: PLC0415
    from sklearn.svm import SVC  # noqa: PLC0415
    from sklearn.tree import DecisionTreeRegressor  # noqa: PLC0415

    x, y = _classification_data()
    models: dict[str, object] = {
        "logistic-regression": LogisticRegression(),
        "random-forest": RandomForestClassifier(n_estimators=3, max_depth=3, random_state=0),
        "gradient-boosting": GradientBoostingClassifier(n_estimators=3, max_depth=2, random_state=0),
        "hist-gradient-boosting": HistGradientBoostingClassifier(max_iter=3, random_state=0),
        "pipeline-scaler-logreg": Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression())]),
        "svc": SVC(),
        "kneighbors-kd-tree": KNeighborsClassifier(n_neighbors=3, algorithm="kd_tree"),
        "kneighbors-ball-tree": KNeighborsClassifier(n_neighbors=3, algorithm="ball_tree"),
        "mlp": MLPClassifier(hidden_layer_sizes=(4,), max_iter=20, random_state=0),
        "gaussian-nb": GaussianNB(),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for model in models.values():
            model.fit(x, y)  # type: ignore[attr-defined]
    models["kmeans"] = KMeans(n_clusters=2, n_init=1, random_state=0).fit(x)
    models["isolation-forest"] = IsolationForest(n_estimators=3, random_state=0).fit(x)
    models["decision-tree-regressor"] = DecisionTreeRegressor(max_depth=3, random_state=0).fit(x, x[:, 0])
    models["ridge"] = Ridge().fit(x, x[:, 0])
    models["pca"] = PCA(n_components=2).fit(x)
    models["tfidf"] = TfidfVectorizer().fit(["the cat sat", "the dog ran", "a cat and a dog"])
    models["one-hot-encoder"] = OneHotEncoder().fit([["red"], ["green"], ["blue"]])
    return models


JOBLIB_COMPRESSIONS = ("zlib", "gzip", "bz2", "lzma", "xz", "lz4")


def joblib_dump(folder: Path, obj: object, name: str, compress: str | None = None) -> Path:
    import joblib  # noqa: PLC0415

    path = folder / name
    joblib.dump(obj, path, compress=(compress, 3) if compress else 0)
    return path


def joblib_malicious(folder: Path, compress: str | None = None) -> Path:
    """A joblib dump of a model-like dict with a numpy array and a payload."""
    return joblib_dump(
        folder, {"coef": np.ones((2, 2)), "hook": SystemCall()}, f"malicious-{compress or 'plain'}.joblib", compress
    )


# -- safetensors ----------------------------------------------------------------------------


def safetensors_file(folder: Path, name: str = "model.safetensors") -> Path:
    from safetensors.numpy import save_file  # noqa: PLC0415

    path = folder / name
    save_file(
        {"embed.weight": np.ones((4, 3), dtype=np.float32), "head.bias": np.zeros(2, dtype=np.float16)},
        str(path),
        metadata={"format": "pt"},
    )
    return path


def safetensors_with_header_length(folder: Path, length: int) -> Path:
    """A file written by safetensors whose JSON header is exactly `length` bytes long.

    The header length is the first 8 bytes of the file, so it decides what the file's first
    bytes look like (0x80 0x00 is also how a pickle starts; 0x78 0x01 how zlib does).
    """
    from safetensors.numpy import save  # noqa: PLC0415

    for metadata in ({"format": "pt"}, None):
        for size in range(1, length):
            data = save({"w" * size: np.zeros(2, dtype=np.float32)}, metadata=metadata)
            if struct.unpack("<Q", data[:8])[0] == length:
                path = folder / f"header-{length:#x}.safetensors"
                path.write_bytes(data)
                return path
    raise AssertionError(f"no tensor name gives a {length}-byte header")


def safetensors_raw(folder: Path, header: dict[str, object], data: bytes, name: str, declared_length: int | None = None) -> Path:
    """A safetensors file written by hand: 8-byte header length, JSON header, data."""
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    if len(raw) & 0xFF in (0x78, 0x80):
        # Keep each tamper case about its tamper: these lengths also look like zlib or pickle
        # openings, which test_safetensors checks on its own.
        raw += b" " * 8
    length = len(raw) if declared_length is None else declared_length
    path = folder / name
    path.write_bytes(struct.pack("<Q", length) + raw + data)
    return path


def safetensors_trailing_bytes(folder: Path) -> Path:
    path = safetensors_file(folder, "trailing.safetensors")
    with path.open("ab") as handle:
        handle.write(b"\x80\x04\x95" + b"hidden payload" * 4)
    return path


def safetensors_overlapping(folder: Path) -> Path:
    header = {
        "__metadata__": {"format": "pt"},
        "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
        "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},
    }
    return safetensors_raw(folder, header, bytes(12), "overlap.safetensors")


def safetensors_gap(folder: Path) -> Path:
    header = {
        "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
        "b": {"dtype": "F32", "shape": [2], "data_offsets": [16, 24]},
    }
    return safetensors_raw(folder, header, bytes(24), "gap.safetensors")


def safetensors_out_of_bounds(folder: Path) -> Path:
    header = {"a": {"dtype": "F64", "shape": [4], "data_offsets": [0, 32]}}
    return safetensors_raw(folder, header, bytes(16), "out_of_bounds.safetensors")


def safetensors_bad_dtype(folder: Path) -> Path:
    header = {"a": {"dtype": "Q99", "shape": [2], "data_offsets": [0, 8]}}
    return safetensors_raw(folder, header, bytes(8), "bad_dtype.safetensors")


def safetensors_header_beyond_file(folder: Path) -> Path:
    header = {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}
    return safetensors_raw(folder, header, bytes(8), "long_header.safetensors", declared_length=1 << 30)


# -- ONNX -----------------------------------------------------------------------------------


def onnx_one_node(op: str, domain: str) -> Any:
    """An `onnx.ModelProto` whose whole graph is one node `op` of `domain`, from x[1] to y[1]."""
    import onnx  # noqa: PLC0415
    from onnx import helper  # noqa: PLC0415

    node = helper.make_node(op, ["x"], ["y"], domain=domain)
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _onnx_graph(nodes: list[object], initializers: list[object], opsets: list[tuple[str, int]]) -> object:
    import onnx  # noqa: PLC0415
    from onnx import TensorProto, helper  # noqa: PLC0415

    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 2])
    graph = helper.make_graph(nodes, "tiny", [x], [y], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets])
    assert isinstance(model, onnx.ModelProto)
    return model


def _onnx_weight() -> object:
    from onnx import numpy_helper  # noqa: PLC0415

    return numpy_helper.from_array(np.ones((4, 2), dtype=np.float32), "W")


def onnx_matmul(folder: Path) -> Path:
    import onnx  # noqa: PLC0415
    from onnx import helper  # noqa: PLC0415

    model = _onnx_graph([helper.make_node("MatMul", ["X", "W"], ["Y"])], [_onnx_weight()], [("", 17)])
    onnx.checker.check_model(model)
    path = folder / "matmul.onnx"
    onnx.save_model(model, str(path))
    return path


def onnx_microsoft_contrib(folder: Path) -> Path:
    """A com.microsoft contrib op, which onnxruntime ships: not custom code."""
    import onnx  # noqa: PLC0415
    from onnx import helper  # noqa: PLC0415

    node = helper.make_node("FusedMatMul", ["X", "W"], ["Y"], domain="com.microsoft", alpha=1.0)
    model = _onnx_graph([node], [_onnx_weight()], [("", 17), ("com.microsoft", 1)])
    path = folder / "contrib.onnx"
    onnx.save_model(model, str(path))
    return path


def onnx_custom_domain(folder: Path, domain: str = "com.example.custom", op: str = "RunShell") -> Path:
    import onnx  # noqa: PLC0415
    from onnx import helper  # noqa: PLC0415

    node = helper.make_node(op, ["X", "W"], ["Y"], domain=domain)
    model = _onnx_graph([node], [_onnx_weight()], [("", 17), (domain, 1)])
    path = folder / f"custom-{op.lower()}.onnx"
    onnx.save_model(model, str(path))
    return path


def onnx_custom_in_subgraph(folder: Path) -> Path:
    """A custom op hidden in the then-branch of an If node."""
    import onnx  # noqa: PLC0415
    from onnx import TensorProto, helper  # noqa: PLC0415

    out = helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 2])
    then_branch = helper.make_graph([helper.make_node("Exec", ["X", "W"], ["Y"], domain="org.evil")], "then", [], [out])
    else_branch = helper.make_graph([helper.make_node("MatMul", ["X", "W"], ["Y"])], "else", [], [out])
    cond = helper.make_tensor("cond", TensorProto.BOOL, [], [True])
    node = helper.make_node("If", ["cond"], ["Y"], then_branch=then_branch, else_branch=else_branch)
    model = _onnx_graph([node], [_onnx_weight(), cond], [("", 17), ("org.evil", 1)])
    path = folder / "subgraph.onnx"
    onnx.save_model(model, str(path))
    return path


def onnx_external_data(folder: Path, location: str, name: str) -> Path:
    """A model whose weight is read from `location` (relative to the model's folder)."""
    from onnx import external_data_helper, helper  # noqa: PLC0415

    weight = _onnx_weight()
    external_data_helper.set_external_data(weight, location=location, offset=0, length=32)  # type: ignore[arg-type]
    weight.ClearField("raw_data")  # type: ignore[attr-defined]
    model = _onnx_graph([helper.make_node("MatMul", ["X", "W"], ["Y"])], [weight], [("", 17)])
    path = folder / name
    # onnx.save_model would try to write the external file itself; the traversal target must not be touched.
    path.write_bytes(model.SerializeToString())  # type: ignore[attr-defined]
    return path


def onnx_benign_external_data(folder: Path) -> Path:
    """A model saved by onnx with its weights in `weights.bin` beside it; returns the folder."""
    import onnx  # noqa: PLC0415
    from onnx import helper  # noqa: PLC0415

    target = folder / "onnx-external"
    target.mkdir()
    model = _onnx_graph([helper.make_node("MatMul", ["X", "W"], ["Y"])], [_onnx_weight()], [("", 17)])
    onnx.save_model(model, str(target / "model.onnx"), save_as_external_data=True, location="weights.bin", size_threshold=0)
    assert (target / "weights.bin").is_file()
    return target


# -- Keras (HDF5 and .keras) --------------------------------------------------------------------

_LAMBDA_CODE = base64.b64encode(marshal.dumps((lambda x: x).__code__)).decode()


def _keras2_dense(name: str, units: int) -> dict[str, object]:
    return {
        "class_name": "Dense",
        "config": {
            "name": name, "trainable": True, "dtype": "float32", "units": units, "activation": "relu",
            "use_bias": True,
            "kernel_initializer": {"class_name": "GlorotUniform", "config": {"seed": None}},
            "bias_initializer": {"class_name": "Zeros", "config": {}},
            "kernel_regularizer": None, "bias_regularizer": None, "activity_regularizer": None,
            "kernel_constraint": None, "bias_constraint": None,
        },
    }


def _keras2_lambda() -> dict[str, object]:
    return {
        "class_name": "Lambda",
        "config": {
            "name": "lambda", "trainable": True, "dtype": "float32",
            "function": [_LAMBDA_CODE, None, None], "function_type": "lambda", "module": "__main__",
            "output_shape": None, "output_shape_type": "raw", "output_shape_module": None, "arguments": {},
        },
    }


def _keras2_model_config(layers: list[dict[str, object]]) -> str:
    return json.dumps(
        {
            "class_name": "Sequential",
            "config": {
                "name": "sequential",
                "layers": [{"class_name": "InputLayer", "config": {"batch_input_shape": [None, 4], "dtype": "float32", "name": "input_1"}}, *layers],
            },
        }
    )


_KERAS2_TRAINING_CONFIG = json.dumps(
    {
        "loss": "mse", "metrics": ["mae"], "weighted_metrics": None, "loss_weights": None,
        "optimizer_config": {"class_name": "Adam", "config": {"name": "Adam", "learning_rate": 0.001, "beta_1": 0.9}},
    }
)


def keras_h5(folder: Path, model_config: str, name: str) -> Path:
    """A Keras 2 `.h5` as `model.save("x.h5")` lays it out: config attributes and weight groups."""
    import h5py  # noqa: PLC0415

    path = folder / name
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = b"2.15.0"
        f.attrs["backend"] = b"tensorflow"
        f.attrs["model_config"] = model_config.encode("utf-8")
        f.attrs["training_config"] = _KERAS2_TRAINING_CONFIG.encode("utf-8")
        weights = f.create_group("model_weights")
        dense = weights.create_group("dense").create_group("dense")
        dense.create_dataset("kernel:0", data=np.ones((4, 8), dtype=np.float32))
        dense.create_dataset("bias:0", data=np.zeros(8, dtype=np.float32))
    return path


def keras_h5_benign(folder: Path) -> Path:
    return keras_h5(folder, _keras2_model_config([_keras2_dense("dense", 8), _keras2_dense("dense_1", 2)]), "dense.h5")


def keras_h5_lambda(folder: Path) -> Path:
    return keras_h5(folder, _keras2_model_config([_keras2_dense("dense", 8), _keras2_lambda()]), "lambda.h5")


def keras_h5_lambda_escaped(folder: Path) -> Path:
    """The Lambda config with its class name spelt in JSON \\u escapes, so no byte says "Lambda"."""
    text = _keras2_model_config([_keras2_lambda()])
    escaped = text.replace('"class_name": "Lambda"', '"class_name": "\\u004c\\u0061mbda"')
    assert escaped != text and "Lambda" not in escaped and json.loads(escaped) == json.loads(text)
    return keras_h5(folder, escaped, "lambda_escaped.h5")


def _keras3_dense(name: str, units: int, activation: object = "linear") -> dict[str, object]:
    return {
        "module": "keras.layers",
        "class_name": "Dense",
        "config": {
            "name": name, "trainable": True,
            "dtype": {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"}, "registered_name": None},
            "units": units, "activation": activation, "use_bias": True,
            "kernel_initializer": {"module": "keras.initializers", "class_name": "GlorotUniform", "config": {"seed": None}, "registered_name": None},
            "bias_initializer": {"module": "keras.initializers", "class_name": "Zeros", "config": {}, "registered_name": None},
            "kernel_regularizer": None, "bias_regularizer": None, "kernel_constraint": None, "bias_constraint": None,
        },
        "registered_name": None,
        "build_config": {"input_shape": [None, 4]},
    }


def _keras3_lambda() -> dict[str, object]:
    return {
        "module": "keras.layers",
        "class_name": "Lambda",
        "config": {
            "name": "lambda", "trainable": True,
            "function": {"class_name": "__lambda__", "config": {"code": _LAMBDA_CODE, "defaults": None, "closure": None}},
            "arguments": {},
        },
        "registered_name": None,
    }


_KERAS3_EVAL_ACTIVATION = {"module": "builtins", "class_name": "function", "config": "eval", "registered_name": "function"}


def _keras3_config(layers: list[dict[str, object]]) -> dict[str, object]:
    return {
        "module": "keras",
        "class_name": "Sequential",
        "config": {
            "name": "sequential", "trainable": True,
            "layers": [
                {"module": "keras.layers", "class_name": "InputLayer",
                 "config": {"batch_shape": [None, 4], "dtype": "float32", "sparse": False, "name": "input_layer"},
                 "registered_name": None},
                *layers,
            ],
            "build_input_shape": [None, 4],
        },
        "registered_name": None,
        "build_config": {"input_shape": [None, 4]},
        "compile_config": None,
    }


def keras3_archive(folder: Path, layers: list[dict[str, object]], name: str) -> Path:
    """A `.keras` zip as Keras 3 writes it: config.json, metadata.json, model.weights.h5."""
    import h5py  # noqa: PLC0415

    weights = io.BytesIO()
    with h5py.File(weights, "w") as f:
        group = f.create_group("layers").create_group("dense").create_group("vars")
        group.create_dataset("0", data=np.ones((4, 2), dtype=np.float32))
        group.create_dataset("1", data=np.zeros(2, dtype=np.float32))
        f.create_group("optimizer").create_group("vars")
    metadata = {"keras_version": "3.6.0", "date_saved": "2025-01-01@00:00:00"}
    path = folder / name
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("metadata.json", json.dumps(metadata))
        archive.writestr("config.json", json.dumps(_keras3_config(layers)))
        archive.writestr("model.weights.h5", weights.getvalue())
    return path


def keras3_benign(folder: Path) -> Path:
    return keras3_archive(folder, [_keras3_dense("dense", 2)], "dense.keras")


def keras3_lambda(folder: Path) -> Path:
    return keras3_archive(folder, [_keras3_lambda(), _keras3_dense("dense", 2)], "lambda.keras")


def keras3_builtins_eval(folder: Path) -> Path:
    return keras3_archive(folder, [_keras3_dense("dense", 2, activation=_KERAS3_EVAL_ACTIVATION)], "eval.keras")


# -- GGUF -------------------------------------------------------------------------------------

GGUF_UINT32, GGUF_STRING, GGUF_ARRAY = 4, 8, 9

BENIGN_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}{% endif %}{% endfor %}"
)
SSTI_CHAT_TEMPLATE = "{{ ''.__class__.__mro__[1].__subclasses__() }}" + BENIGN_CHAT_TEMPLATE
SSTI_POPEN_TEMPLATE = (
    "{% for x in ().__class__.__base__.__subclasses__() %}{% if 'warning' in x.__name__ %}"
    "{{ x()._module.__builtins__['__import__']('os').popen('true').read() }}{% endif %}{% endfor %}"
)


def _gguf_string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw


def gguf_file(folder: Path, chat_template: str, name: str) -> Path:
    """A GGUF v3 file (llama.cpp's layout): header, typed metadata, one tensor, aligned data."""
    tokens = ["<unk>", "<s>", "</s>", "hello", "world"]
    kvs = [
        ("general.architecture", struct.pack("<I", GGUF_STRING) + _gguf_string("llama")),
        ("general.name", struct.pack("<I", GGUF_STRING) + _gguf_string("tiny-test-model")),
        ("general.alignment", struct.pack("<II", GGUF_UINT32, 32)),
        ("llama.context_length", struct.pack("<II", GGUF_UINT32, 2048)),
        (
            "tokenizer.ggml.tokens",
            struct.pack("<IIQ", GGUF_ARRAY, GGUF_STRING, len(tokens)) + b"".join(_gguf_string(t) for t in tokens),
        ),
        ("tokenizer.chat_template", struct.pack("<I", GGUF_STRING) + _gguf_string(chat_template)),
    ]
    out = bytearray(b"GGUF" + struct.pack("<IQQ", 3, 1, len(kvs)))
    for key, value in kvs:
        out += _gguf_string(key) + value
    # Tensor info: name, n_dims, dims, ggml type (0 = F32), offset into the data section.
    out += _gguf_string("token_embd.weight") + struct.pack("<I", 1) + struct.pack("<Q", 8) + struct.pack("<IQ", 0, 0)
    out += bytes(-len(out) % 32)
    out += np.ones(8, dtype=np.float32).tobytes()
    path = folder / name
    path.write_bytes(bytes(out))
    return path


# -- TensorFlow (protobuf encoded by hand) ------------------------------------------------------


def _pb_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def pb_int(number: int, value: int) -> bytes:
    return _pb_varint(number << 3) + _pb_varint(value)


def pb_bytes(number: int, payload: bytes | str) -> bytes:
    raw = payload.encode() if isinstance(payload, str) else payload
    return _pb_varint(number << 3 | 2) + _pb_varint(len(raw)) + raw


def tf_node(name: str, op: str, *inputs: str) -> bytes:
    """NodeDef{name=1, op=2, input=3, device=4}."""
    return pb_bytes(1, name) + pb_bytes(2, op) + b"".join(pb_bytes(3, i) for i in inputs) + pb_bytes(4, "/device:CPU:0")


def tf_graph(nodes: list[bytes], functions: Sequence[tuple[str, list[bytes]]] = ()) -> bytes:
    """GraphDef{node=1, library=2 (FunctionDefLibrary{function=1: FunctionDef{node_def=3}}), versions=4}."""
    body = b"".join(pb_bytes(1, n) for n in nodes)
    if functions:
        library = b"".join(
            pb_bytes(1, pb_bytes(1, pb_bytes(1, fname)) + b"".join(pb_bytes(3, n) for n in fnodes))  # signature{name}
            for fname, fnodes in functions
        )
        body += pb_bytes(2, library)
    return body + pb_bytes(4, pb_int(1, 1645))


BENIGN_TF_NODES = (
    ("x", "Placeholder"),
    ("w", "VarHandleOp"),
    ("w/Read", "ReadVariableOp", "w"),
    ("bias", "Const"),
    ("y", "MatMul", "x", "w/Read"),
    ("out", "BiasAdd", "y", "bias"),
    ("saver_filename", "Placeholder"),
    ("StringJoin", "StringJoin", "saver_filename"),
    ("ShardedFilename", "ShardedFilename", "StringJoin"),
    ("SaveV2", "SaveV2", "ShardedFilename"),
    ("MergeV2Checkpoints", "MergeV2Checkpoints", "ShardedFilename"),
    ("RestoreV2", "RestoreV2", "saver_filename"),
    ("AssignVariableOp", "AssignVariableOp", "w", "RestoreV2"),
    ("StatefulPartitionedCall", "StatefulPartitionedCall", "x"),
    ("NoOp", "NoOp"),
)


def tf_saved_model(folder: Path, nodes: list[bytes], functions: Sequence[tuple[str, list[bytes]]] = ()) -> Path:
    """`saved_model/saved_model.pb`: SavedModel{schema_version=1, meta_graphs=2: MetaGraphDef{meta_info_def=1, graph_def=2}}."""
    meta_info = pb_bytes(1, pb_bytes(4, "serve") + pb_bytes(5, "2.16.1"))
    meta_graph = meta_info + pb_bytes(2, tf_graph(nodes, functions))
    target = folder / "saved_model"
    target.mkdir()
    path = target / "saved_model.pb"
    path.write_bytes(pb_int(1, 1) + pb_bytes(2, meta_graph))
    return path


def tf_saved_model_benign(folder: Path) -> Path:
    return tf_saved_model(folder, [tf_node(*n) for n in BENIGN_TF_NODES])


def tf_saved_model_pyfunc(folder: Path) -> Path:
    return tf_saved_model(folder, [tf_node(*n) for n in BENIGN_TF_NODES] + [tf_node("hook", "PyFunc", "x")])


def tf_saved_model_pyfunc_in_function(folder: Path) -> Path:
    """The PyFunc node sits in the graph's function library, not in the top-level graph."""
    return tf_saved_model(
        folder, [tf_node(*n) for n in BENIGN_TF_NODES], [("__inference_serve_42", [tf_node("hook", "EagerPyFunc", "x")])]
    )


def tf_saved_model_read_file(folder: Path) -> Path:
    return tf_saved_model(folder, [tf_node("path", "Const"), tf_node("leak", "ReadFile", "path")])


def tf_frozen_graph_pyfunc(folder: Path) -> Path:
    path = folder / "frozen_graph.pb"
    path.write_bytes(tf_graph([tf_node("x", "Placeholder"), tf_node("hook", "PyFuncStateless", "x")]))
    return path


# -- archives ---------------------------------------------------------------------------------


def zip_with(folder: Path, name: str, members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> Path:
    path = folder / name
    with zipfile.ZipFile(path, "w", compression) as archive:
        for member, data in members.items():
            archive.writestr(zipfile.ZipInfo(member), data, compress_type=compression)
    return path


def tar_with(folder: Path, name: str, members: dict[str, bytes], mode: str = "w") -> Path:
    path = folder / name
    with tarfile.open(path, mode) as archive:  # type: ignore[call-overload]
        for member, data in members.items():
            info = tarfile.TarInfo(member)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def tar_gz_of_torch_checkpoint(folder: Path) -> Path:
    source = torch_training_checkpoint(folder)
    path = folder / "checkpoint.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        archive.add(source, arcname="run-7/checkpoint.pth")
    return path


def gzip_layers(payload: bytes, layers: int) -> bytes:
    """`payload` gzipped `layers` times (stored blocks: cheap to build, nothing to gain anyway)."""
    data = payload
    for _ in range(layers):
        data = gzip.compress(data, compresslevel=0, mtime=0)
    return data


def gzip_of_zeros(mib: int, prefix: bytes = b"", suffix: bytes = b"") -> bytes:
    """A gzip member of `prefix`, `mib` MiB of zeros and `suffix`, built without deflating the zeros."""
    head = zlib.compressobj(9, zlib.DEFLATED, -15)
    start = head.compress(prefix) + head.flush(zlib.Z_FULL_FLUSH)
    tail = zlib.compressobj(9, zlib.DEFLATED, -15)
    end = tail.compress(suffix) + tail.flush()
    crc = zlib.crc32(suffix, zips.crc_of_zeros(mib, zlib.crc32(prefix)))
    size = (len(prefix) + (mib << 20) + len(suffix)) & 0xFFFFFFFF
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    return header + start + zips.zero_blocks(mib) + end + struct.pack("<II", crc, size)


# -- notebooks --------------------------------------------------------------------------------

AWS_KEY_ID = "AKIA" + "IOSFODNN7EXAMPLE"  # AWS's documented example key id, split so no scanner flags this file


def notebook(folder: Path, source: str, name: str) -> Path:
    doc = {
        "cells": [
            {"cell_type": "markdown", "metadata": {}, "source": ["# Training run\n", "Loads the data and fits the model."]},
            {
                "cell_type": "code", "execution_count": 1, "metadata": {},
                "outputs": [{"name": "stdout", "output_type": "stream", "text": ["epoch 1 loss 0.31\n"]}],
                "source": source.splitlines(keepends=True),
            },
        ],
        "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    path = folder / name
    path.write_text(json.dumps(doc, indent=1))
    return path


CLEAN_NOTEBOOK_SOURCE = 'import boto3\nsession = boto3.Session(profile_name="training")\nmodel.fit(x, y)\n'
LEAKY_NOTEBOOK_SOURCE = f'import boto3\nclient = boto3.client("s3", aws_access_key_id="{AWS_KEY_ID}")\nmodel.fit(x, y)\n'

