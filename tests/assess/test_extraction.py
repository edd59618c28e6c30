"""The extraction cost of real models: a logistic regression is cheap to copy, probabilities make
it cheaper, boosted trees cost more, and the same seed gives the same figures."""

from __future__ import annotations

import pytest

from bastion.assess import ExtractionCost, measure_extraction_cost
from bastion.assess.assessment import LoadedModel

from .targets import heldout

BUDGET = 200


@pytest.fixture(scope="module")
def logistic_labels(logistic: LoadedModel) -> ExtractionCost:
    return measure_extraction_cost(logistic.predict, logistic.spec, heldout=heldout(), max_queries=BUDGET, seed=1)


@pytest.fixture(scope="module")
def trees_labels(trees: LoadedModel) -> ExtractionCost:
    return measure_extraction_cost(trees.predict, trees.spec, heldout=heldout(), max_queries=BUDGET, seed=1)


def test_label_only_copy_of_logistic_regression_agrees_95_percent_well_within_budget(
    logistic_labels: ExtractionCost,
) -> None:
    cost = logistic_labels
    assert {curve.attack for curve in cost.curves} == {"ranges-uniform", "marginals", "boundary", "knockoff"}
    reached = cost.queries_for(0.95)
    assert reached is not None and reached <= BUDGET // 2
    assert cost.metrics()["extraction_queries_95"] == float(reached)
    assert cost.evaluated_on == "heldout" and cost.evaluation_rows == 500


def test_probabilities_make_the_copy_cheaper_than_labels(logistic: LoadedModel, logistic_labels: ExtractionCost) -> None:
    scored = measure_extraction_cost(
        logistic.predict, logistic.spec, heldout=heldout(), output="probabilities", precision=3, max_queries=BUDGET, seed=1
    )
    assert all(curve.attack.startswith("scores-") for curve in scored.curves)
    for metric in ("extraction_queries_95", "extraction_queries_99"):
        assert scored.metrics()[metric] < logistic_labels.metrics()[metric]
    assert scored.metric_reached()["extraction_queries_99"] and scored.metrics()["extraction_queries_99"] <= 60


def test_boosted_trees_cost_more_to_copy_than_logistic_regression(
    trees_labels: ExtractionCost, logistic_labels: ExtractionCost
) -> None:
    assert trees_labels.metrics()["extraction_queries_95"] > 2 * logistic_labels.metrics()["extraction_queries_95"]
    assert trees_labels.metric_reached()["extraction_queries_99"] is False
    assert trees_labels.metrics()["extraction_queries_99"] == 2 * BUDGET
    # Knockoff's real rows are the cheapest way to copy trees; it is among the curves that ran.
    assert "knockoff" in {curve.attack for curve in trees_labels.curves}


def test_same_seed_gives_the_same_cost(logistic: LoadedModel) -> None:
    def measure(seed: int) -> ExtractionCost:
        return measure_extraction_cost(logistic.predict, logistic.spec, heldout=heldout()[:200], max_queries=30, seed=seed)

    first, again, other = measure(5), measure(5), measure(6)
    assert first == again
    assert first.curves != other.curves
    scored = [
        measure_extraction_cost(logistic.predict, logistic.spec, output="probabilities", precision=2, max_queries=30, seed=5)
        for _ in range(2)
    ]
    assert scored[0] == scored[1]


def test_without_data_agreement_is_measured_on_profile_marginals_and_says_so(logistic: LoadedModel) -> None:
    lines: list[str] = []
    cost = measure_extraction_cost(logistic.predict, logistic.spec, max_queries=30, seed=0, progress=lines.append)
    assert cost.evaluated_on == "profile-marginals" and cost.evaluation_rows == 2000
    assert "knockoff" not in {curve.attack for curve in cost.curves}
    assert "profile-marginals" in lines[0]
    assert any(line.startswith("boundary: 30 queries") for line in lines)


def test_score_output_is_measured_with_soft_targets(logistic: LoadedModel) -> None:
    cost = measure_extraction_cost(logistic.predict, logistic.spec, output="score", precision=2, max_queries=100, seed=0)
    assert cost.output == "score" and cost.precision == 2
    assert cost.queries_for(0.95) is not None
