"""Budgets priced against the model's extraction cost: warned about, or refused by policy.

A budget is over a model's cost when, spent in full, it reaches the rows an attacker needs
for 95 % agreement (the production version's `extraction_queries_95`) within a month, or the
key's lifetime if shorter. The arithmetic is pure and tested as such; the prices are read
from a real PostgreSQL registry, through its library calls, from assessments registered with
the versions; under `serve: {budget_over_extraction_cost: refuse}` nothing is created.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from bastion.errors import AccessDenied, ArtifactError
from bastion.policy.schema import BudgetAction
from bastion.serve.keys import (
    AccountLimits,
    ExtractionPrice,
    KeySpec,
    RowBudget,
    extraction_prices,
    issue_key,
    review_budget,
    review_key,
    set_account_budget,
)
from bastion.serve.limits import Quota, RateLimit
from serve.accounts_env import KeysEnv, assessment, keys_env

FRAUD = ExtractionPrice("fraud", "fraud@3", 150.0)


# --- the arithmetic ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rate", "quota", "per_day", "per_month"),
    [
        (None, Quota(daily=10_000), 10_000.0, 300_000.0),
        (RateLimit(10.0, 20), None, 864_000.0, 25_920_000.0),  # rate x 86,400 a day
        (RateLimit(10.0, 20), Quota(daily=10_000), 10_000.0, 300_000.0),
        (None, Quota(monthly=20_000), 20_000.0, 20_000.0),  # a month's budget may all go in a day
        (RateLimit(0.01, 1), Quota(monthly=20_000), 864.0, 20_000.0),
        (None, None, None, None),
    ],
)
def test_a_budget_counts_rows_a_day_and_a_month(
    rate: RateLimit | None, quota: Quota | None, per_day: float | None, per_month: float | None
) -> None:
    budget = RowBudget.of(rate, quota)
    assert (budget.per_day, budget.per_month) == (pytest.approx(per_day), pytest.approx(per_month))


def test_a_daily_quota_over_the_cost_is_reported_with_the_days_it_takes() -> None:
    review = review_budget("this key", RowBudget.of(None, Quota(daily=10_000)), [FRAUD])
    assert review.notes() == (
        "at 10,000 rows/day this key can copy fraud@3 (95% agreement after 150 label-only queries) in 0.015 days",
    )
    assert not review.refused


def test_a_budget_that_needs_more_than_a_day_still_copies_within_the_month() -> None:
    review = review_budget("this key", RowBudget.of(None, Quota(daily=100)), [FRAUD])
    [exposure] = review.exposures
    assert exposure.days == pytest.approx(1.5)
    assert exposure.message().endswith("in 1.5 days")


def test_a_monthly_quota_below_the_cost_is_not_over_it() -> None:
    price = ExtractionPrice("gbm", "gbm@1", 50_000.0)
    budget = RowBudget.of(None, Quota(daily=10_000, monthly=20_000))  # 2.5 months to spend 50,000
    assert budget.days_to_spend(50_000) == pytest.approx(75.0)
    assert review_budget("this key", budget, [price]).exposures == ()


def test_a_rate_without_quota_counts_a_whole_day_of_it() -> None:
    review = review_budget("this key", RowBudget.of(RateLimit(0.001, 1), None), [FRAUD])
    [exposure] = review.exposures
    assert exposure.days == pytest.approx(150 / 86.4)
    assert exposure.message().startswith("at 86 rows/day this key can copy fraud@3")


def test_no_limit_at_all_copies_at_once() -> None:
    [line] = review_budget("account acme", RowBudget.of(None, None), [FRAUD]).notes()
    assert line == (
        "with no rate limit or quota account acme can copy fraud@3 (95% agreement after 150 label-only queries) at once"
    )


def test_a_short_lived_key_is_priced_over_its_lifetime() -> None:
    budget = RowBudget.of(None, Quota(daily=10))  # 15 days for 150 rows
    assert review_budget("this key", budget, [FRAUD]).exposures != ()
    assert review_budget("this key", budget, [FRAUD], horizon_days=7.0).exposures == ()


def test_unmeasured_models_are_named_once_and_never_refused() -> None:
    prices = [ExtractionPrice("a", "a@1"), ExtractionPrice("b"), ExtractionPrice("c", "c@2")]
    review = review_budget("this key", RowBudget.of(None, None), prices, action=BudgetAction.REFUSE)
    assert review.notes() == ("extraction cost not measured for a@1, b (no version in the stage), c@2",)
    assert not review.refused


def test_a_key_with_richer_answers_than_measured_is_told_so() -> None:
    review = review_budget("this key", RowBudget.of(None, Quota(daily=1_000)), [FRAUD], output="probabilities")
    assert review.notes()[0].endswith(
        "; its probabilities answers show more than the labels measured, so it may need fewer"
    )
    same = review_budget("this key", RowBudget.of(None, Quota(daily=1_000)), [FRAUD], output="label")
    assert "may need fewer" not in same.notes()[0]


def test_the_policy_refuses_only_a_budget_over_a_cost() -> None:
    over = review_budget("this key", RowBudget.of(None, Quota(daily=200)), [FRAUD], action=BudgetAction.REFUSE)
    under = review_budget("this key", RowBudget.of(None, Quota(monthly=100)), [FRAUD], action=BudgetAction.REFUSE)
    assert over.refused and not under.refused


# --- prices from the registry ---------------------------------------------------------------------


@pytest.fixture
def env(tmp_path: Path) -> Iterator[KeysEnv]:
    with keys_env(tmp_path) as made:
        yield made


def test_prices_come_from_the_newest_production_versions_assessment(env: KeysEnv) -> None:
    env.publish("fraud", assessment(400.0))
    newest = env.publish("fraud", assessment(150.0))
    env.publish("fraud", assessment(9.0), stages=())  # newer, but only in dev: not what is served
    env.publish("gbm", assessment(10_000.0, output="score", max_queries=5_000))  # not reached: more than 5,000
    env.publish("plain", None)
    with pytest.raises(ArtifactError, match="must be a JSON object"):  # a report nothing could read is refused
        env.publish("broken", b"[1, 2, 3]")
    env.publish("draft", assessment(5.0), stages=("staging",))

    prices = extraction_prices(env.registry, env.admin, ["*"])

    assert newest.ref == "fraud@2"
    assert prices == (
        ExtractionPrice("fraud", "fraud@2", 150.0, "label"),
        ExtractionPrice("gbm", "gbm@1", 5_000.0, "score", more_than=True),
        ExtractionPrice("plain", "plain@1"),
    )
    named = extraction_prices(env.registry, env.admin, ["draft", "nowhere"])
    assert named == (ExtractionPrice("draft"), ExtractionPrice("nowhere"))


def test_reading_a_price_needs_read_on_the_model(env: KeysEnv) -> None:
    env.publish("fraud", assessment(150.0))
    outsider = env.principal("eve", "admin", "sentiment")
    with pytest.raises(AccessDenied, match=r"eve \(no role\) may not read on model 'fraud'"):
        extraction_prices(env.registry, outsider, ["fraud"])
    assert extraction_prices(env.registry, outsider, ["*"]) == ()  # only what it may read


def test_a_key_inside_a_small_account_budget_is_priced_at_the_accounts_rows(env: KeysEnv) -> None:
    env.publish("fraud", assessment(150.0))
    env.store.set_account_limits(env.admin, "acme", AccountLimits(quota=Quota(monthly=100)))

    alone = review_key(env.registry, env.admin, env.store, KeySpec("web", models=("fraud",)))
    inside = review_key(env.registry, env.admin, env.store, KeySpec("web", models=("fraud",), account="acme"))

    assert [e.price.label for e in alone.exposures] == ["fraud@1"]
    assert inside.exposures == ()


def test_issuing_a_key_warns_and_creates_it_by_default(env: KeysEnv) -> None:
    env.publish("fraud", assessment(150.0))
    issued = issue_key(env.registry, env.admin, env.store, KeySpec("web"))
    assert issued.key is not None and issued.text is not None
    assert [k.key_id for k in env.store.all()] == [issued.key.key_id]
    assert issued.review.notes() == (
        "at 10,000 rows/day this key can copy fraud@1 (95% agreement after 150 label-only queries) in 0.015 days",
    )


def test_under_refuse_a_budget_over_the_cost_creates_nothing(tmp_path: Path) -> None:
    with keys_env(tmp_path, budget_action="refuse") as env:
        env.publish("fraud", assessment(150.0))
        env.publish("gbm", assessment(40_000.0, max_queries=50_000))

        refused = issue_key(env.registry, env.admin, env.store, KeySpec("web"))
        assert refused.review.refused and refused.key is None and refused.text is None
        assert [e.price.label for e in refused.review.exposures] == ["fraud@1", "gbm@1"]
        assert env.store.all() == [] and env.audited() == []

        # 4 rows a day, 90 days: never 150 within a month, nor 40,000.
        small = KeySpec("web", quota=Quota(daily=4), rate=RateLimit(1.0, 4), expires_in=timedelta(days=90))
        allowed = issue_key(env.registry, env.admin, env.store, small)
        assert allowed.key is not None and not allowed.review.exposures
        # A budget for one model is priced against that model only.
        gbm_only = issue_key(env.registry, env.admin, env.store, KeySpec("batch", models=("gbm",), quota=Quota(daily=1_000)))
        assert gbm_only.key is not None


def test_under_refuse_an_account_budget_over_the_cost_is_not_set(tmp_path: Path) -> None:
    with keys_env(tmp_path, budget_action="refuse") as env:
        env.publish("fraud", assessment(150.0))
        env.publish("gbm", assessment(40_000.0, max_queries=50_000))
        env.store.create(env.admin, KeySpec("batch", models=("gbm",), account="acme", quota=Quota(daily=10)))

        # The account's only key calls gbm: a budget of 1,000 rows a day takes 40 days to copy it.
        kept = set_account_budget(env.registry, env.admin, env.store, "acme", AccountLimits(quota=Quota(daily=1_000)))
        assert not kept.refused and kept.exposures == ()
        assert env.store.account_limits("acme") == AccountLimits(quota=Quota(daily=1_000))

        loose = set_account_budget(env.registry, env.admin, env.store, "acme", AccountLimits(quota=Quota(daily=5_000)))
        assert loose.refused
        assert env.store.account_limits("acme") == AccountLimits(quota=Quota(daily=1_000))  # unchanged

        # An account without keys is priced against every served model.
        empty = set_account_budget(env.registry, env.admin, env.store, "newco", AccountLimits(quota=Quota(daily=1_000)))
        assert empty.refused and [e.price.label for e in empty.exposures] == ["fraud@1"]
        assert env.store.account_limits("newco") is None


def test_an_account_budget_is_set_by_an_admin_of_every_model_only(env: KeysEnv) -> None:
    fraud_admin = env.principal("olga", "admin", "fraud")
    with pytest.raises(AccessDenied, match=r"olga \(no role\) may not token.issue on every model"):
        set_account_budget(env.registry, fraud_admin, env.store, "acme", AccountLimits(quota=Quota(daily=1)))
    assert env.store.account_limits("acme") is None
