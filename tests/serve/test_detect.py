"""The query monitor flags extraction and membership probing, and leaves benign keys alone.

The attacks are small versions of those in benchmarks/attack_sim_offline.py, against a
20-feature logistic regression on make_classification data, with fixed seeds. The benign
clients include those that a per-key monitor used to mistake for attacks (issue #12): retries,
a nightly re-score of the same records, mean-imputed records, a shifted population.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

from bastion.errors import ArtifactError, ConfigError
from bastion.serve import detect
from bastion.serve.detect import (
    Alarm,
    AlarmKind,
    DetectorConfig,
    QueryMonitor,
    TrainingProfile,
    shapiro_w,
    shapiro_w_royston,
)

N_FEATURES = 20
N_TRAIN = 10_000
BENIGN_KEYS = 10
BENIGN_QUERIES = 2_000


@dataclass(frozen=True)
class World:
    x_train: np.ndarray
    benign: np.ndarray
    seeds: np.ndarray
    target: LogisticRegression
    profile: TrainingProfile


@pytest.fixture(scope="module")
def world() -> World:
    total = N_TRAIN + BENIGN_KEYS * BENIGN_QUERIES + 100
    x, y = make_classification(n_samples=total, n_features=N_FEATURES, n_informative=10, random_state=7)
    x_train, y_train = x[:N_TRAIN], y[:N_TRAIN]
    return World(
        x_train=x_train,
        benign=x[N_TRAIN : N_TRAIN + BENIGN_KEYS * BENIGN_QUERIES],
        seeds=x[-100:],
        target=LogisticRegression(max_iter=2_000).fit(x_train, y_train),
        profile=TrainingProfile.from_data(x_train),
    )


def first_alarm(monitor: QueryMonitor, key: str, queries: np.ndarray) -> Alarm | None:
    for row in queries:
        alarms = monitor.observe(key, row[None, :])
        if alarms:
            return alarms[0]
    return None


def uniform_box(world: World, n: int, seed: int) -> np.ndarray:
    low, high = world.x_train.min(axis=0), world.x_train.max(axis=0)
    span = high - low
    return np.random.default_rng(seed).uniform(low - span / 2, high + span / 2, size=(n, N_FEATURES))


def jacobian_augmentation(world: World, n: int, step: float) -> np.ndarray:
    """Papernot et al. 2017 with a logistic-regression substitute, label-only oracle."""
    points = world.seeds[:10]
    labels = world.target.predict(points)
    sent = [points]
    rnd = 0
    while sum(len(s) for s in sent) < n:
        copy = LogisticRegression(max_iter=2_000).fit(points, labels)
        direction = np.sign(copy.coef_[0])[None, :] * np.where(labels == 1, 1.0, -1.0)[:, None]
        new = points + step * (-1.0) ** (rnd // 3) * direction
        sent.append(new)
        points, labels = np.vstack([points, new]), np.concatenate([labels, world.target.predict(new)])
        rnd += 1
    return np.vstack(sent)[:n]


def membership_probes(world: World, n: int, noise: float, interleave: bool) -> np.ndarray:
    rng = np.random.default_rng(3)
    records = world.x_train[rng.choice(N_TRAIN, size=8, replace=False)]
    per = math.ceil(n / 8)
    std = world.x_train.std(axis=0)
    blocks = [record + rng.normal(size=(per, N_FEATURES)) * noise * std for record in records]
    queries = np.stack(blocks, axis=1).reshape(-1, N_FEATURES) if interleave else np.vstack(blocks)
    return queries[:n]


@pytest.mark.parametrize("widen", [0.5, 0.0], ids=["box-2x-range", "box-inside-range"])
def test_uniform_box_probing_is_flagged_within_150_queries(world: World, widen: float) -> None:
    low, high = world.x_train.min(axis=0), world.x_train.max(axis=0)
    span = (high - low) * widen
    queries = np.random.default_rng(1).uniform(low - span, high + span, size=(150, N_FEATURES))
    alarm = first_alarm(QueryMonitor(world.profile), "k", queries)
    assert alarm is not None
    assert alarm.kind == AlarmKind.OUT_OF_DISTRIBUTION
    assert alarm.queries <= 150
    assert alarm.score >= alarm.threshold


@pytest.mark.parametrize("step", [0.1, 0.5, 1.0])
def test_jacobian_augmentation_is_flagged_within_150_queries(world: World, step: float) -> None:
    # Small steps are near duplicates or a spike of equal distances; larger steps along
    # sign(w) also break how the features go together, and the joint test may see that first.
    alarm = first_alarm(QueryMonitor(world.profile), "k", jacobian_augmentation(world, 150, step))
    assert alarm is not None
    assert alarm.kind in {AlarmKind.PRADA, AlarmKind.NEAR_DUPLICATE, AlarmKind.OUT_OF_DISTRIBUTION}
    assert alarm.queries <= 150


@pytest.mark.parametrize(("noise", "interleave"), [(0.05, False), (0.01, True), (0.001, False)])
def test_membership_probing_is_flagged_within_150_queries(world: World, noise: float, interleave: bool) -> None:
    monitor = QueryMonitor(world.profile)
    alarm = first_alarm(monitor, "k", membership_probes(world, 150, noise, interleave))
    assert alarm is not None
    assert alarm.kind == AlarmKind.NEAR_DUPLICATE
    assert alarm.queries <= 150


def test_prada_test_alone_flags_small_step_augmentation(world: World) -> None:
    # With the near-duplicate test off, the Shapiro-Wilk test still sees the spike of equal distances.
    monitor = QueryMonitor(world.profile, DetectorConfig(dup_radius=0.0))
    alarm = first_alarm(monitor, "k", jacobian_augmentation(world, 150, 0.1))
    assert alarm is not None
    assert alarm.kind == AlarmKind.PRADA
    assert alarm.score < alarm.threshold


def test_benign_streams_raise_no_alarm(world: World) -> None:
    monitor = QueryMonitor(world.profile)
    for k in range(BENIGN_KEYS):
        key = f"benign-{k}"
        for row in world.benign[k * BENIGN_QUERIES : (k + 1) * BENIGN_QUERIES]:
            assert monitor.observe(key, row[None, :]) == []
        assert monitor.alarmed(key) == set()
    stats = monitor.snapshot("benign-0")
    assert stats is not None
    assert stats.queries == BENIGN_QUERIES
    assert stats.prada_w > monitor.config.prada_delta


def retrying_client(world: World, k: int, rate: float, seed: int) -> np.ndarray:
    """A benign key that re-sends an earlier request (one row) for `rate` of its calls."""
    rng = np.random.default_rng(seed)
    own = world.benign[k * BENIGN_QUERIES : (k + 1) * BENIGN_QUERIES]
    sent: list[np.ndarray] = []
    fresh = iter(own)
    while len(sent) < BENIGN_QUERIES:
        sent.append(sent[rng.integers(len(sent))] if sent and rng.random() < rate else next(fresh))
    return np.array(sent)


@pytest.mark.parametrize("rate", [0.05, 0.10])
def test_retrying_client_raises_no_alarm(world: World, rate: float) -> None:
    # Issue #12: a client retrying 5 % of its calls raised PRADA in 5 of 5 seeds: each retry is
    # a distance of exactly 0. Repeats are now counted once.
    monitor = QueryMonitor(world.profile)
    for k in range(3):
        key = f"retrying-{k}"
        for row in retrying_client(world, k, rate, seed=k):
            assert monitor.observe(key, row[None, :]) == []
        stats = monitor.snapshot(key)
        assert stats is not None
        assert stats.queries == BENIGN_QUERIES
        assert stats.repeats > BENIGN_QUERIES * rate / 2


def test_retries_counted_again_would_raise_prada(world: World) -> None:
    # The control for the test above: the same client, every row declared fresh.
    monitor = QueryMonitor(world.profile)
    queries = retrying_client(world, 0, 0.05, seed=0)
    alarms = [a for row in queries for a in monitor.observe("k", row[None, :], fresh=np.ones(1, dtype=bool))]
    assert [a.kind for a in alarms] == [AlarmKind.PRADA]


def test_nightly_rescore_of_the_same_records_raises_no_alarm(world: World) -> None:
    # Issue #12: re-scoring the same 200 customers every night raised near-duplicate at 286.
    monitor = QueryMonitor(world.profile)
    customers = world.benign[:200]
    for _night in range(10):
        assert monitor.observe("nightly", customers) == []
    stats = monitor.snapshot("nightly")
    assert stats is not None
    assert (stats.queries, stats.repeats) == (2000, 1800)


def test_repeats_within_one_batch_are_counted_once(world: World) -> None:
    monitor = QueryMonitor(world.profile)
    batch = np.vstack([world.benign[:5], world.benign[:5]])
    monitor.observe("k", batch)
    stats = monitor.snapshot("k")
    assert stats is not None
    assert (stats.queries, stats.repeats) == (10, 5)


def test_alarm_names_the_query_among_all_those_sent_repeats_included(world: World) -> None:
    # The gateway maps an alarm back to the request that raised it: its index counts repeats,
    # though the tests never see them.
    box = uniform_box(world, 20, seed=5)
    with_repeats, without = QueryMonitor(world.profile), QueryMonitor(world.profile)
    with_repeats.observe("k", world.benign[:10])
    with_repeats.observe("k", world.benign[:10])
    alarms = with_repeats.observe("k", np.vstack([world.benign[:3], box]))
    without.observe("k", world.benign[:10])
    [reference] = without.observe("k", box)
    assert [a.queries for a in alarms] == [reference.queries + 13]
    assert f"key k after {reference.queries + 13} queries" in alarms[0].message


def test_mean_imputed_client_raises_no_alarm(world: World) -> None:
    # Issue #12: records with 12 of 20 features mean-imputed raised out-of-distribution at 20.
    mean = np.asarray(world.profile.mean)
    rng = np.random.default_rng(3)
    monitor = QueryMonitor(world.profile)
    rows = world.benign[:BENIGN_QUERIES].copy()
    for row in rows:
        missing = rng.choice(N_FEATURES, 12, replace=False)
        row[missing] = mean[missing]
    for row in rows:
        assert monitor.observe("imputing", row[None, :]) == []
    stats = monitor.snapshot("imputing")
    assert stats is not None
    assert stats.atypical_total < 0.02 * BENIGN_QUERIES


def test_shifted_client_raises_no_alarm(world: World) -> None:
    # A population 0.3 standard deviations off in every feature: unlike the training data,
    # not an attack.
    shift = 0.3 * np.asarray(world.profile.std)
    monitor = QueryMonitor(world.profile)
    for row in world.benign[:BENIGN_QUERIES] + shift:
        assert monitor.observe("shifted", row[None, :]) == []


def test_marginal_sampling_is_flagged_within_150_queries(world: World) -> None:
    # Sampling each feature independently from the training marginals: every per-feature test
    # passes, the joint one does not.
    rng = np.random.default_rng(4)
    queries = np.stack([rng.choice(world.x_train[:, j], 150) for j in range(N_FEATURES)], axis=1)
    alarm = first_alarm(QueryMonitor(world.profile), "k", queries)
    assert alarm is not None
    assert alarm.kind == AlarmKind.OUT_OF_DISTRIBUTION


def test_prada_leaves_out_rows_far_from_the_mean() -> None:
    # The draw of benchmarks/attack_sim_offline.py --seed 3: its first benign key's W fell to
    # 0.84 when PRADA kept rows the joint test finds typical (near a cluster) but far from the
    # mean, one huge nearest distance early on. They are left out, as before the joint test.
    x, _ = make_classification(n_samples=45_000, n_features=N_FEATURES, n_informative=10, n_redundant=2, random_state=3)
    monitor = QueryMonitor(TrainingProfile.from_data(x[:N_TRAIN]))
    lowest = math.inf
    for row in x[N_TRAIN : N_TRAIN + BENIGN_QUERIES]:
        assert monitor.observe("k", row[None, :]) == []
        stats = monitor.snapshot("k")
        assert stats is not None
        if not math.isnan(stats.prada_w):
            lowest = min(lowest, stats.prada_w)
    assert lowest > 0.9


def test_benign_stream_in_batches_raises_no_alarm(world: World) -> None:
    monitor = QueryMonitor(world.profile)
    for batch in world.benign[:BENIGN_QUERIES].reshape(-1, 50, N_FEATURES):
        assert monitor.observe("batched", batch) == []


def test_alarm_fires_once_then_stays_raised(world: World) -> None:
    monitor = QueryMonitor(world.profile)
    queries = uniform_box(world, 400, seed=2)
    raised = [alarm for row in queries for alarm in monitor.observe("k", row[None, :])]
    assert [a.kind for a in raised].count(AlarmKind.OUT_OF_DISTRIBUTION) == 1
    assert AlarmKind.OUT_OF_DISTRIBUTION in monitor.alarmed("k")
    for row in world.benign[:200]:
        monitor.observe("k", row[None, :])
    assert AlarmKind.OUT_OF_DISTRIBUTION in monitor.alarmed("k")
    assert monitor.alarmed("other") == set()


def test_alarm_names_key_and_query_index(world: World) -> None:
    monitor = QueryMonitor(world.profile)
    alarms = monitor.observe("key-41", uniform_box(world, 100, seed=3))
    assert len(alarms) == 1
    alarm = alarms[0]
    assert alarm.key_id == alarm.stream == "key-41"
    # Every box query is atypical: at the tolerated 3 %, six atypical queries in six have
    # probability 0.03^6 < 1e-9 < 0.03^5, so the cumulative test fires at the sixth, before
    # the window test's minimum of 20.
    assert alarm.queries == 6 < monitor.config.ood_min_queries
    assert alarm.score >= alarm.threshold
    assert "key-41 after 6 queries" in alarm.message
    with pytest.raises(AttributeError, match="cannot assign to field 'score'"):
        alarm.score = 0.0  # type: ignore[misc]


@pytest.mark.slow  # tens of seconds quiet, a minute or more on a loaded 2-core machine
def test_state_stays_within_bound_over_100k_queries(world: World) -> None:
    config = DetectorConfig()
    monitor = QueryMonitor(world.profile, config)
    rng = np.random.default_rng(5)
    mean, std = np.array(world.profile.mean), np.array(world.profile.std)
    monitor.observe("k", mean + std * rng.normal(size=(1_000, N_FEATURES)))
    after_1k = monitor.state_bytes("k")
    for _ in range(99):
        monitor.observe("k", mean + std * rng.normal(size=(1_000, N_FEATURES)))
    stats = monitor.snapshot("k")
    assert stats is not None
    assert stats.queries == 100_000
    assert monitor.state_bytes("k") == after_1k
    assert monitor.state_bytes("k") <= config.state_bytes_bound(N_FEATURES)
    assert config.state_bytes_bound(N_FEATURES) < 64 * 1024


def test_least_recently_seen_key_is_evicted_beyond_max_keys(world: World) -> None:
    monitor = QueryMonitor(world.profile, DetectorConfig(max_keys=3))
    row = world.benign[:1]
    for key in ("a", "b", "c"):
        monitor.observe(key, row)
    monitor.observe("a", row)  # "b" is now the least recently seen
    monitor.observe("d", row)
    assert len(monitor) == 3
    assert monitor.snapshot("b") is None
    assert all(monitor.snapshot(key) is not None for key in ("a", "c", "d"))


def test_forget_drops_state_and_alarms(world: World) -> None:
    monitor = QueryMonitor(world.profile)
    monitor.observe("k", uniform_box(world, 50, seed=4))
    assert monitor.alarmed("k")
    monitor.forget("k")
    monitor.forget("never-seen")
    assert monitor.alarmed("k") == set()
    assert monitor.state_bytes("k") == 0
    assert len(monitor) == 0


def test_non_finite_queries_are_atypical_and_do_not_break_the_stream(world: World) -> None:
    monitor = QueryMonitor(world.profile)
    queries = world.benign[:40].copy()
    queries[::2, 3] = np.nan
    queries[1::4, 0] = np.inf
    alarms = monitor.observe("k", queries)
    assert [a.kind for a in alarms] == [AlarmKind.OUT_OF_DISTRIBUTION]


def test_observe_rejects_wrong_shape(world: World) -> None:
    monitor = QueryMonitor(world.profile)
    with pytest.raises(ArtifactError, match=r"expected \(batch, 20\)"):
        monitor.observe("k", np.zeros((2, 19)))
    with pytest.raises(ArtifactError, match=r"queries of shape \(20,\), expected \(batch, 20\)"):
        monitor.observe("k", np.zeros(20))
    with pytest.raises(ArtifactError, match=r"fresh of shape \(3,\), expected \(2,\)"):
        monitor.observe("k", np.zeros((2, 20)), fresh=np.ones(3, dtype=bool))
    with pytest.raises(ArtifactError, match=r"atypical of shape \(1,\), expected \(2,\)"):
        monitor.observe("k", np.zeros((2, 20)), atypical=np.ones(1, dtype=bool))


def test_the_gateways_verdicts_are_what_the_monitor_counts(world: World) -> None:
    # The gateway judges every row before answering and hands its verdicts on, so the observer
    # does not judge them twice. Held-out rows declared atypical must count as atypical (the
    # monitor used them, not its own judge), and a repeat's verdict must not count at all.
    told, judged = QueryMonitor(world.profile), QueryMonitor(world.profile)
    rows = world.benign[:50]
    fresh = np.ones(50, dtype=bool)
    fresh[10:20] = False  # the gateway saw these before
    for monitor, atypical in ((told, np.ones(50, dtype=bool)), (judged, None)):
        monitor.observe("k", rows, fresh=fresh, atypical=atypical)
    told_stats, judged_stats = told.snapshot("k"), judged.snapshot("k")
    assert told_stats is not None and judged_stats is not None
    assert told_stats.queries == judged_stats.queries == 50
    assert told_stats.repeats == 10
    assert told_stats.atypical_total == 40  # every fresh row, as told
    assert judged_stats.atypical_total <= 2  # its own judge: about the 0.5 % false-alarm rate


def test_constant_feature_in_training_data_gives_finite_statistics() -> None:
    x = np.random.default_rng(0).normal(size=(500, 3))
    x[:, 1] = 4.0
    monitor = QueryMonitor(TrainingProfile.from_data(x))
    assert monitor.observe("k", x[:10]) == []
    stats = monitor.snapshot("k")
    assert stats is not None
    assert math.isfinite(stats.atypical_share)


@pytest.mark.parametrize("n", [3, 4, 5, 6, 11, 12, 40, 256])
def test_royston_w_matches_scipy(n: int) -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(n)
    for sample in (rng.normal(size=n), rng.exponential(size=n), rng.uniform(size=n)):
        assert shapiro_w_royston(sample) == pytest.approx(stats.shapiro(sample).statistic, abs=1e-6)


def test_equal_distances_give_zero_w() -> None:
    assert shapiro_w(np.full(50, 0.3)) == 0.0
    assert shapiro_w_royston(np.full(50, 0.3)) == 0.0


@pytest.mark.parametrize(
    "bad",
    [
        {"max_keys": 0},
        {"prada_window": 4},
        {"prada_min_queries": 2},
        {"prada_delta": 1.5},
        {"dup_share": 0.0},
        {"prada_warmup": -1},
        {"repeat_memory": 0},
        {"ood_tolerated_rate": 1.0},
        {"ood_p_value": 0.0},
    ],
)
def test_config_refuses_nonsense(bad: dict[str, float]) -> None:
    with pytest.raises(ConfigError, match=rf"detector {next(iter(bad))} must"):
        DetectorConfig(**bad)  # type: ignore[arg-type]


def test_observe_work_per_query_is_bounded(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """observe is O(1) per query, counted rather than timed (speed: benchmarks/attack_sim_offline.py).

    The costly steps are the Shapiro-Wilk test and the nearest-distance search: the test runs at
    most once per `prada_every` new distances (plus once per query that adds none) on at most
    `prada_window` values, and the search sees at most `prada_keep` earlier queries.
    """
    sizes: list[int] = []
    monkeypatch.setattr(detect.monitor, "shapiro_w", lambda values: sizes.append(len(values)) or shapiro_w(values))
    monitor = QueryMonitor(world.profile)
    cfg = monitor.config
    for row in world.benign[:10_000]:
        monitor.observe("k", row[None, :])
        state = monitor._keys["k"]
        assert state.kept_size <= cfg.prada_keep
    assert state.fresh == 10_000
    assert 0 < max(sizes) <= cfg.prada_window
    assert len(sizes) <= state.dist_seen // cfg.prada_every + (state.fresh - state.dist_seen)
    assert monitor.state_bytes("k") <= cfg.state_bytes_bound(N_FEATURES)
