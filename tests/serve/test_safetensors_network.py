"""PyTorch models served from safetensors weights and a declared network, without PyTorch.

The reference for every answer is PyTorch itself: a real `nn.Sequential`, trained briefly on
the test data set and saved with `safetensors.torch`. The gateway must give the probabilities
PyTorch gives; weights that do not fit the declared layers, or layers the weights do not
fill, are refused at load.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import save_file

from bastion.errors import ArtifactError, ConfigError
from bastion.serve.gateway import AlarmPolicy
from bastion.serve.loaders import FormatLoader
from bastion.serve.network import Layer, dense_network, read_tensors
from bastion.serve.run import GatewaySettings
from bastion.serve.spec import load_spec, parse_spec
from bastion.sign.keys import generate_key, save_keypair
from bastion.sign.ossf import sign_model
from corpus.gateway_env import bearer, infer_body, make_registry, start_gateway
from corpus.hang_guard import HANG_GUARD
from corpus.serving import FEATURES, LABELS, dataset

MLP_LAYERS: list[Any] = [{"linear": "0"}, "relu", {"linear": "2"}, "tanh", {"linear": "4"}, "softmax"]


def _mlp(seed: int = 0) -> torch.nn.Sequential:
    """A small MLP, trained for a few steps so that its answers are not those of random weights."""
    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Linear(FEATURES, 16), torch.nn.ReLU(), torch.nn.Linear(16, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)
    )
    data = dataset()
    x = torch.tensor(data.x_train[:2000], dtype=torch.float32)
    y = torch.tensor(data.y_train[:2000])
    optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
    for _ in range(60):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        optimizer.step()
    return net.eval()


def _torch_probabilities(net: torch.nn.Module, rows: np.ndarray, *, sigmoid: bool = False) -> np.ndarray:
    with torch.no_grad():
        out = net(torch.tensor(rows, dtype=torch.float32))
        if sigmoid:
            p = torch.sigmoid(out)
            return torch.cat([1 - p, p], dim=1).numpy()
        return torch.softmax(out, dim=1).numpy()


def _spec(layers: list[Any] | None, fmt: str = "safetensors", file: str = "model.safetensors") -> dict[str, Any]:
    data = dataset()
    spec: dict[str, Any] = {
        "format": fmt,
        "file": file,
        "inputs": [
            {
                "name": "features",
                "datatype": "FP32",
                "shape": [-1, FEATURES],
                "min": float(data.x_train.min() - 3),
                "max": float(data.x_train.max() + 3),
            }
        ],
        "labels": list(LABELS),
    }
    if layers is not None:
        spec["layers"] = layers
    return spec


def _folder(root: Path, net: torch.nn.Module, layers: list[Any], **tensors: torch.Tensor) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    weights = {name: t.detach().contiguous() for name, t in net.state_dict().items()} | tensors
    save_file(weights, str(root / "model.safetensors"))
    (root / "serving.yaml").write_text(yaml.safe_dump(_spec(layers), sort_keys=False))
    return root


def _load(folder: Path) -> Any:
    spec = load_spec(folder)
    return FormatLoader(spec, (), allow_pickle=False, stage="production").deserialise((folder / spec.file).read_bytes())


def test_the_network_gives_the_probabilities_pytorch_gives(tmp_path: Path) -> None:
    net = _mlp()
    predict = _load(_folder(tmp_path / "mlp", net, MLP_LAYERS))
    rows = dataset().x_test[:500].astype(np.float32)
    np.testing.assert_allclose(predict(rows), _torch_probabilities(net, rows), rtol=1e-5, atol=1e-6)
    assert (predict(rows).argmax(axis=1) == _torch_probabilities(net, rows).argmax(axis=1)).all()


def test_one_sigmoid_output_serves_two_labels(tmp_path: Path) -> None:
    torch.manual_seed(1)
    net = torch.nn.Sequential(torch.nn.Linear(FEATURES, 1))
    predict = _load(_folder(tmp_path / "logistic", net, [{"linear": "0"}, "sigmoid"]))
    rows = dataset().x_test[:200].astype(np.float32)
    np.testing.assert_allclose(predict(rows), _torch_probabilities(net, rows, sigmoid=True), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_half_brain_float_and_double_weights_are_read_exactly(tmp_path: Path, dtype: torch.dtype) -> None:
    torch.manual_seed(2)
    weight = torch.randn(7, 5).to(dtype)
    save_file({"w": weight}, str(tmp_path / "w.safetensors"))
    read = read_tensors(tmp_path / "w.safetensors")["w"]
    assert read.dtype == np.float32 and read.shape == (7, 5)
    np.testing.assert_array_equal(read, weight.to(torch.float32).numpy())


def test_a_linear_layer_without_bias_is_served(tmp_path: Path) -> None:
    torch.manual_seed(3)
    net = torch.nn.Sequential(torch.nn.Linear(FEATURES, 2, bias=False))
    predict = _load(_folder(tmp_path / "nobias", net, [{"linear": "0"}, "softmax"]))
    rows = dataset().x_test[:50].astype(np.float32)
    np.testing.assert_allclose(predict(rows), _torch_probabilities(net, rows), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("layers", "extra", "named"),
    [
        ([{"linear": "0"}, "relu", {"linear": "2"}, "tanh", {"linear": "9"}, "softmax"], {}, "no tensor 9.weight"),
        (MLP_LAYERS, {"backdoor.weight": torch.ones(2, 2)}, "tensors no declared layer uses: backdoor.weight"),
        ([{"linear": "0"}, "relu", {"linear": "4"}, "softmax"], {}, "does not take 16 inputs"),
        (MLP_LAYERS, {"4.weight": torch.ones(3, 8), "4.bias": torch.zeros(3)}, "ends with 3 outputs for 2 labels"),
        (MLP_LAYERS, {"steps": torch.arange(3)}, "steps' is I64"),
    ],
    ids=["missing-tensor", "unused-tensor", "shape-mismatch", "wrong-width", "integer-tensor"],
)
def test_weights_that_do_not_fit_the_declared_layers_are_refused(
    tmp_path: Path, layers: list[Any], extra: dict[str, torch.Tensor], named: str
) -> None:
    folder = _folder(tmp_path / "bad", _mlp(), layers, **extra)
    with pytest.raises(ArtifactError, match=re.escape(named)):
        _load(folder)


@pytest.mark.parametrize(
    ("spec", "named"),
    [
        (_spec(None), "declare them for safetensors"),
        (_spec([{"linear": "0"}, "softmax"], fmt="onnx", file="model.onnx"), "only for safetensors"),
        (_spec([{"linear": "0"}, "gelu"]), "'gelu'"),
        (_spec([{"linear": "0"}, "relu"]), "the last layer must give probabilities"),
        (_spec([{"conv": "0"}, "softmax"]), "layer 1 must be"),
        (_spec(["softmax"]), "at least one linear layer"),
    ],
    ids=["no-layers", "layers-for-onnx", "unknown-activation", "no-probabilities", "unknown-layer", "no-linear"],
)
def test_a_bad_layer_declaration_is_refused_with_the_reason(spec: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(named)):
        parse_spec(spec)


def test_torchscript_is_refused_with_a_way_out(tmp_path: Path) -> None:
    folder = tmp_path / "scripted"
    folder.mkdir()
    with warnings.catch_warnings():  # TorchScript is deprecated: all the more reason to refuse it
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(_mlp()), str(folder / "model.pt"))
    (folder / "serving.yaml").write_text(yaml.safe_dump(_spec(None, fmt="torchscript", file="model.pt")))
    with pytest.raises(ArtifactError, match="TorchScript") as refused:
        _load(folder)
    assert "ONNX" in (refused.value.hint or "")


def test_the_gateway_serves_a_signed_safetensors_model_as_pytorch_answers(tmp_path: Path) -> None:
    net = _mlp(seed=5)
    folder = _folder(tmp_path / "model", net, MLP_LAYERS)
    key = generate_key("ecdsa-p256")
    save_keypair(key, tmp_path / "signer.key")
    sign_model(folder, key)
    env = make_registry(tmp_path / "registry", [tmp_path / "signer.pub"])
    env.publish("fraud-mlp", folder)
    rows = dataset().x_test[:8].astype(np.float32)
    gateway = start_gateway(
        env.registry, env.admin, GatewaySettings(models=("fraud-mlp",), alarm_policy=AlarmPolicy(action="alert"))
    )
    try:
        _, text = gateway.key("reader", output="probabilities")
        answer = httpx.post(
            f"{gateway.url}/v2/models/fraud-mlp/infer", json=infer_body(rows.tolist()), headers=bearer(text), timeout=HANG_GUARD
        )
    finally:
        gateway.stop()
    assert answer.status_code == 200, answer.text
    outputs = {o["name"]: o for o in answer.json()["outputs"]}
    expected = _torch_probabilities(net, rows)
    np.testing.assert_allclose(np.reshape(outputs["probabilities"]["data"], (8, 2)), expected, rtol=1e-5, atol=1e-6)
    assert outputs["label"]["data"] == [LABELS[i] for i in expected.argmax(axis=1)]


def test_dense_network_refuses_an_empty_file_of_weights() -> None:
    with pytest.raises(ArtifactError, match=re.escape("no tensor fc.weight")):
        dense_network({}, (Layer("linear", "fc"), Layer("softmax")), FEATURES, 2, "model.safetensors")
