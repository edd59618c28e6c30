"""PyTorch models served without PyTorch: safetensors weights and a declared network, run in NumPy.

A safetensors file holds only named tensors: no code, nothing that runs on load. The network
the weights belong to is declared in `serving.yaml` (and signed with it) as a list of layers:

```yaml
format: safetensors
file: model.safetensors
layers: [{linear: fc1}, relu, {linear: fc2}, softmax]
```

`{linear: NAME}` is PyTorch's `nn.Linear`: `x @ NAME.weight.T + NAME.bias` (the bias may be
absent); `relu`, `tanh`, `sigmoid` and `softmax` are applied row by row. The last layer gives
the class probabilities: `softmax` over one output per label, or `sigmoid` over a single output
for two labels. Every tensor of the file must be used by a layer and every shape must chain, or
the model is refused: weights that the declared network ignores are not the model it claims to be.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bastion.errors import ArtifactError

ACTIVATIONS = ("relu", "tanh", "sigmoid", "softmax")
OUTPUTS = ("softmax", "sigmoid")
_FLOATS: dict[str, np.dtype[Any]] = {"F16": np.dtype("<f2"), "F32": np.dtype("<f4"), "F64": np.dtype("<f8")}
_MAX_HEADER = 100 << 20

Predictor = Callable[[NDArray[np.float32]], NDArray[np.float64]]


@dataclass(frozen=True, slots=True)
class Layer:
    """One step of a declared network: `linear` with the name of its tensors, or an activation."""

    kind: str
    name: str = ""


def read_tensors(path: Path) -> dict[str, NDArray[np.float32]]:
    """Every tensor of a safetensors file as float32 (F16, BF16, F32 and F64 are read)."""
    return tensors_of(path.read_bytes(), path.name)


def tensors_of(data: bytes, name: str) -> dict[str, NDArray[np.float32]]:
    """Every tensor of safetensors bytes (the file `name`) as float32: the loader's checked bytes."""
    path = Path(name)  # only its name appears in messages
    if len(data) < 8:
        raise ArtifactError(f"{path.name}: too short to be safetensors")
    length = struct.unpack("<Q", data[:8])[0]
    if not 2 <= length <= min(_MAX_HEADER, len(data) - 8):
        raise ArtifactError(f"{path.name}: the safetensors header length is not plausible")
    try:
        header = json.loads(data[8 : 8 + length])
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ArtifactError(f"{path.name}: the safetensors header is not JSON: {err}") from err
    if not isinstance(header, dict):
        raise ArtifactError(f"{path.name}: the safetensors header is not an object")
    body = memoryview(data)[8 + length :]
    return {name: _tensor(path.name, name, info, body) for name, info in header.items() if name != "__metadata__"}


def _tensor(file: str, name: str, info: object, body: memoryview) -> NDArray[np.float32]:
    if not isinstance(info, dict):
        raise ArtifactError(f"{file}: tensor {name!r} has no description")
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if not (
        isinstance(shape, list)
        and all(isinstance(d, int) and d >= 0 for d in shape)
        and isinstance(offsets, list)
        and len(offsets) == 2
        and all(isinstance(o, int) for o in offsets)
        and 0 <= offsets[0] <= offsets[1] <= len(body)
    ):
        raise ArtifactError(f"{file}: tensor {name!r} has a malformed shape or offsets")
    count = int(np.prod(shape, dtype=np.int64))
    raw = body[offsets[0] : offsets[1]]
    if dtype == "BF16":  # the top half of a float32: widen it by shifting
        if len(raw) != 2 * count:
            raise ArtifactError(f"{file}: tensor {name!r}'s data does not match its shape")
        halves = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
        return halves.view(np.float32).reshape(shape)
    if dtype not in _FLOATS:
        raise ArtifactError(f"{file}: tensor {name!r} is {dtype}; a served network's weights are floating point")
    kind = _FLOATS[dtype]
    if len(raw) != kind.itemsize * count:
        raise ArtifactError(f"{file}: tensor {name!r}'s data does not match its shape")
    return np.asarray(np.frombuffer(raw, dtype=kind), dtype=np.float32).reshape(shape)


@dataclass(frozen=True, slots=True)
class _Step:
    kind: str
    weight: NDArray[np.float32] | None = None  # (in, out): transposed once, here
    bias: NDArray[np.float32] | None = None


def dense_network(
    tensors: Mapping[str, NDArray[np.float32]], layers: Sequence[Layer], features: int, classes: int, file: str
) -> Predictor:
    """A predictor running `layers` on `tensors`; ArtifactError if they do not fit each other."""
    steps: list[_Step] = []
    used: set[str] = set()
    width = features
    for index, layer in enumerate(layers, start=1):
        if layer.kind != "linear":
            steps.append(_Step(layer.kind))
            continue
        weight = tensors.get(f"{layer.name}.weight")
        bias = tensors.get(f"{layer.name}.bias")
        where = f"{file}: layer {index} ({layer.name})"
        if weight is None:
            raise ArtifactError(f"{where}: no tensor {layer.name}.weight")
        if weight.ndim != 2 or weight.shape[1] != width:
            raise ArtifactError(f"{where}: weight shape {list(weight.shape)} does not take {width} inputs")
        if bias is not None and bias.shape != (weight.shape[0],):
            raise ArtifactError(f"{where}: bias shape {list(bias.shape)} does not match {weight.shape[0]} outputs")
        used.update({f"{layer.name}.weight"} | ({f"{layer.name}.bias"} if bias is not None else set()))
        steps.append(_Step("linear", np.ascontiguousarray(weight.T), bias))
        width = int(weight.shape[0])
    unused = sorted(set(tensors) - used)
    if unused:
        raise ArtifactError(f"{file}: tensors no declared layer uses: {', '.join(unused[:10])}")
    last = layers[-1].kind
    binary = last == "sigmoid" and width == 1 and classes == 2
    if not binary and width != classes:
        raise ArtifactError(f"{file}: the network ends with {width} outputs for {classes} labels")
    return _Forward(tuple(steps), binary)


@dataclass(frozen=True, slots=True)
class _Forward:
    steps: tuple[_Step, ...]
    binary: bool  # one sigmoid output: the probability of the second label

    def __call__(self, rows: NDArray[np.float32]) -> NDArray[np.float64]:
        x = rows.astype(np.float32, copy=False)
        for step in self.steps:
            if step.weight is not None:
                x = x @ step.weight
                if step.bias is not None:
                    x = x + step.bias
            elif step.kind == "relu":
                x = np.maximum(x, 0)
            elif step.kind == "tanh":
                x = np.tanh(x)
            elif step.kind == "sigmoid":
                x = 0.5 * (np.tanh(0.5 * x) + 1.0)  # the logistic function, without overflow
            else:  # softmax
                e = np.exp(x - x.max(axis=1, keepdims=True))
                x = e / e.sum(axis=1, keepdims=True)
        if self.binary:
            x = np.hstack([1.0 - x, x])
        return np.asarray(x, dtype=np.float64)
