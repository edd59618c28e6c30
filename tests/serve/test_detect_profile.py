"""The training profile's joint part is calibrated to its stated false-alarm rate, and strict.

Data: scikit-learn's make_classification, 20 features of which 10 informative and 2 redundant
(exact linear combinations of informative ones), two classes of two clusters each, as in
benchmarks/attack_sim_offline.py. Rates are measured on held-out rows of the same draw.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import yaml
from sklearn.datasets import make_classification

from bastion.errors import ArtifactError, ConfigError
from bastion.serve.detect import PROFILE_SCHEMA, PROFILE_SCHEMA_V1, RowJudge, TrainingProfile

N_FEATURES = 20
N_TRAIN = 10_000
N_FRESH = 20_000


@dataclass(frozen=True)
class World:
    x_train: np.ndarray
    fresh: np.ndarray
    profile: TrainingProfile


@pytest.fixture(scope="module")
def world() -> World:
    x, _ = make_classification(
        n_samples=N_TRAIN + N_FRESH, n_features=N_FEATURES, n_informative=10, n_redundant=2, random_state=7
    )
    return World(x[:N_TRAIN], x[N_TRAIN:], TrainingProfile.from_data(x[:N_TRAIN]))


def marginal_samples(world: World, n: int, seed: int) -> np.ndarray:
    """Each feature drawn independently from its training values: the marginals are exact."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.choice(world.x_train[:, j], n) for j in range(N_FEATURES)], axis=1)


def without_joint(profile: TrainingProfile) -> TrainingProfile:
    data = {k: v for k, v in profile.to_dict().items() if k in V1_FIELDS}
    return TrainingProfile.from_dict(data | {"schema": PROFILE_SCHEMA_V1})


V1_FIELDS = {
    "schema",
    "n_samples",
    "mean",
    "std",
    "minimum",
    "maximum",
    "quantile_levels",
    "quantiles",
    "typical_score",
}


def test_false_alarm_rate_on_fresh_rows_is_close_to_the_stated_one(world: World) -> None:
    # Stated 0.5 %; on 20,000 held-out rows the count's own noise is about +-0.05 %.
    rate = RowJudge(world.profile).judge(world.fresh.astype(np.float32)).mean()
    assert world.profile.false_alarm_rate == 0.005
    assert 0.0025 <= rate <= 0.008


def test_stated_false_alarm_rate_is_what_the_thresholds_follow(world: World) -> None:
    profile = TrainingProfile.from_data(world.x_train, false_alarm_rate=0.02, seed=1)
    rate = RowJudge(profile).judge(world.fresh.astype(np.float32)).mean()
    assert 0.012 <= rate <= 0.03
    assert profile.joint_threshold is not None and world.profile.joint_threshold is not None
    assert profile.joint_threshold < world.profile.joint_threshold


def test_holdout_calibrates_the_thresholds(world: World) -> None:
    profile = TrainingProfile.from_data(world.x_train, holdout=world.fresh[:5_000])
    rate = RowJudge(profile).judge(world.fresh[5_000:].astype(np.float32)).mean()
    assert 0.0025 <= rate <= 0.008


def test_independent_marginal_sampling_is_seen_by_the_joint_test_only(world: World) -> None:
    samples = marginal_samples(world, 5_000, seed=2).astype(np.float32)
    with_joint = RowJudge(world.profile).judge(samples).mean()
    per_feature_only = RowJudge(without_joint(world.profile)).judge(samples).mean()
    assert with_joint >= 0.5
    assert per_feature_only <= 0.05


def test_mixture_has_more_than_one_component_on_clustered_data(world: World) -> None:
    # make_classification draws each class from two clusters: one Gaussian would leave the
    # room between them to feature-by-feature samples.
    assert 2 <= len(world.profile.joint_means) <= 8
    assert len(world.profile.joint_whitening) == len(world.profile.joint_means)


def test_uniform_box_inside_the_training_range_is_atypical(world: World) -> None:
    rng = np.random.default_rng(3)
    box = rng.uniform(world.x_train.min(axis=0), world.x_train.max(axis=0), size=(2_000, N_FEATURES))
    assert RowJudge(world.profile).judge(box.astype(np.float32)).mean() >= 0.99


def test_profile_round_trips_through_json_and_yaml(world: World) -> None:
    data = world.profile.to_dict()
    assert data["schema"] == PROFILE_SCHEMA == "bastion.training-profile/2"
    assert TrainingProfile.from_dict(json.loads(json.dumps(data))) == world.profile
    # serving.yaml carries it: YAML keeps every float exactly.
    assert TrainingProfile.from_dict(yaml.safe_load(yaml.safe_dump(data))) == world.profile


def test_profile_v1_still_loads_with_the_joint_test_off(world: World) -> None:
    v1 = {k: v for k, v in world.profile.to_dict().items() if k in V1_FIELDS} | {"schema": PROFILE_SCHEMA_V1}
    profile = TrainingProfile.from_dict(v1)
    assert profile.schema == PROFILE_SCHEMA_V1
    assert not profile.has_joint
    assert profile.false_alarm_rate is None
    assert profile.to_dict() == v1
    flags = RowJudge(profile).judge(world.fresh[:1_000].astype(np.float32))
    assert flags.shape == (1_000,)


def test_profile_from_data_is_deterministic() -> None:
    x, _ = make_classification(n_samples=3_000, n_features=6, n_informative=4, random_state=3)
    assert TrainingProfile.from_data(x, seed=5) == TrainingProfile.from_data(x, seed=5)


def test_too_little_data_gives_a_profile_without_joint_part() -> None:
    x = np.random.default_rng(0).normal(size=(500, 3))
    profile = TrainingProfile.from_data(x)
    assert profile.schema == PROFILE_SCHEMA
    assert not profile.has_joint
    assert profile.joint_threshold is None
    assert TrainingProfile.from_dict(profile.to_dict()) == profile


def test_profile_from_data_refuses_unusable_input() -> None:
    with pytest.raises(ArtifactError, match=r"expected shape \(n_samples >= 2, n_features >= 1\), got \(5,\)"):
        TrainingProfile.from_data(np.zeros(5))
    with pytest.raises(ArtifactError, match="training data: contains NaN or infinity"):
        TrainingProfile.from_data(np.array([[1.0, np.nan], [2.0, 3.0]]))
    with pytest.raises(ArtifactError, match="holdout has 3 features, the training data 2"):
        TrainingProfile.from_data(np.zeros((10, 2)), holdout=np.zeros((10, 3)))
    with pytest.raises(ConfigError, match=r"false_alarm_rate must be within \(0, 0.1\], got 0.5"):
        TrainingProfile.from_data(np.zeros((10, 2)), false_alarm_rate=0.5)


def _changed(data: dict[str, Any], field: str, value: Any) -> dict[str, Any]:
    return data | {field: value}


def _whitening(data: dict[str, Any], component: int, value: Any) -> dict[str, Any]:
    matrices = list(data["joint_whitening"])
    matrices[component] = value
    return data | {"joint_whitening": matrices}


BAD_PROFILES = [
    (lambda d: _changed(d, "schema", "bastion.training-profile/0"), "schema is"),
    (lambda d: d | {"extra": 1}, r"fields differ from the schema: \['extra'\]"),
    (lambda d: {k: v for k, v in d.items() if k != "joint_threshold"}, r"fields differ .*joint_threshold"),
    (lambda d: _changed(d, "std", [1.0] * 19), "std has 19, not 20"),
    (lambda d: _changed(d, "mean", ["x"] * 20), "unreadable field mean: str"),
    (lambda d: _changed(d, "mean", "0.0"), "unreadable field mean: str, not a list"),
    (lambda d: _changed(d, "n_samples", True), "unreadable field n_samples: bool"),
    (lambda d: _changed(d, "n_samples", 10.5), "unreadable field n_samples: float"),
    (lambda d: _changed(d, "maximum", [math.inf] * 20), "maximum contains NaN or infinity"),
    (lambda d: _changed(d, "minimum", [1e9] * 20), "minimum is above its maximum"),
    (lambda d: _changed(d, "std", [-1.0] * 20), "standard deviation is negative"),
    (lambda d: _changed(d, "typical_score_levels", [0.9, 0.1]), "typical_score_levels must be"),
    (lambda d: _changed(d, "false_alarm_rate", 0.5), "false_alarm_rate must be"),
    (lambda d: _changed(d, "joint_threshold", -1.0), "joint thresholds must be positive"),
    (lambda d: _changed(d, "joint_threshold", math.nan), "joint_threshold contains NaN or infinity"),
    (lambda d: _changed(d, "joint_threshold", None), "unreadable field joint_threshold: NoneType"),
    (lambda d: _changed(d, "joint_carried_scale", "1"), "unreadable field joint_carried_scale: str"),
    (lambda d: _changed(d, "joint_means", d["joint_means"][:-1]), "one per component"),
    (lambda d: _changed(d, "joint_means", [[0.0] * 19] * len(d["joint_means"])), "joint_means has 19, not 20"),
    (lambda d: _whitening(d, 0, d["joint_whitening"][0][:19]), "joint_whitening must be a list of 20 lists"),
    (lambda d: _whitening(d, 0, [[0.0] * 20] * 20), r"joint_whitening\[0\] is singular"),
    (lambda d: _whitening(d, 0, [[1.0] * 20] * 20), r"joint_whitening\[0\] is singular"),
    (lambda d: _changed(d, "joint_means", [[0.0] * 20] * 17), "17 mixture components, at most 16"),
    (
        lambda d: _changed(d, "joint_carried_scale", None) | {"joint_means": [], "joint_whitening": []},
        "joint thresholds without joint_means",
    ),
]


@pytest.mark.parametrize(("change", "match"), BAD_PROFILES, ids=[m for _, m in BAD_PROFILES])
def test_profile_from_dict_refuses_malformed(world: World, change: Any, match: str) -> None:
    with pytest.raises(ArtifactError, match=match):
        TrainingProfile.from_dict(change(world.profile.to_dict()))


def test_profile_v1_with_v2_fields_is_refused(world: World) -> None:
    with pytest.raises(ArtifactError, match="fields differ from the schema"):
        TrainingProfile.from_dict(world.profile.to_dict() | {"schema": PROFILE_SCHEMA_V1})
