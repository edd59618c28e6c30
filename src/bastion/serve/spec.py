"""What a served model declares about itself: `serving.yaml`, shipped (and signed) with the model.

```yaml
format: onnx                 # onnx | sklearn (skops) | safetensors (with layers) | joblib (pickle: where allowed)
file: model.onnx
inputs:
  - name: features
    datatype: FP32           # FP32 FP64 INT32 INT64 BOOL
    shape: [-1, 20]          # -1: the batch dimension
    min: -10.0               # optional; a number for every feature, or a list of one per feature
    max: 10.0
labels: [legit, fraud]       # class names, in the order of the model's probabilities
max_batch: 64
max_request_bytes: 65536
probabilities_output: probabilities   # ONNX only: the output that holds class probabilities
profile: {...}               # optional: the training-data profile the detectors compare with
layers: [{linear: fc1}, relu, {linear: fc2}, softmax]   # safetensors only: the network (serve.network)
```

The file is one of the version's files, so it is covered by the signature and the digests the
registry re-checks: nobody can widen a model's input ranges without breaking its signature.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from bastion.errors import ConfigError
from bastion.serve.network import ACTIVATIONS, OUTPUTS, Layer

SPEC_NAME = "serving.yaml"
DATATYPES: dict[str, str] = {"FP32": "float32", "FP64": "float64", "INT32": "int32", "INT64": "int64", "BOOL": "bool"}


class _InputFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    datatype: Literal["FP32", "FP64", "INT32", "INT64", "BOOL"] = "FP32"
    shape: tuple[int, ...] = Field(min_length=1, max_length=4)
    min: float | list[float] | None = None
    max: float | list[float] | None = None
    categories: dict[int, list[float]] | None = None  # feature index -> allowed values

    @model_validator(mode="after")
    def _shape(self) -> _InputFile:
        if self.shape[0] != -1 or any(d < 1 for d in self.shape[1:]):
            raise ValueError("shape is [-1, d1, ...]: the batch first, then fixed positive sizes")
        return self


class _SpecFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal["onnx", "sklearn", "safetensors", "joblib", "torchscript"]
    file: str = Field(min_length=1)
    inputs: list[_InputFile] = Field(min_length=1, max_length=1)
    labels: list[str] = Field(min_length=2)
    max_batch: int = Field(64, ge=1, le=100_000)
    max_request_bytes: int = Field(1 << 20, ge=256, le=1 << 30)
    probabilities_output: str | None = None
    profile: dict[str, Any] | None = None
    layers: list[str | dict[str, str]] | None = Field(None, min_length=1, max_length=256)

    @model_validator(mode="after")
    def _layers_for_safetensors(self) -> _SpecFile:
        if (self.format == "safetensors") != (self.layers is not None):
            raise ValueError("layers: declare them for safetensors, and only for safetensors")
        return self


def _layers(raw: list[str | dict[str, str]] | None) -> tuple[Layer, ...]:
    """The declared network's layers; ValueError names a bad one."""
    layers = []
    for index, item in enumerate(raw or (), start=1):
        if isinstance(item, dict):
            if set(item) != {"linear"} or not item["linear"]:
                raise ValueError(f"layers: layer {index} must be {{linear: NAME}} or one of {', '.join(ACTIVATIONS)}")
            layers.append(Layer("linear", item["linear"]))
        elif item in ACTIVATIONS:
            layers.append(Layer(item))
        else:
            raise ValueError(f"layers: layer {index} ({item!r}) is not linear or one of {', '.join(ACTIVATIONS)}")
    if layers and layers[-1].kind not in OUTPUTS:
        raise ValueError("layers: the last layer must give probabilities: softmax, or sigmoid for two labels")
    if layers and not any(layer.kind == "linear" for layer in layers):
        raise ValueError("layers: a network needs at least one linear layer")
    return tuple(layers)


@dataclass(frozen=True)
class InputSpec:
    """One input tensor: its name, element type, per-row shape and allowed values."""

    name: str
    datatype: str
    row_shape: tuple[int, ...]  # the shape without the batch dimension
    minimum: tuple[float, ...] | None  # one per feature (flattened row), or None
    maximum: tuple[float, ...] | None
    categories: dict[int, frozenset[float]] = field(default_factory=dict)

    @cached_property
    def minimum_array(self) -> NDArray[np.float32] | None:
        """`minimum` as an array, built once: the hot path compares every request with it."""
        return None if self.minimum is None else np.asarray(self.minimum, dtype=np.float32)

    @cached_property
    def maximum_array(self) -> NDArray[np.float32] | None:
        return None if self.maximum is None else np.asarray(self.maximum, dtype=np.float32)

    @cached_property
    def finite_bounds(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per feature, the lowest and highest finite float32 value a row may hold, as floats.

        A row's float32 values, as Python floats, are within them exactly when the row is finite
        and inside the declared ranges (NaN compares false with both): one row is checked with
        them without a numpy call.
        """
        top = float(np.finfo(np.float32).max)
        count = self.features
        low = [-top] * count if self.minimum_array is None else [max(-top, v) for v in self.minimum_array.tolist()]
        high = [top] * count if self.maximum_array is None else [min(top, v) for v in self.maximum_array.tolist()]
        return tuple(low), tuple(high)

    @property
    def features(self) -> int:
        size = 1
        for dim in self.row_shape:
            size *= dim
        return size


@dataclass(frozen=True)
class ServingSpec:
    """A model's serving declaration, checked."""

    format: str
    file: str
    input: InputSpec
    labels: tuple[str, ...]
    max_batch: int
    max_request_bytes: int
    probabilities_output: str | None
    profile: dict[str, Any] | None
    layers: tuple[Layer, ...] = ()  # safetensors: the network the weights belong to


def _per_feature(value: float | list[float] | None, features: int, what: str) -> tuple[float, ...] | None:
    if value is None:
        return None
    if isinstance(value, list):
        if len(value) != features:
            raise ValueError(f"{what} lists {len(value)} values for {features} features")
        return tuple(float(v) for v in value)
    return (float(value),) * features


def parse_spec(raw: object, source: str = SPEC_NAME) -> ServingSpec:
    """A `ServingSpec` from the parsed YAML; ConfigError names each bad field."""
    try:
        spec = _SpecFile.model_validate(raw)
        declared = spec.inputs[0]
        row_shape = tuple(declared.shape[1:])
        features = 1
        for dim in row_shape:
            features *= dim
        minimum = _per_feature(declared.min, features, "min")
        maximum = _per_feature(declared.max, features, "max")
        layers = _layers(spec.layers)
    except (ValidationError, ValueError) as err:
        if isinstance(err, ValidationError):
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors())
        else:
            problems = str(err)
        raise ConfigError(f"{source}: {problems}", hint="Fix the model's serving.yaml and sign it again.") from err
    if minimum and maximum and any(lo > hi for lo, hi in zip(minimum, maximum, strict=True)):
        raise ConfigError(f"{source}: a feature's min is above its max")
    if Path(spec.file).is_absolute() or ".." in Path(spec.file).parts:
        raise ConfigError(f"{source}: file must be a path inside the model folder")
    categories = {int(k): frozenset(float(v) for v in values) for k, values in (declared.categories or {}).items()}
    if any(not 0 <= k < features for k in categories):
        raise ConfigError(f"{source}: categories name a feature index outside 0..{features - 1}")
    return ServingSpec(
        format=spec.format,
        file=spec.file,
        input=InputSpec(declared.name, declared.datatype, row_shape, minimum, maximum, categories),
        labels=tuple(spec.labels),
        max_batch=spec.max_batch,
        max_request_bytes=spec.max_request_bytes,
        probabilities_output=spec.probabilities_output,
        profile=spec.profile,
        layers=layers,
    )


def load_spec(folder: Path) -> ServingSpec:
    import yaml  # noqa: PLC0415

    path = folder / SPEC_NAME
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise ConfigError(
            f"the model has no {SPEC_NAME}", hint="Add one beside the model file (see `bastion serve --help`)."
        ) from err
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: cannot read: {err}") from err
    return parse_spec(raw, SPEC_NAME)
