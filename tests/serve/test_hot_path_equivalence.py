"""The gateway's fast paths decide exactly what the general paths decide.

One-row requests skip the numpy calls of validation (`parse_infer` checks the JSON numbers
against the ranges before rounding them), and the gateway judges the rows of every request of
an event-loop turn in one call, handing each request its part. Both exist for speed only: a
row the general path refuses must be refused, one it accepts accepted, with the same float32
values; a request's verdicts must not depend on which other requests shared its turn.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.serve.batching import Batcher
from bastion.serve.detect import TrainingProfile
from bastion.serve.guard import RequestGuard
from bastion.serve.protocol import InvalidRequest, _to_array, check_values, parse_infer
from bastion.serve.spec import ServingSpec, parse_spec
from corpus.serving import dataset

FEATURES = 6
LOW = [-1.0, 0.1, -3.4e38, 0.0, -5.0, 0.0]
HIGH = [1.0, 0.7, 3.4e38, 2.0, 5.0, 1.0]
CATEGORIES = {3: [0.0, 1.0, 2.0], 5: [0.1, 1.0]}  # 0.1 is not a float32: rounded, it is refused


def _spec(datatype: str = "FP32", categories: dict[int, list[float]] | None = None) -> ServingSpec:
    return parse_spec(
        {
            "format": "onnx",
            "file": "model.onnx",
            "inputs": [
                {
                    "name": "x", "datatype": datatype, "shape": [-1, FEATURES], "min": LOW, "max": HIGH,
                    **({"categories": categories} if categories else {}),
                }
            ],
            "labels": ["a", "b"],
        }
    )


SPECS = {"plain": _spec(), "categories": _spec(categories=CATEGORIES), "fp64": _spec("FP64", CATEGORIES)}


def _edges(bound: float) -> list[float]:
    """The bound, its float32 neighbours, and doubles that round onto it or just past it."""
    as32 = float(np.float32(bound))
    near = [as32, float(np.nextafter(np.float32(as32), np.float32(np.inf))),
            float(np.nextafter(np.float32(as32), np.float32(-np.inf)))]
    return [bound, *near, *(float(np.nextafter(v, np.inf)) for v in near), *(float(np.nextafter(v, -np.inf)) for v in near)]


def _value(index: int) -> st.SearchStrategy[Any]:
    edges = _edges(LOW[index]) + _edges(HIGH[index])
    odd = [3.5e38, -3.5e38, 1e39, 0.1, 1.0, 2.0, 0.5, 1e-45, -0.0]
    return (
        st.sampled_from(edges + odd)
        | st.floats(LOW[index] - 1, HIGH[index] + 1, allow_nan=False) if abs(HIGH[index]) < 1e30 else st.sampled_from(edges + odd)
    ) | st.integers(-3, 3) | st.sampled_from([True, 10**40])


def _general(flat: list[Any], spec: ServingSpec) -> np.ndarray[Any, Any] | str:
    """What the general path (array, then `check_values`) makes of one row: its array or the refusal."""
    try:
        rows = _to_array(flat, spec.input.datatype).reshape(1, FEATURES)
        check_values(rows, spec)
    except InvalidRequest as refused:
        return refused.reason
    return rows


@settings(max_examples=800, deadline=None)
@given(flat=st.tuples(*(_value(i) for i in range(FEATURES))), which=st.sampled_from(sorted(SPECS)))
def test_one_row_validation_agrees_with_the_general_path(flat: tuple[Any, ...], which: str) -> None:
    spec = SPECS[which]
    body = json.dumps({"inputs": [{"name": "x", "datatype": spec.input.datatype, "shape": [1, FEATURES], "data": list(flat)}]})
    want = _general(list(flat), spec)
    try:
        got: np.ndarray[Any, Any] | str = parse_infer(body.encode(), spec).rows
    except InvalidRequest as refused:
        got = refused.reason
    if isinstance(want, str):
        assert got == want
    else:
        assert not isinstance(got, str), f"refused {got} what the general path accepts"
        assert got.dtype == np.float32 and got.shape == (1, FEATURES)
        np.testing.assert_array_equal(got, want)


def test_a_double_that_rounds_onto_the_bound_is_accepted_and_one_past_it_refused() -> None:
    spec = SPECS["plain"]
    top = float(np.float32(0.7))
    onto = float(np.nextafter(top, np.inf))  # a double above the float32 bound that rounds onto it
    past = float(np.nextafter(np.float32(top), np.float32(np.inf)))
    for value, accepted in ((onto, True), (past, False), (top, True)):
        body = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, FEATURES], "data": [0, value, 0, 0, 0, 0]}]})
        if accepted:
            assert parse_infer(body.encode(), spec).rows[0, 1] == np.float32(top)
        else:
            with pytest.raises(InvalidRequest, match="above-max"):
                parse_infer(body.encode(), spec)


def test_a_category_that_is_not_a_float32_is_refused_on_the_fast_path_too() -> None:
    body = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, FEATURES], "data": [0, 0.5, 0, 1, 0, 0.1]}]})
    with pytest.raises(InvalidRequest, match="category"):
        parse_infer(body.encode(), SPECS["categories"])


@pytest.fixture(scope="module")
def guards() -> tuple[RequestGuard, RequestGuard, np.ndarray[Any, Any]]:
    data = dataset()
    profile = TrainingProfile.from_data(data.x_train, holdout=data.x_test[:1000], seed=0)
    spec = parse_spec(
        {
            "format": "onnx", "file": "model.onnx", "labels": ["legit", "fraud"], "profile": profile.to_dict(),
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, data.x_train.shape[1]]}],
        }
    )
    # Held-out rows, the same rows jittered far off, and mean-imputed ones: typical and not.
    rng = np.random.default_rng(5)
    held = data.x_test[:120].astype(np.float32)
    odd = (held[:60] + rng.normal(0, 3, size=held[:60].shape)).astype(np.float32)
    imputed = held[60:90].copy()
    imputed[:, :8] = np.asarray(profile.mean, dtype=np.float32)[:8]
    rows = np.vstack([held, odd, imputed])[rng.permutation(210)]
    return RequestGuard({"m": spec}), RequestGuard({"m": spec}), rows


def test_rows_judged_in_one_turn_get_the_verdicts_they_get_alone(
    guards: tuple[RequestGuard, RequestGuard, np.ndarray[Any, Any]],
) -> None:
    batched, alone, rows = guards
    sizes = [1, 3, 1, 1, 7, 2, 1, 64, 1, 5] * 3
    parts, start = [], 0
    for size in sizes:
        parts.append(rows[start % 200 : start % 200 + size])
        start += size
    judge = Batcher(lambda x: batched.judge("m", x))

    async def one_turn() -> list[np.ndarray[Any, Any]]:
        return list(await asyncio.gather(*(judge.predict(part) for part in parts)))

    judged = asyncio.run(one_turn())
    assert judge.calls < len(parts), "the requests did not share a judging call"
    assert sum(int(j.sum()) for j in judged) > 0, "no row was atypical: the test would not see a mix-up"
    for i, (part, verdicts) in enumerate(zip(parts, judged, strict=True)):
        np.testing.assert_array_equal(verdicts, alone.judge("m", part))
        with_judged = batched.check("m", f"k{i % 4}", "acct", "10.0.0.0/24", part, verdicts)
        without = alone.check("m", f"k{i % 4}", "acct", "10.0.0.0/24", part)
        assert with_judged.atypical == without.atypical
        assert with_judged.refuse == without.refuse
        assert [(a.stream, a.alarm.kind) for a in with_judged.alarms] == [(a.stream, a.alarm.kind) for a in without.alarms]
        assert with_judged.rows is not None and without.rows is not None
        np.testing.assert_array_equal(with_judged.rows.fresh, without.rows.fresh)
        np.testing.assert_array_equal(with_judged.rows.atypical, without.rows.atypical)


def test_verdicts_for_other_rows_are_refused(guards: tuple[RequestGuard, RequestGuard, np.ndarray[Any, Any]]) -> None:
    batched, _, rows = guards
    with pytest.raises(ValueError, match="verdicts"):
        batched.check("m", "k", "a", "n", rows[:3], np.zeros(2, dtype=np.bool_))
