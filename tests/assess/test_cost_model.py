"""The cost's arithmetic and the attacker's sampling, on hand-made inputs: no model is fitted."""

from __future__ import annotations

import numpy as np
import pytest

from bastion.assess import AttackCurve, ExtractionCost
from bastion.assess.extraction import _Oracle, query_grid
from bastion.assess.input_space import InputSpace
from bastion.errors import ConfigError
from bastion.serve.detect import TrainingProfile
from bastion.serve.spec import parse_spec


def _spec(**inputs: object) -> dict[str, object]:
    declared = {"name": "x", "datatype": "FP32", "shape": [-1, 3], **inputs}
    return {"format": "onnx", "file": "m.onnx", "inputs": [declared], "labels": ["a", "b"]}


def test_cost_is_the_cheapest_attack_and_unreached_levels_read_more_than_budget() -> None:
    cost = ExtractionCost(
        curves=(
            AttackCurve("marginals", (10, 20, 50), (0.80, 0.91, 0.96)),
            AttackCurve("boundary", (10, 20, 50), (0.85, 0.95, 0.97)),
        ),
        max_queries=50,
        output="label",
    )
    assert cost.queries_for(0.90) == 20 and cost.queries_for(0.95) == 20 and cost.queries_for(0.99) is None
    assert cost.best_attack(0.95) == "boundary" and cost.best_attack(0.99) is None
    assert cost.metrics() == {"extraction_queries_90": 20.0, "extraction_queries_95": 20.0, "extraction_queries_99": 100.0}
    assert cost.metric_reached()["extraction_queries_99"] is False


def test_curve_reports_first_grid_point_reaching_a_level() -> None:
    curve = AttackCurve("knockoff", (10, 20, 30, 40), (0.5, 0.96, 0.94, 0.99))
    assert curve.queries_for(0.95) == 20
    assert curve.queries_for(0.99) == 40
    assert curve.queries_for(0.999) is None


def test_grid_is_geometric_and_ends_at_the_budget() -> None:
    assert query_grid(5000) == (
        10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 150, 200, 300, 400, 500, 700, 1000, 1500, 2000, 3000, 4000, 5000,
    )
    assert query_grid(250) == (10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 150, 200, 250)
    assert query_grid(10) == (10,)


def test_marginal_samples_follow_the_profile_and_stay_in_range() -> None:
    rng = np.random.default_rng(0)
    data = np.column_stack([rng.normal(5.0, 2.0, 5000), rng.exponential(1.0, 5000), rng.uniform(-1, 1, 5000)])
    profile = TrainingProfile.from_data(data).to_dict()
    space = InputSpace.from_spec(parse_spec({**_spec(min=-4.0, max=12.0), "profile": profile}))
    rows = space.marginals(np.random.default_rng(1), 20_000)
    assert rows.min() >= -4.0 and rows.max() <= 12.0
    for level in (0.05, 0.5, 0.95):
        assert np.allclose(np.quantile(rows, level, axis=0), np.quantile(data, level, axis=0), atol=0.15)


def test_rows_are_made_acceptable_to_the_gateway() -> None:
    space = InputSpace.from_spec(parse_spec(_spec(datatype="INT32", min=[0, 0, 0], max=[10, 1, 100], categories={2: [1, 50, 99]})))
    rows = space.conform(np.array([[-3.0, 0.7, 40.0], [12.4, 0.2, 98.0]]))
    assert rows.tolist() == [[0.0, 1.0, 50.0], [10.0, 0.0, 99.0]]


def test_ranges_come_from_the_profile_when_the_spec_has_none() -> None:
    data = np.random.default_rng(0).normal(size=(200, 3))
    space = InputSpace.from_spec(parse_spec({**_spec(), "profile": TrainingProfile.from_data(data).to_dict()}))
    assert space.ranges_from == "profile" and np.allclose(space.low, data.min(axis=0))


def test_no_ranges_and_no_profile_is_refused() -> None:
    with pytest.raises(ConfigError, match="neither min/max for every feature nor a training profile"):
        InputSpace.from_spec(parse_spec(_spec()))


def test_profile_of_another_width_is_refused() -> None:
    profile = TrainingProfile.from_data(np.random.default_rng(0).normal(size=(50, 4))).to_dict()
    with pytest.raises(ConfigError, match="profile describes 4 features, the input has 3"):
        InputSpace.from_spec(parse_spec({**_spec(min=0.0, max=1.0), "profile": profile}))


def test_rounded_scores_still_name_the_winner() -> None:
    def predict(rows: np.ndarray) -> np.ndarray:
        return np.tile([0.30, 0.36, 0.34], (rows.shape[0], 1))

    for output in ("score", "probabilities"):
        soft = _Oracle(predict, 3, output, precision=0).answers(np.zeros((2, 3)))
        assert soft.shape == (2, 3) and (soft.argmax(axis=1) == 1).all(), output
    labels = _Oracle(predict, 3, "label", None).answers(np.zeros((2, 3)))
    assert labels.tolist() == [1, 1]
