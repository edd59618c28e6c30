"""The row judge: joint test, mean-imputed records judged on what they carry, hard to game.

Data as in test_detect_profile.py: make_classification, 20 features (10 informative, 2
redundant), a profile of schema /2 at the default 0.5 % false-alarm rate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from sklearn.datasets import make_classification

from bastion.errors import ArtifactError, ConfigError
from bastion.serve.detect import RowJudge, TrainingProfile

N_FEATURES = 20
N_TRAIN = 10_000
N_FRESH = 6_000


@dataclass(frozen=True)
class World:
    x_train: np.ndarray
    fresh: np.ndarray
    profile: TrainingProfile
    judge: RowJudge

    @property
    def mean(self) -> np.ndarray:
        return np.asarray(self.profile.mean)


@pytest.fixture(scope="module")
def world() -> World:
    x, _ = make_classification(
        n_samples=N_TRAIN + N_FRESH, n_features=N_FEATURES, n_informative=10, n_redundant=2, random_state=7
    )
    profile = TrainingProfile.from_data(x[:N_TRAIN])
    return World(x[:N_TRAIN], x[N_TRAIN:], profile, RowJudge(profile))


def marginal_samples(world: World, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([rng.choice(world.x_train[:, j], n) for j in range(N_FEATURES)], axis=1)


def set_to_mean(world: World, rows: np.ndarray, count: int, seed: int, *, same_for_all: bool = False) -> np.ndarray:
    """Rows with `count` features replaced by the profile's mean: a random set per row, or one set."""
    rng = np.random.default_rng(seed)
    out = rows.copy()
    fixed = rng.choice(N_FEATURES, count, replace=False)
    for row in out:
        missing = fixed if same_for_all else rng.choice(N_FEATURES, count, replace=False)
        row[missing] = world.mean[missing]
    return out.astype(np.float32)


@pytest.mark.parametrize("same_for_all", [False, True], ids=["random-fields", "same-fields"])
def test_mean_imputed_records_are_judged_on_what_they_carry(world: World, same_for_all: bool) -> None:
    # Issue #12: 12 of 20 features mean-imputed raised out-of-distribution at query 20.
    rows = set_to_mean(world, world.fresh[:4_000], 12, seed=1, same_for_all=same_for_all)
    assert world.judge.judge(rows).mean() <= 0.01


def test_only_the_exact_float32_mean_counts_as_imputed(world: World) -> None:
    # One float32 step from the mean is a value: the row is judged on all 20 features, and 12
    # values at the centre make many rows atypical. Rounding towards the mean gains nothing.
    rows = set_to_mean(world, world.fresh[:2_000], 12, seed=1)
    mean32 = np.asarray(world.profile.mean, dtype=np.float32)
    nudged = np.where(rows == mean32, np.nextafter(mean32, np.float32(np.inf)), rows)
    verdicts = world.judge.judge(nudged)
    np.testing.assert_array_equal(verdicts, ~world.profile.geometry().view(None).typical(nudged))
    assert verdicts.mean() >= 10 * max(world.judge.judge(rows).mean(), 0.005)


@pytest.mark.parametrize("count", [1, 2, 4])
def test_random_features_at_the_mean_do_not_hide_independent_sampling(world: World, count: int) -> None:
    # Leaving a feature out removes only the dependences it takes part in; the carried ones
    # still break the joint pattern. Benign rows with the same imputation stay typical.
    attack = set_to_mean(world, marginal_samples(world, 3_000, seed=count), count, seed=count)
    benign = set_to_mean(world, world.fresh[:3_000], count, seed=count)
    attack_rate = world.judge.judge(attack).mean()
    benign_rate = world.judge.judge(benign).mean()
    assert attack_rate >= 0.3
    assert benign_rate <= 0.01
    assert attack_rate >= 30 * max(benign_rate, 1e-3)


def test_rows_carrying_too_few_features_are_atypical(world: World) -> None:
    d = N_FEATURES
    assert world.judge.min_carried == 7  # a third of 20, rounded up
    thin = set_to_mean(world, world.fresh[:200], d - world.judge.min_carried + 1, seed=2)
    enough = set_to_mean(world, world.fresh[:200], d - world.judge.min_carried, seed=2)
    assert world.judge.judge(thin).all()
    assert world.judge.judge(enough).mean() <= 0.03


def test_one_row_and_batch_and_dtype_give_the_same_verdicts(world: World) -> None:
    rows = np.vstack(
        [
            world.fresh[:300],
            marginal_samples(world, 300, seed=5),
            set_to_mean(world, world.fresh[300:400], 5, seed=5),
        ]
    ).astype(np.float32)
    batch = world.judge.judge(rows)
    one_by_one = np.concatenate([world.judge.judge(row[None, :]) for row in rows])
    np.testing.assert_array_equal(batch, one_by_one)
    np.testing.assert_array_equal(batch, world.judge.judge(rows.astype(np.float64)))
    assert 0.3 < batch.mean() < 0.7  # both kinds present, so agreement means something


def test_compiled_views_agree_with_calibration_scores(world: World) -> None:
    # Calibration scores rows with batched solves; judging compiles a view per carried set.
    # Both must compute the same distances, or the thresholds mean something else at serving.
    geometry = world.profile.geometry()
    rng = np.random.default_rng(6)
    rows = world.fresh[:50]
    for k in (20, 13, 5):
        index = np.sort(rng.choice(N_FEATURES, k, replace=False))
        other, joint = geometry.scores(rows, np.broadcast_to(index, (rows.shape[0], k)))
        view_other, view_joint = geometry.view(index if k < N_FEATURES else None).scores(rows[:, index])
        np.testing.assert_allclose(view_joint, joint, rtol=1e-9)
        np.testing.assert_array_equal(view_other, other)


def test_non_finite_rows_are_atypical_without_warnings(world: World) -> None:
    # filterwarnings = error: a RuntimeWarning from the arithmetic would fail this test.
    rows = world.fresh[:6].astype(np.float32)
    rows[0, 3] = np.nan
    rows[2, 0] = np.inf
    rows[4, 7] = -np.inf
    rows[5, :12] = np.asarray(world.profile.mean, dtype=np.float32)[:12]  # imputed, and...
    rows[5, 15] = np.nan  # ...not finite
    bad = [0, 2, 4, 5]
    assert world.judge.judge(rows)[bad].all()
    for row in rows[bad]:
        assert world.judge.judge(row[None, :]).tolist() == [True]


def test_huge_finite_values_are_atypical_without_overflow(world: World) -> None:
    rows = np.tile(world.fresh[:1], (2, 1)).astype(np.float32)
    rows[0, 1] = np.finfo(np.float32).max
    rows[1, 1] = -np.finfo(np.float32).max
    assert world.judge.judge(rows).tolist() == [True, True]
    assert world.judge.judge(rows[:1]).tolist() == [True]


def test_declared_serving_range_is_enforced(world: World) -> None:
    low = np.quantile(world.x_train, 0.05, axis=0)
    high = np.quantile(world.x_train, 0.95, axis=0)
    narrow = RowJudge(world.profile, spec_min=low.tolist(), spec_max=high.tolist())
    rows = world.fresh[:2_000].astype(np.float32)
    outside = ((rows < low) | (rows > high)).any(axis=1)
    assert outside.mean() > 0.3
    assert narrow.judge(rows)[outside].all()


def test_compiled_carried_sets_stay_within_the_cache_bound(world: World) -> None:
    small = RowJudge(world.profile, mask_cache=8)
    rows = set_to_mean(world, world.fresh[:200], 6, seed=7)  # ~200 distinct carried sets
    verdicts = small.judge(rows)
    assert small.cached_views() == 8
    np.testing.assert_array_equal(verdicts, world.judge.judge(rows))
    np.testing.assert_array_equal(np.concatenate([small.judge(r[None, :]) for r in rows]), verdicts)


def test_large_batches_are_judged_in_steps(world: World) -> None:
    rows = np.tile(world.fresh[:100], (50, 1)).astype(np.float32)  # 5,000 rows > 4,096 per step
    verdicts = world.judge.judge(rows)
    assert verdicts.shape == (5_000,)
    np.testing.assert_array_equal(verdicts, np.tile(world.judge.judge(rows[:100]), 50))


def test_constant_training_feature_is_a_value_not_a_missing_one() -> None:
    x = np.random.default_rng(0).normal(size=(4_000, 4))
    x[:, 2] = 4.0
    profile = TrainingProfile.from_data(x[:3_000])
    judge = RowJudge(profile)
    assert judge.judge(x[3_000:].astype(np.float32)).mean() <= 0.02
    off = x[3_000:3_100].copy()
    off[:, 2] = 4.5
    assert judge.judge(off.astype(np.float32)).all()


def test_judge_rejects_wrong_shapes_and_settings(world: World) -> None:
    with pytest.raises(ArtifactError, match=r"rows of shape \(2, 19\), expected \(n, 20\)"):
        world.judge.judge(np.zeros((2, 19), dtype=np.float32))
    with pytest.raises(ArtifactError, match=r"rows of shape \(20,\)"):
        world.judge.judge(np.zeros(20, dtype=np.float32))
    with pytest.raises(ConfigError, match=r"min_carried must be within 1\.\.20, got 0"):
        RowJudge(world.profile, min_carried=0)
    with pytest.raises(ConfigError, match="mask_cache must be at least 1"):
        RowJudge(world.profile, mask_cache=0)
    with pytest.raises(ConfigError, match="spec_min has 3 values for 20 features"):
        RowJudge(world.profile, spec_min=[0.0, 0.0, 0.0])
