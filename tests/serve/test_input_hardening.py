"""Bodies that used to reach a 500 or slip past validation (issue 10, section 2 and 5).

A `data` array nested a thousand lists deep raised RecursionError (500); ragged rows (25 and 15
values under shape [2, 20]) were accepted; the validator let NaN through whenever a bound was
declared; `expires_in_days: 1e300` on the admin API raised OverflowError (500). Every body a
caller sends is refused with a 4xx, never a 5xx, whatever its shape.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.serve.gateway import AlarmPolicy
from bastion.serve.protocol import InvalidRequest, check_values, parse_infer
from bastion.serve.run import GatewaySettings
from corpus.gateway_env import (
    FEATURES,
    INPUT,
    ONNX,
    RunningGateway,
    assert_generic_refusal,
    bearer,
    built_models,
    copy_model,
    infer_body,
    make_registry,
    rows,
    start_gateway,
)
from corpus.hang_guard import HANG_GUARD

UNBOUNDED = "fraud-unbounded"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningGateway, str, str]]:
    home = tmp_path_factory.mktemp("inputs")
    built = built_models(home / "shared")
    env = make_registry(home / "registry", [built.signer_pub])
    env.publish(ONNX, built.folder("onnx"))

    def unbounded(spec: dict[str, Any]) -> None:
        del spec["inputs"][0]["min"], spec["inputs"][0]["max"]

    env.publish(UNBOUNDED, copy_model(built.folder("onnx"), home / "unbounded", signed_by=built.signer, edit=unbounded))
    running = start_gateway(env.registry, env.admin, GatewaySettings(models=(ONNX, UNBOUNDED), alarm_policy=AlarmPolicy("alert")))
    _, key = running.key(rate=None, quota=None, output="probabilities")
    try:
        yield running, key, env.admin_token
    finally:
        running.stop()


def _post(running: RunningGateway, key: str, body: bytes, model: str = ONNX) -> httpx.Response:
    return httpx.post(f"{running.url}/v2/models/{model}/infer", content=body, headers=bearer(key), timeout=HANG_GUARD)


# --- the data array -----------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [30, 1000, 1020])
def test_data_nested_deeper_than_its_shape_is_refused_not_a_500(gateway: tuple[RunningGateway, str, str], depth: int) -> None:
    running, key, _ = gateway
    data = "[" * depth + "0.5" + "]" * depth
    body = f'{{"inputs": [{{"name": "{INPUT}", "datatype": "FP32", "shape": [1, 20], "data": {data}}}]}}'.encode()
    assert_generic_refusal(_post(running, key, body))


def test_ragged_rows_are_refused_even_when_the_total_matches(gateway: tuple[RunningGateway, str, str]) -> None:
    running, key, _ = gateway
    ragged = [[0.25] * 25, [0.25] * 15]  # 40 values, as [2, 20] holds, in rows of the wrong length
    assert_generic_refusal(_post(running, key, orjson.dumps(infer_body(ragged, shape=[2, FEATURES]))))


def test_rows_nested_to_the_shape_and_flat_data_are_both_answered(gateway: tuple[RunningGateway, str, str]) -> None:
    running, key, _ = gateway
    nested = rows(2)
    flat = [value for row in nested for value in row]
    assert _post(running, key, orjson.dumps(infer_body(nested))).status_code == 200
    assert _post(running, key, orjson.dumps(infer_body(flat, shape=[2, FEATURES]))).status_code == 200  # type: ignore[arg-type]


def test_a_mixture_of_rows_and_numbers_is_refused(gateway: tuple[RunningGateway, str, str]) -> None:
    running, key, _ = gateway
    mixed: list[Any] = [[0.25] * FEATURES, *([0.25] * FEATURES)]
    assert_generic_refusal(_post(running, key, orjson.dumps(infer_body(mixed, shape=[2, FEATURES]))))


# --- values the validator itself refuses ----------------------------------------------------------


def _spec(running: RunningGateway, model: str = ONNX) -> Any:
    return running.assembled.gateway.models[model].spec


@pytest.mark.parametrize("model", [ONNX, UNBOUNDED])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_the_validator_refuses_non_finite_values_whatever_the_bounds(
    gateway: tuple[RunningGateway, str, str], model: str, value: float
) -> None:
    """Defence in depth: the JSON parser refuses NaN literals today, but the check must not rely on it."""
    values = np.full((1, FEATURES), 0.25, dtype=np.float32)
    values[0, 3] = value
    with pytest.raises(InvalidRequest, match="element-range"):
        check_values(values, _spec(gateway[0], model))


@pytest.mark.parametrize("literal", ["1" + "0" * 40, "-1" + "0" * 40, "3.5e38", "1e308"])
def test_numbers_that_overflow_the_declared_type_are_refused(gateway: tuple[RunningGateway, str, str], literal: str) -> None:
    running, key, _ = gateway
    body = f'{{"inputs": [{{"name": "{INPUT}", "datatype": "FP32", "shape": [1, 20], "data": [{", ".join([literal] * 20)}]}}]}}'
    assert_generic_refusal(_post(running, key, body.encode(), UNBOUNDED))


def test_a_huge_but_finite_value_reaches_the_detectors_without_a_500(gateway: tuple[RunningGateway, str, str]) -> None:
    """1.8e19 is finite in FP32, but its squared distance from the training mean is not: the
    detectors' distance step overflowed and the request was a 500."""
    running, key, _ = gateway
    body = orjson.dumps(infer_body([[18446744073709551616.0] * FEATURES]))
    assert _post(running, key, body, UNBOUNDED).status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        b'{"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 20], "data": [0.5], "parameters": '
        + b"[" * 1000 + b"]" * 1000 + b"}]}",
        b'{"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 1e400], "data": [0.5]}]}',
        b'{"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 99999999999999999999], "data": [0.5]}]}',
        b'{"inputs": [{"name": "features", "datatype": "FP32", "shape": [-1, 20], "data": []}]}',
        b'{"inputs": [{"name": "features", "datatype": "FP32", "shape": [0, 20], "data": []}]}',
        b'{"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 20], "data": {"a": 1}}]}',
        b'{"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 20], "data": [0.5]}], "id": ['
        + b"[" * 900 + b"]" * 900 + b"]}",
        b'{"inputs": [{"name": "\xf0\x9f\x92\xa5", "datatype": "FP32", "shape": [1, 20], "data": [0.5]}]}',
        b'{"inputs": [{"name": "\\ud800", "datatype": "FP32", "shape": [1, 20], "data": [0.5]}]}',
        b'{"inputs": [{"name": "features", "name": "features", "datatype": "FP32", "datatype": "INT64", '
        b'"shape": [1, 20], "data": [0.5]}]}',
        b'{"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 20], "data": [0.5]}], "parameters": 7}',
        b"\xff\xfe{}",
    ],
    ids=lambda body: body[:40].decode("latin-1"),
)
def test_odd_bodies_are_a_400(gateway: tuple[RunningGateway, str, str], body: bytes) -> None:
    running, key, _ = gateway
    assert_generic_refusal(_post(running, key, body))


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=40,
)


def _tensorish(draw_value: Any) -> st.SearchStrategy[Any]:
    """Request-shaped JSON where any part may be replaced by anything."""
    tensor = st.fixed_dictionaries(
        {
            "name": st.sampled_from([INPUT, "other"]) | draw_value,
            "datatype": st.sampled_from(["FP32", "FP64", "INT64", "BOOL", "BYTES"]) | draw_value,
            "shape": st.lists(st.integers(-2, 70), max_size=4) | draw_value,
            "data": st.lists(st.lists(st.floats(-1e40, 1e40) | st.integers(-(2**70), 2**70), max_size=22), max_size=3)
            | st.lists(st.floats(-1e40, 1e40), max_size=45)
            | draw_value,
        },
        optional={"parameters": draw_value},
    )
    return st.fixed_dictionaries({"inputs": st.lists(tensor, max_size=2) | draw_value}, optional={"id": draw_value}) | draw_value


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=_tensorish(_JSON))
def test_any_json_is_parsed_or_refused_with_invalid_request(document: Any) -> None:
    """The parser alone, many times: refusal is InvalidRequest; nothing else escapes."""
    spec = _SPEC_FOR_FUZZ
    try:
        parsed = parse_infer(json.dumps(document).encode(), spec)
    except InvalidRequest:
        return
    assert parsed.rows.shape == (parsed.rows.shape[0], FEATURES)
    assert bool(np.isfinite(parsed.rows).all())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(document=_tensorish(_JSON))
def test_any_json_over_http_is_never_a_5xx(gateway: tuple[RunningGateway, str, str], document: Any) -> None:
    running, key, _ = gateway
    answer = _post(running, key, json.dumps(document).encode(), UNBOUNDED)
    assert answer.status_code in {200, 400}, answer.text


def _fuzz_spec() -> Any:
    from bastion.serve.spec import parse_spec  # noqa: PLC0415

    return parse_spec(
        {
            "format": "onnx",
            "file": "model.onnx",
            "inputs": [{"name": INPUT, "datatype": "FP32", "shape": [-1, FEATURES], "min": -10.0, "max": 10.0}],
            "labels": ["legit", "fraud"],
        }
    )


_SPEC_FOR_FUZZ = _fuzz_spec()
