"""The Open Inference Protocol (KServe V2 REST) on the hot path: parse, validate, answer.

Requests that do not match the model's declared input are refused with one generic message:
the refusal never echoes the input or the schema, so probing it teaches a caller nothing.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray

from bastion.serve.spec import DATATYPES, InputSpec, ServingSpec

GENERIC_REFUSAL = "the request does not match the model's input contract"


class InvalidRequest(Exception):
    """A request refused before inference; `reason` is for the audit log and metrics only.

    `rows` holds the parsed features when the request was well formed but its values were out
    of bounds: probing outside the declared ranges is itself a sign the detectors must see.
    """

    def __init__(self, reason: str, rows: NDArray[np.float32] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.rows = rows


@dataclass(frozen=True)
class InferRequest:
    request_id: str
    rows: NDArray[np.float32]


def parse_infer(body: bytes, spec: ServingSpec) -> InferRequest:
    """Rows of features from a V2 request body, checked against `spec`, or InvalidRequest."""
    if len(body) > spec.max_request_bytes:
        raise InvalidRequest("too-large")
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidRequest("not-json") from None
    if not isinstance(document, dict):
        raise InvalidRequest("not-an-object")
    inputs = document.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise InvalidRequest("inputs")
    tensor: dict[str, Any] = inputs[0]
    declared = spec.input
    if tensor.get("name") != declared.name or tensor.get("datatype") != declared.datatype:
        raise InvalidRequest("name-or-datatype")
    shape = tensor.get("shape")
    if (
        not isinstance(shape, list)
        or len(shape) != len(declared.row_shape) + 1
        or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape)
        or tuple(shape[1:]) != declared.row_shape
        or not 1 <= shape[0] <= spec.max_batch
    ):
        raise InvalidRequest("shape")
    data = tensor.get("data")
    if not isinstance(data, list):
        raise InvalidRequest("data")
    flat = _flatten(data, shape)
    rows = _plain_row(flat, declared) if shape[0] == 1 else None
    if rows is None:
        rows = _to_array(flat, declared.datatype).reshape(shape[0], declared.features)
        try:
            check_values(rows, spec)
        except InvalidRequest as invalid:
            raise InvalidRequest(invalid.reason, rows) from None
    request_id = document.get("id", "")
    return InferRequest(request_id if isinstance(request_id, str) and len(request_id) <= 128 else "", rows)


def _flatten(data: list[Any], shape: Sequence[int]) -> list[Any]:
    """The values of `data` in row-major order, if it is flat or nested exactly as `shape` says.

    A loop, one nesting level at a time, never deeper than the shape: a thousand nested lists
    once reached Python's recursion limit (a 500), and rows of 25 and 15 values passed for two
    rows of 20 because only the total was counted.
    """
    level: list[list[Any]] = [data]
    for depth, size in enumerate(shape):
        if not level[0] or not isinstance(level[0][0], list):  # the innermost lists: the values themselves
            width = math.prod(shape[depth:])
            if any(len(part) != width for part in level):
                raise InvalidRequest("data-length")
            return level[0] if len(level) == 1 else list(itertools.chain.from_iterable(level))
        if any(len(part) != size or not all(isinstance(item, list) for item in part) for part in level):
            raise InvalidRequest("data-shape")
        level = list(itertools.chain.from_iterable(level))
    raise InvalidRequest("data-shape")  # nested deeper than the shape has dimensions


_FLOAT_TYPES = frozenset({"FP32", "FP64"})


def _plain_row(flat: list[Any], declared: InputSpec) -> NDArray[np.float32] | None:
    """One row of plain numbers that passes every check, as its (1, n) array; None: look closer.

    The common request, without the numpy calls of the general path. The ranges are checked on
    the JSON numbers before they are rounded to float32, which only ever refuses too much, never
    too little: rounding is monotonic and every bound is a float32, so a number within its
    bounds stays within them. Categories are checked on the rounded values, as the general path
    does. What this path does not accept goes the general way, which decides exactly.
    """
    if declared.datatype not in _FLOAT_TYPES or not set(map(type, flat)) <= _NUMBERS or not _in_bounds(flat, declared):
        return None
    row = np.array(flat, dtype=np.float32, ndmin=2)
    if declared.categories and not _in_categories(row[0].tolist(), declared):
        return None
    return row


_ALLOWED_TYPES = {"BOOL": frozenset({bool}), "INT32": frozenset({int}), "INT64": frozenset({int})}
_NUMBERS = frozenset({int, float})


def _to_array(flat: list[Any], datatype: str) -> NDArray[np.float32]:
    # One C-speed pass collects the element types (numpy would turn booleans and numbers into
    # each other silently), then numpy converts with the declared type.
    if not set(map(type, flat)) <= _ALLOWED_TYPES.get(datatype, _NUMBERS):
        raise InvalidRequest("element-type")
    try:
        with np.errstate(over="ignore"):  # 1e39 becomes inf in FP32 (FP64's too); check_values refuses it
            array = np.asarray(flat, dtype=DATATYPES[datatype])
            if array.dtype != np.float32:
                array = array.astype(np.float32)
    except (OverflowError, ValueError):  # an integer beyond the declared width
        raise InvalidRequest("element-range") from None
    return array


def check_values(rows: NDArray[np.float32], spec: ServingSpec) -> None:
    """Refuse values outside the declared ranges and categories, and every non-finite value.

    NaN compares false with any bound, so a range check alone lets it through; inf arrives as a
    number finite in JSON but not in FP32 (1e39). Refused here whatever the parser refused
    already: this check must not depend on which JSON parser is in front of it.

    Raises:
        InvalidRequest: with the reason, for the audit log and the metrics.
    """
    declared = spec.input
    if rows.shape[0] == 1:
        values = rows[0].tolist()
        if _in_bounds(values, declared) and _in_categories(values, declared):
            return
    low, high = declared.minimum_array, declared.maximum_array
    if not bool(np.isfinite(rows).all()):
        raise InvalidRequest("element-range")
    if low is not None and bool((rows < low).any()):
        raise InvalidRequest("below-min")
    if high is not None and bool((rows > high).any()):
        raise InvalidRequest("above-max")
    for index, allowed in declared.categories.items():
        if not all(float(v) in allowed for v in rows[:, index]):
            raise InvalidRequest("category")


def _in_bounds(values: list[Any], declared: InputSpec) -> bool:
    """Whether every value is finite and within its feature's declared range, in plain Python."""
    low, high = declared.finite_bounds
    return all(a <= v <= b for a, v, b in zip(low, values, high, strict=True))


def _in_categories(values: list[float], declared: InputSpec) -> bool:
    return all(values[index] in allowed for index, allowed in declared.categories.items())


def infer_response(model: str, version: int, request_id: str, outputs: list[dict[str, Any]]) -> bytes:
    document: dict[str, Any] = {"model_name": model, "model_version": str(version), "outputs": outputs}
    if request_id:
        document["id"] = request_id
    return orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)


def model_metadata(model: str, version: int, spec: ServingSpec, detail: str) -> bytes:
    """The V2 model metadata; the input's ranges are never shown, the outputs by the key's detail."""
    outputs: list[dict[str, Any]] = [{"name": "label", "datatype": "BYTES", "shape": [-1]}]
    if detail == "score":
        outputs.append({"name": "score", "datatype": "FP64", "shape": [-1]})
    elif detail == "probabilities":
        outputs.append({"name": "probabilities", "datatype": "FP64", "shape": [-1, len(spec.labels)]})
    return orjson.dumps(
        {
            "name": model,
            "versions": [str(version)],
            "platform": spec.format,
            "inputs": [{"name": spec.input.name, "datatype": spec.input.datatype, "shape": [-1, *spec.input.row_shape]}],
            "outputs": outputs,
        }
    )
