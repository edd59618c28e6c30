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

from bastion.errors import ArtifactError
from bastion.serve.batching import Batcher
from bastion.serve.detect import QueryMonitor, TrainingProfile
from bastion.serve.detect.streams import RowDigest
from bastion.serve.guard import RequestGuard, RowsVerdict, _judge_many, _judge_one
from bastion.serve.output import shape_outputs
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
def profiled() -> tuple[ServingSpec, np.ndarray[Any, Any]]:
    """A model's declaration with a training profile, and rows to judge: typical, far off, and imputed."""
    data = dataset()
    profile = TrainingProfile.from_data(data.x_train, holdout=data.x_test[:1000], seed=0)
    spec = parse_spec(
        {
            "format": "onnx",
            "file": "model.onnx",
            "labels": ["legit", "fraud"],
            "profile": profile.to_dict(),
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, data.x_train.shape[1]]}],
        }
    )
    rng = np.random.default_rng(5)
    held = data.x_test[:120].astype(np.float32)
    odd = (held[:60] + rng.normal(0, 3, size=held[:60].shape)).astype(np.float32)
    imputed = held[60:90].copy()
    imputed[:, :8] = np.asarray(profile.mean, dtype=np.float32)[:8]
    return spec, np.vstack([held, odd, imputed])[rng.permutation(210)]


def test_rows_judged_in_one_turn_get_the_verdicts_they_get_alone(profiled: tuple[ServingSpec, np.ndarray[Any, Any]]) -> None:
    spec, rows = profiled
    batched, alone = RequestGuard({"m": spec}), RequestGuard({"m": spec})
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


def test_verdicts_for_other_rows_are_refused(profiled: tuple[ServingSpec, np.ndarray[Any, Any]]) -> None:
    spec, rows = profiled
    batched = RequestGuard({"m": spec})
    with pytest.raises(ValueError, match="verdicts"):
        batched.check("m", "k", "a", "n", rows[:3], np.zeros(2, dtype=np.bool_))


def test_one_row_requests_get_the_verdicts_of_the_general_path(profiled: tuple[ServingSpec, np.ndarray[Any, Any]]) -> None:
    """`_judge_one` (no numpy past the judge) against `_judge_many` on the same one-row requests, repeats included."""
    spec, rows = profiled
    spec_guard, other = RequestGuard({"m": spec}), RequestGuard({"m": spec})
    order = np.random.default_rng(9).integers(0, 40, size=120)  # 40 distinct rows, each sent about three times
    seen_repeat = seen_atypical = False
    for step, index in enumerate(order.tolist()):
        row = rows[index : index + 1]
        a = _judge_one(spec_guard._models["m"], f"key:k{step % 2}", row, None)
        b = _judge_many(other._models["m"], f"key:k{step % 2}", row, None)
        if isinstance(b, RowsVerdict):
            seen_repeat = True
            assert isinstance(a, RowsVerdict)
            assert a.rows is not None and b.rows is not None
            assert a.rows.fresh.tolist() == b.rows.fresh.tolist() == [False]
            assert a.rows.atypical.tolist() == b.rows.atypical.tolist() == [False]
            continue
        assert not isinstance(a, RowsVerdict)
        flags_a, verdicts_a = a
        flags_b, verdicts_b = b
        assert list(flags_a) == np.asarray(flags_b).tolist()
        seen_atypical = seen_atypical or bool(flags_a[0])
        assert verdicts_a.fresh.tolist() == verdicts_b.fresh.tolist() == [True]
        assert verdicts_a.atypical.tolist() == verdicts_b.atypical.tolist()
    assert seen_repeat and seen_atypical, "the sequence did not exercise repeats and atypical rows"


def test_shared_one_row_verdicts_cannot_be_changed(profiled: tuple[ServingSpec, np.ndarray[Any, Any]]) -> None:
    spec, rows = profiled
    guard = RequestGuard({"m": spec})
    row = rows[:1]
    guard.check("m", "k", "a", "n", row)
    repeat = guard.check("m", "k", "a", "n", row)
    assert repeat.rows is not None and repeat.rows.fresh.tolist() == [False]
    with pytest.raises(ValueError, match="read-only"):
        repeat.rows.fresh[0] = True


def test_the_one_row_digest_is_the_batch_digest() -> None:
    digest = RowDigest(5, seed=11)
    rows = np.random.default_rng(1).normal(size=(50, 5)).astype(np.float32)
    assert digest.of(rows).tolist() == [digest.of_row(row.tobytes()) for row in rows]
    assert digest.of(rows[:1]).tolist() == [digest.of_row(rows[0].tobytes())]
    with pytest.raises(ArtifactError):
        digest.of_row(rows[0].astype(np.float64).tobytes())


@settings(max_examples=300, deadline=None)
@given(
    row=st.lists(st.sampled_from([0.0, 0.25, 0.5, 1.0, float("nan"), 1e-300]) | st.floats(0, 1), min_size=1, max_size=5),
    detail=st.sampled_from(["label", "score", "probabilities"]),
)
def test_one_row_outputs_are_the_general_outputs(row: list[float], detail: str) -> None:
    labels = tuple(f"c{i}" for i in range(len(row)))
    probabilities = np.asarray([row], dtype=np.float64)
    got = shape_outputs(probabilities, labels, detail, None)
    # The general path: the same function on two copies of the row, first half of each tensor.
    both = shape_outputs(np.vstack([probabilities, probabilities]), labels, detail, None)
    assert got[0]["data"] == both[0]["data"][:1]
    assert got[0]["data"] == [labels[int(probabilities[0].argmax())]]


def test_a_batch_of_requests_is_monitored_as_they_are_one_by_one(profiled: tuple[ServingSpec, np.ndarray[Any, Any]]) -> None:
    """The observer hands each model's requests of a message to `observe_many`: same alarms, same counters.

    Mixed traffic on three keys: a thief's probes from far off (alarms), near-duplicates of one
    record (alarms), benign rows with repeats, requests with the gateway's verdicts and without.
    """
    spec, rows = profiled
    assert spec.profile is not None
    profile = TrainingProfile.from_dict(spec.profile)
    batched, alone = QueryMonitor(profile), QueryMonitor(profile)
    rng = np.random.default_rng(21)
    far = (rows[:40] + rng.normal(0, 4, size=rows[:40].shape)).astype(np.float32)
    near = (rows[50] + rng.normal(0, 1e-4, size=(60, rows.shape[1]))).astype(np.float32)
    requests: list[tuple[str, np.ndarray[Any, Any], np.ndarray[Any, Any] | None, np.ndarray[Any, Any] | None]] = []
    for step in range(160):
        kind = step % 3
        if kind == 0:
            part = far[(step // 3) % 40 : (step // 3) % 40 + 1 + step % 2]
            requests.append(("thief", part, None, None))
        elif kind == 1:
            part = near[(step // 3) % 60 : (step // 3) % 60 + 1]
            requests.append(("prober", part, np.ones(1, dtype=np.bool_), alone.judge.judge(part)))
        else:
            start = (step * 7) % 150
            part = rows[start : start + 1 + step % 4]
            requests.append(("customer", part, None, None))
    got: list[list[Any]] = []
    for start in range(0, len(requests), 17):  # messages of 17 requests, as the observer receives them
        got.extend(batched.observe_many(requests[start : start + 17]))
    want = [alone.observe(key, part, fresh=fresh, atypical=given) for key, part, fresh, given in requests]
    assert [[(a.kind, a.key_id, a.queries, a.score) for a in alarms] for alarms in got] == [
        [(a.kind, a.key_id, a.queries, a.score) for a in alarms] for alarms in want
    ]
    assert sum(len(a) for a in want) >= 2, "no alarm: the test would not see a difference"
    for key in ("thief", "prober", "customer"):
        assert batched.snapshot(key) == alone.snapshot(key)
