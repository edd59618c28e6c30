"""Stream tests catch diluted synthetic queries over time and leave benign clients alone.

Rows are judged by a `RowJudge` on a make_classification profile (20 features, 2 redundant),
one request per row, as the gateway would: repeats filtered by a `RepeatFilter`, the fresh
rows' verdicts added to each stream.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pytest
from sklearn.datasets import make_classification

from bastion.errors import ArtifactError, ConfigError
from bastion.serve.detect import Alarm, AlarmKind, RepeatFilter, RowJudge, StreamConfig, StreamWatch, TrainingProfile
from bastion.serve.detect.streams import DigestRing

N_FEATURES = 20
N_TRAIN = 10_000
N_PUBLIC = 10_000  # rows an attacker may have: fillers come from here
BENIGN_KEYS = 10
BENIGN_QUERIES = 2_000


@dataclass(frozen=True)
class World:
    x_train: np.ndarray
    public: np.ndarray
    benign: np.ndarray
    profile: TrainingProfile
    judge: RowJudge

    @property
    def std(self) -> np.ndarray:
        return np.asarray(self.profile.std)


@pytest.fixture(scope="module")
def world() -> World:
    total = N_TRAIN + N_PUBLIC + BENIGN_KEYS * BENIGN_QUERIES
    x, _ = make_classification(n_samples=total, n_features=N_FEATURES, n_informative=10, n_redundant=2, random_state=7)
    profile = TrainingProfile.from_data(x[:N_TRAIN])
    return World(x[:N_TRAIN], x[N_TRAIN : N_TRAIN + N_PUBLIC], x[N_TRAIN + N_PUBLIC :], profile, RowJudge(profile))


def first_alarm(world: World, requests: Iterable[np.ndarray], streams: tuple[str, ...] = ("key:k",)) -> Alarm | None:
    """Send each request (rows) through the repeat filter, the judge and every stream."""
    watch = StreamWatch(StreamConfig.for_rate(0.005))
    repeats = RepeatFilter(N_FEATURES)
    for rows in requests:
        batch = np.asarray(rows, dtype=np.float32).reshape(-1, N_FEATURES)
        fresh = repeats.fresh(streams[0], batch)
        atypical = world.judge.judge(batch)[fresh]
        for stream in streams:
            alarm = watch.add(stream, atypical)
            if alarm is not None:
                return alarm
    return None


def synthetic(world: World, n: int, rng: np.random.Generator) -> np.ndarray:
    """Feature-by-feature samples from the training marginals (the adaptive attack's queries)."""
    return np.stack([rng.choice(world.x_train[:, j], n) for j in range(N_FEATURES)], axis=1)


def jittered(world: World, n: int, rng: np.random.Generator) -> np.ndarray:
    return world.public[rng.integers(N_PUBLIC, size=n)] + 0.35 * world.std * rng.normal(size=(n, N_FEATURES))


def recombined(world: World, n: int, rng: np.random.Generator) -> np.ndarray:
    return np.stack([world.public[rng.integers(N_PUBLIC, size=n), j] for j in range(N_FEATURES)], axis=1)


def diluted(attack: np.ndarray, fillers: np.ndarray, fillers_per_attack: int) -> list[np.ndarray]:
    rows: list[np.ndarray] = []
    for i, row in enumerate(attack):
        rows.append(row)
        rows.extend(fillers[i * fillers_per_attack : (i + 1) * fillers_per_attack])
    return rows


@pytest.mark.parametrize(
    ("fillers", "per_attack", "within"),
    [("jittered", 4, 600), ("recombined", 4, 100), ("jittered", 9, 1_500)],
    ids=["1-in-5-jittered", "1-in-5-recombined", "1-in-10-jittered"],
)
def test_diluted_synthetic_queries_are_caught_over_time(
    world: World, fillers: str, per_attack: int, within: int
) -> None:
    # Issue #12: one synthetic query among four fillers (public rows jittered by 0.35 sd, or
    # recombined feature by feature): no alarm in 15,000 rows. Seen over 1-3 hundred now.
    for seed in range(3):
        rng = np.random.default_rng(seed)
        make = jittered if fillers == "jittered" else recombined
        rows = diluted(synthetic(world, 2_000, rng), make(world, 2_000 * per_attack, rng), per_attack)
        alarm = first_alarm(world, rows)
        assert alarm is not None, f"seed {seed}"
        assert alarm.kind == AlarmKind.OUT_OF_DISTRIBUTION
        assert alarm.queries <= within, f"seed {seed}: {alarm.message}"


def test_benign_keys_raise_no_alarm_on_any_stream(world: World) -> None:
    # Ten keys of one account on one network, 2,000 held-out queries each: the key streams,
    # and the account's and the model's with all 20,000 rows.
    watch = StreamWatch(StreamConfig.for_rate(0.005))
    for k in range(BENIGN_KEYS):
        rows = world.benign[k * BENIGN_QUERIES : (k + 1) * BENIGN_QUERIES].astype(np.float32)
        for row in rows:
            atypical = world.judge.judge(row[None, :])
            for stream in (f"key:{k}", "account:acme", "net:203.0.113.0/24", "model:m@1"):
                assert watch.add(stream, atypical) is None
    stats = watch.snapshot("account:acme")
    assert stats is not None
    assert stats.rows == BENIGN_KEYS * BENIGN_QUERIES
    assert stats.atypical < 0.01 * stats.rows
    assert stats.evidence == 0.0


def test_shifted_client_raises_no_alarm(world: World) -> None:
    # A population 0.3 sd off in every feature is unlike the training data, and not an attack:
    # about 2 % of its rows are atypical, under the tolerated 3 %.
    for k in range(3):
        rows = world.benign[k * BENIGN_QUERIES : (k + 1) * BENIGN_QUERIES] + 0.3 * world.std
        assert first_alarm(world, rows, ("key:shifted", "account:shifted")) is None


def test_mean_imputed_client_raises_no_alarm(world: World) -> None:
    mean = np.asarray(world.profile.mean)
    rng = np.random.default_rng(8)
    rows = world.benign[:BENIGN_QUERIES].copy()
    for row in rows:
        missing = rng.choice(N_FEATURES, 12, replace=False)
        row[missing] = mean[missing]
    assert first_alarm(world, rows) is None


@pytest.mark.parametrize("rate", [0.05, 0.10])
def test_retrying_client_raises_no_alarm(world: World, rate: float) -> None:
    rng = np.random.default_rng(9)
    own = iter(world.benign[:BENIGN_QUERIES])
    sent: list[np.ndarray] = []
    while len(sent) < BENIGN_QUERIES:
        sent.append(sent[rng.integers(len(sent))] if sent and rng.random() < rate else next(own))
    assert first_alarm(world, sent) is None


def test_nightly_rescore_raises_no_alarm_and_counts_once(world: World) -> None:
    customers = world.benign[:200].astype(np.float32)
    watch = StreamWatch()
    repeats = RepeatFilter(N_FEATURES)
    for _night in range(10):
        fresh = repeats.fresh("key:nightly", customers)
        assert watch.add("key:nightly", world.judge.judge(customers)[fresh]) is None
    stats = watch.snapshot("key:nightly")
    assert stats is not None
    assert stats.rows == 200


def test_window_test_catches_probing_and_alarms_once() -> None:
    watch = StreamWatch(StreamConfig(min_atypical=1_000))  # the cumulative test out of the way
    alarms = [watch.add("net:x", np.array([i % 2 == 0])) for i in range(200)]
    raised = [a for a in alarms if a is not None]
    assert len(raised) == 1
    alarm = raised[0]
    assert (alarm.kind, alarm.stream, alarm.queries) == (AlarmKind.OUT_OF_DISTRIBUTION, "net:x", 20)
    assert alarm.score == 0.5 and alarm.threshold == 0.3
    assert watch.alarmed("net:x")


def test_cumulative_test_needs_a_rate_well_above_the_tolerated_one() -> None:
    # 200 streams of 5,000 rows atypical at exactly the tolerated rate: none alarms. At twice
    # that rate, every one does within 5,000 rows: n * KL(0.06 || 0.03) reaches ln(1e9) at
    # about 1,700 rows.
    config = StreamConfig(tolerated_rate=0.03)
    rng = np.random.default_rng(10)
    at_rate = StreamWatch(config)
    assert all(at_rate.add(f"s{i}", rng.random(5_000) < 0.03) is None for i in range(200))
    twice = StreamWatch(config)
    firsts = []
    for i in range(50):
        flags = rng.random(5_000) < 0.06
        for start in range(0, 5_000, 50):
            alarm = twice.add(f"s{i}", flags[start : start + 50])
            if alarm is not None:
                firsts.append(alarm.queries)
                break
    assert len(firsts) == 50
    assert 1_000 < float(np.mean(firsts)) < 2_500
    assert min(firsts) >= 200


def test_evidence_grows_with_the_excess_count() -> None:
    watch = StreamWatch(StreamConfig(tolerated_rate=0.03, p_value=1e-300, min_atypical=1))
    watch.add("s", np.r_[np.ones(10, dtype=bool), np.zeros(90, dtype=bool)])
    stats = watch.snapshot("s")
    assert stats is not None
    # 10 of 100 at 3 %: n * KL(0.1 || 0.03) / ln 10.
    kl = 0.1 * math.log(0.1 / 0.03) + 0.9 * math.log(0.9 / 0.97)
    assert stats.evidence == pytest.approx(100 * kl / math.log(10))
    assert stats.window_share == 0.0  # the ten came first, out of the last 64


def test_window_share_counts_the_last_rows_only() -> None:
    watch = StreamWatch(StreamConfig(window=64, min_atypical=1_000, window_min_rows=1_000))
    watch.add("s", np.ones(100, dtype=bool))
    watch.add("s", np.zeros(32, dtype=bool))
    stats = watch.snapshot("s")
    assert stats is not None
    assert stats.window_share == 0.5
    for _ in range(32):
        watch.add("s", np.zeros(1, dtype=bool))
    stats = watch.snapshot("s")
    assert stats is not None
    assert stats.window_share == 0.0
    assert (stats.rows, stats.atypical) == (164, 100)


def test_least_recently_seen_stream_is_forgotten_beyond_max_streams() -> None:
    watch = StreamWatch(StreamConfig(max_streams=3))
    for stream in ("a", "b", "c"):
        watch.add(stream, np.zeros(1, dtype=bool))
    watch.add("a", np.zeros(1, dtype=bool))
    watch.add("d", np.zeros(1, dtype=bool))
    assert len(watch) == 3
    assert watch.snapshot("b") is None
    watch.forget("a")
    assert watch.snapshot("a") is None and len(watch) == 2


def test_stream_watch_refuses_bad_input() -> None:
    watch = StreamWatch()
    with pytest.raises(ArtifactError, match=r"verdicts of shape \(2, 2\), expected \(rows,\)"):
        watch.add("s", np.zeros((2, 2), dtype=bool))
    with pytest.raises(ArtifactError, match="stream id of 600 characters, at most 512"):
        watch.add("s" * 600, np.zeros(1, dtype=bool))
    assert watch.add("empty", np.zeros(0, dtype=bool)) is None


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"max_streams": 0}, "max_streams must be a positive integer"),
        ({"window": 100_000}, "window must be at most 65536"),
        ({"window_share": 0.0}, r"window_share must be in \(0, 1\]"),
        ({"tolerated_rate": 1.0}, r"tolerated_rate must be in \(0, 1\)"),
        ({"p_value": 0.5}, r"p_value must be in \(0, 0.5\)"),
        ({"min_atypical": True}, "min_atypical must be a positive integer"),
    ],
)
def test_stream_config_refuses_nonsense(change: dict[str, float], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        StreamConfig(**change)  # type: ignore[arg-type]


def test_tolerated_rate_follows_the_profiles_false_alarm_rate() -> None:
    assert StreamConfig.for_rate(0.005).tolerated_rate == 0.03
    assert StreamConfig.for_rate(0.02).tolerated_rate == 0.08
    assert StreamConfig.for_rate(0.02, window=32).window == 32


def test_repeat_filter_remembers_the_last_distinct_rows_per_stream(world: World) -> None:
    repeats = RepeatFilter(N_FEATURES, memory=100, seed=1)
    rows = world.benign[:150].astype(np.float32)
    assert repeats.fresh("a", rows[:100]).all()
    assert not repeats.fresh("a", rows[:100]).any()
    assert repeats.fresh("b", rows[:1]).tolist() == [True]  # streams are separate
    assert repeats.fresh("a", rows[100:150]).all()  # pushes out rows 0-49
    assert repeats.fresh("a", rows[:50]).all()
    assert not repeats.fresh("a", rows[100:150]).any()  # 50-99 were pushed out in turn
    batch = np.vstack([rows[140:145], rows[140:145]])
    assert repeats.fresh("c", batch).tolist() == [True] * 5 + [False] * 5
    assert repeats.state_bytes() == 3 * 100 * (4 + 4)  # each stream: its digests and two filters of 2 bytes a digest


def test_repeat_filter_tells_apart_rows_that_differ_in_one_bit(world: World) -> None:
    repeats = RepeatFilter(N_FEATURES, seed=2)
    rows = np.repeat(world.benign[:1].astype(np.float32), 21, axis=0)
    for j in range(N_FEATURES):
        rows[j + 1, j] = np.nextafter(rows[j + 1, j], np.float32(np.inf))
    assert repeats.fresh("k", rows).all()
    with pytest.raises(ArtifactError, match=r"rows of shape \(1, 3\), expected \(n, 20\)"):
        repeats.fresh("k", np.zeros((1, 3)))


@pytest.mark.parametrize("memory", [1, 7, 100, 4096])
def test_digest_ring_answers_exactly_as_a_plain_memory_of_the_last_distinct_digests(memory: int) -> None:
    # The Bloom filters in front of the ring may only save work: whatever they say, the answer
    # must be the one a plain list of the last `memory` distinct digests gives. The digests are
    # drawn from a small pool so that repeats, evictions and filter rotations all happen, and in
    # batches as well as one at a time.
    rng = np.random.default_rng(memory)
    pool = rng.integers(0, 2**32, size=3 * memory + 5, dtype=np.uint32)
    ring, plain = DigestRing(memory), collections.deque(maxlen=memory)
    for _ in range(4 * memory + 300):  # past several filter rotations
        batch = pool[rng.integers(0, pool.size, size=int(rng.choice([1, 1, 1, 3])))]
        known, expected = set(plain), []  # a batch is judged against what was known before it
        for digest in batch.tolist():
            expected.append(digest not in known)
            known.add(digest)
        plain.extend(d for d, fresh in zip(batch.tolist(), expected, strict=True) if fresh)
        assert ring.add(batch).tolist() == expected
