"""SERVE: is this API key stealing the model or probing its training records?

Each API key's queries are watched as a stream, with a fixed cost per query and a fixed amount
of memory per key, by three tests:

- `extraction.prada` (Juuti et al. 2019, "PRADA"): each query's minimum L2 distance, in units of
  the training data's per-feature standard deviation, to a bounded set of the key's earlier
  queries (the growing set: a query joins it when it is farther than mean - std of the recent
  distances). Benign queries give roughly normal distances; synthetic samples built by
  perturbing earlier queries (Jacobian augmentation, probes around a record) give a spike of
  tiny or equal distances. A Shapiro-Wilk W below `prada_delta` raises the alarm. Queries the
  next test counts as atypical are left out: one far-out benign record is one huge distance.
- `extraction.out-of-distribution`: queries that fall where training records do not, as the
  `RowJudge` sees them (range, mean squared z-score, and with a profile of schema /2 the joint
  distribution; mean-imputed features left out). Two tests of their share, as in
  `StreamWatch`: among the key's recent queries (uniform or box probing is almost all such
  queries), and over everything the key has sent, against a tolerated rate (synthetic queries
  diluted among benign-looking ones).
- `membership.near-duplicate`: the share of a key's recent queries that lie within
  `dup_radius` (root-mean-square, in standard deviations) of one of its earlier queries, the
  pattern of membership inference, which queries many tiny perturbations of the same record.
  The distance comes free with PRADA's; quantising queries to grid cells would miss most probes
  (with 0.25-std cells, 20 features and noise of 0.05 std, 3 % land in the record's own cell).

Exact repeats of a key's earlier queries (the float32 bytes of one of its last `repeat_memory`
distinct rows) are counted once: a client that retries 5 % of its calls, or re-scores the same
200 records every night, gives PRADA no spike of zero distances and the near-duplicate test no
run of duplicates. They are tallied in `KeyStatistics.repeats`.

An alarm of a kind fires once per key and then stays raised; acting on it (throttling,
suspension) is the gateway's job, and so is remembering that it did.

Queries drawn from the real data distribution (Knockoff-style extraction) pass all three tests
by construction: only a query quota bounds them.

Example:
    >>> profile = TrainingProfile.from_data(x_train)            # doctest: +SKIP
    >>> monitor = QueryMonitor(profile, DetectorConfig())       # doctest: +SKIP
    >>> for alarm in monitor.observe("key-41", batch):          # doctest: +SKIP
    ...     suspend(alarm.key_id, reason=alarm.message)
"""

from __future__ import annotations

import logging
import math
import sys
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from bastion.errors import ArtifactError, ConfigError
from bastion.serve.detect.alarms import Alarm, AlarmKind
from bastion.serve.detect.profile import TYPICAL_SCORE_LEVELS, TrainingProfile, _usable_std
from bastion.serve.detect.rows import RowJudge
from bastion.serve.detect.statistics import binomial_tail_bound, chi_square_quantile, shapiro_w
from bastion.serve.detect.streams import DigestRing, RowDigest

logger = logging.getLogger(__name__)


# Fixed cost of a key's state beyond its arrays: the Python objects, array headers, counters
# and the set of raised alarm kinds (at most three short strings).
_STATE_OVERHEAD_BYTES = 4096


@dataclass(frozen=True, slots=True)
class KeyStatistics:
    """One key's detector statistics at a moment, for metrics and dashboards.

    Attributes:
        queries: queries seen from the key, repeats included.
        prada_w: the latest Shapiro-Wilk W (NaN before the first test; once that alarm fired,
            the test stops and this keeps the value that raised it).
        atypical_share: share of the recent window outside the training distribution.
        duplicate_share: share of the recent window that were near duplicates.
        alarmed: the alarm kinds raised.
        repeats: how many of them repeated an earlier query exactly (left out of every test).
        atypical_total: atypical queries over everything the key has sent.
    """

    queries: int
    prada_w: float
    atypical_share: float
    duplicate_share: float
    alarmed: frozenset[str]
    repeats: int = 0
    atypical_total: int = 0


@dataclass(frozen=True, slots=True)
class DetectorConfig:
    """Thresholds and bounds of a `QueryMonitor`.

    The defaults are tuned offline by `benchmarks/attack_sim_offline.py` (20-feature logistic
    regression, label-only output; seeds 1, 3 and 7): uniform-box, Jacobian-augmentation and
    membership-probing attacks raise an alarm within 75 queries, feature-by-feature sampling
    with boundary search within 20, while ten benign keys of 2,000 held-out queries each, and
    clients that retry, re-score, impute or are shifted by 0.3 sd, raise none.

    Memory per key is `state_bytes_bound(n_features)`:
    `prada_keep * (n_features + 1) * 4 + prada_window * 8 + ood_window + dup_window
    + repeat_memory * 8 + 4096` bytes, 60,608 bytes for 20 features with the defaults, whatever
    the number of queries; so about 124 MB for `max_keys` = 2048 keys. A quarter of that is the
    repeat memory's filters, allocated only where the monitor decides repeats itself: fed the
    gateway's verdicts, a key takes 44,224 bytes.

    Attributes:
        max_keys: keys tracked at once; the least recently seen key is forgotten beyond it.
        prada_keep: size of the growing set of earlier queries (float32 ring; PRADA's set is
            unbounded, 256 keeps a key's state small while holding far more points than the
            minimum-query count the test needs).
        prada_window: number of most recent minimum distances the Shapiro-Wilk test sees.
        prada_warmup: distances from a key's first queries that are not recorded: while the
            growing set holds a handful of points every distance is large, and that trend alone
            pulled benign W down to 0.88 at the first tests in the benchmark (0.94 without it).
        prada_min_queries: distances needed before the first test (W is unstable below ~40), so
            the first test comes at query `1 + prada_warmup + prada_min_queries`.
        prada_every: run the test every this many queries (it costs ~55 us; a query
            costs ~30 us without it, 20 features).
        prada_delta: alarm when W falls below this: midway between the lowest W of 60 benign
            held-out streams of 2,000 queries (0.905, over six seeds) and the highest W that
            Jacobian augmentation (steps 0.1 to 1.0) stayed above in its first 100 distances (0.66).
        ood_window: recent queries over which the atypical share is taken.
        ood_min_queries: queries before the out-of-distribution window test applies.
        ood_share: alarm when at least this share of the window is atypical; held-out records
            are atypical at the profile's false-alarm rate (0.5 %).
        ood_tolerated_rate: the cumulative test's tolerated share of atypical queries (see
            `StreamConfig.tolerated_rate`).
        ood_p_value: the cumulative test alarms when the key's count of atypical queries is
            less likely than this at the tolerated rate.
        ood_min_atypical: atypical queries before the cumulative test applies.
        dup_radius: a query within this root-mean-square distance, in training standard
            deviations per feature, of an earlier one is a near duplicate. Held-out records
            are about 0.8 apart; membership probes around one record are 0.01-0.1 apart.
        dup_window: recent queries over which the near-duplicate share is taken.
        dup_min_queries: queries before the near-duplicate test applies.
        dup_share: alarm when at least this share of the window is near duplicates.
        repeat_memory: distinct queries per key remembered to recognise exact repeats.
    """

    max_keys: int = 2048
    prada_keep: int = 256
    prada_window: int = 256
    prada_warmup: int = 8
    prada_min_queries: int = 40
    prada_every: int = 8
    prada_delta: float = 0.80
    ood_window: int = 64
    ood_min_queries: int = 20
    ood_share: float = 0.3
    ood_tolerated_rate: float = 0.03
    ood_p_value: float = 1e-9
    ood_min_atypical: int = 5
    dup_radius: float = 0.1
    dup_window: int = 128
    dup_min_queries: int = 32
    dup_share: float = 0.5
    repeat_memory: int = 4096

    def __post_init__(self) -> None:
        counts = {
            "max_keys": self.max_keys,
            "prada_keep": self.prada_keep,
            "prada_every": self.prada_every,
            "ood_window": self.ood_window,
            "ood_min_queries": self.ood_min_queries,
            "dup_window": self.dup_window,
            "dup_min_queries": self.dup_min_queries,
            "ood_min_atypical": self.ood_min_atypical,
            "repeat_memory": self.repeat_memory,
        }
        for name, value in counts.items():
            if value < 1:
                raise ConfigError(f"detector {name} must be at least 1, got {value}", hint="Use a positive count.")
        if self.prada_warmup < 0:
            raise ConfigError(
                f"detector prada_warmup must be >= 0, got {self.prada_warmup}", hint="Use 0 to record every distance."
            )
        if not 8 <= self.prada_window <= 5000:
            raise ConfigError(
                f"detector prada_window must be within 8..5000, got {self.prada_window}",
                hint="Shapiro-Wilk needs at least a few values and is defined up to 5000.",
            )
        if not 3 <= self.prada_min_queries <= self.prada_window:
            raise ConfigError(
                f"detector prada_min_queries must be within 3..prada_window, got {self.prada_min_queries}",
                hint="Shapiro-Wilk needs at least 3 distances, and sees at most prada_window of them.",
            )
        for name, share in (
            ("prada_delta", self.prada_delta),
            ("ood_share", self.ood_share),
            ("dup_share", self.dup_share),
        ):
            if not 0.0 < share <= 1.0:
                raise ConfigError(f"detector {name} must be in (0, 1], got {share}", hint="Use a fraction.")
        if not 0.0 < self.ood_tolerated_rate < 1.0:
            raise ConfigError(
                f"detector ood_tolerated_rate must be in (0, 1), got {self.ood_tolerated_rate}", hint="Use a fraction."
            )
        if not 0.0 < self.ood_p_value < 0.5:
            raise ConfigError(
                f"detector ood_p_value must be in (0, 0.5), got {self.ood_p_value}", hint="Use e.g. 1e-9."
            )
        if not self.dup_radius >= 0.0:
            raise ConfigError(f"detector dup_radius must be >= 0, got {self.dup_radius}", hint="Use 0 to disable it.")

    def state_bytes_bound(self, n_features: int) -> int:
        """The most memory one key's state takes, in bytes, for a model with `n_features`."""
        arrays = self.prada_keep * (n_features + 1) * 4 + self.prada_window * 8 + self.ood_window + self.dup_window
        return arrays + self.repeat_memory * 8 + _STATE_OVERHEAD_BYTES  # the ring and its two filters


class _KeyState:
    """One key's bounded statistics: fixed-size rings, allocated once."""

    __slots__ = (
        "alarmed",
        "at",
        "dist",
        "dist_seen",
        "dup_count",
        "dup_flags",
        "fresh",
        "kept",
        "kept_next",
        "kept_size",
        "kept_sq",
        "last_w",
        "ood_count",
        "ood_flags",
        "ood_total",
        "prada_threshold",
        "repeats",
        "seen",
        "sent",
    )

    def __init__(self, config: DetectorConfig, n_features: int) -> None:
        self.sent = 0  # queries sent, repeats included
        self.at = 0  # the query being tested, counted among those sent
        self.fresh = 0  # queries the tests have seen: repeats left out
        # Growing set: float32 halves the largest array; distances need ~1e-3 precision only.
        self.kept = np.zeros((config.prada_keep, n_features), dtype=np.float32)
        self.kept_sq = np.zeros(config.prada_keep, dtype=np.float32)
        self.kept_size = 0
        self.kept_next = 0
        self.dist = np.zeros(config.prada_window, dtype=np.float64)
        self.dist_seen = 0
        self.prada_threshold = 0.0
        self.last_w = math.nan
        self.ood_flags = np.zeros(config.ood_window, dtype=np.bool_)
        self.ood_count = 0
        self.ood_total = 0
        self.seen = DigestRing(config.repeat_memory)
        self.repeats = 0
        self.dup_flags = np.zeros(config.dup_window, dtype=np.bool_)
        self.dup_count = 0
        self.alarmed: set[str] = set()

    def size_bytes(self) -> int:
        arrays = (self.kept, self.kept_sq, self.dist, self.ood_flags, self.dup_flags, self.seen.digests)
        return (
            sys.getsizeof(self)
            + sum(sys.getsizeof(a) for a in arrays)
            + self.seen.nbytes
            - int(self.seen.digests.nbytes)  # counted with its array above: only the filters
            + sys.getsizeof(self.alarmed)
            + sum(sys.getsizeof(kind) for kind in self.alarmed)
        )


_FP32_SAFE_SQUARE = float(np.finfo(np.float32).max) / 64  # room for the sums of the distance step

# One request for `QueryMonitor.observe_many`: key id, rows, and (when known) fresh and atypical verdicts.
Observation = tuple[str, npt.ArrayLike, npt.ArrayLike | None, npt.ArrayLike | None]


@dataclass(frozen=True, slots=True)
class _Request:
    key_id: str
    x: npt.NDArray[np.float64]
    fresh: npt.NDArray[np.bool_] | None
    given: npt.NDArray[np.bool_] | None


@dataclass(frozen=True, slots=True)
class _RowStats:
    atypical: list[bool]
    finite: list[bool]
    unusual: list[bool]
    z32: npt.NDArray[np.float32]


class QueryMonitor:
    """Per-key streaming detectors of model extraction and membership probing.

    Not thread-safe: one monitor per worker, or a lock around `observe`.

    Args:
        profile: the served model's training profile.
        config: thresholds and bounds; `DetectorConfig()` by default.
        judge: the row judge to take atypical verdicts from (one built with the serving
            spec's ranges, say); `RowJudge(profile)` by default.

    Example:
        >>> monitor = QueryMonitor(TrainingProfile.from_data(x_train))   # doctest: +SKIP
        >>> monitor.observe("key-41", np.array([[0.1, 2.3, ...]]))        # doctest: +SKIP
        []
    """

    def __init__(
        self, profile: TrainingProfile, config: DetectorConfig | None = None, *, judge: RowJudge | None = None
    ) -> None:
        self.profile = profile
        self.config = config if config is not None else DetectorConfig()
        self.judge = judge if judge is not None else RowJudge(profile)
        if self.judge.n_features != profile.n_features:
            raise ConfigError(
                f"query monitor: judge for {self.judge.n_features} features, profile for {profile.n_features}"
            )
        self._n = profile.n_features
        self._mean = np.asarray(profile.mean, dtype=np.float64)
        self._inv_std = 1.0 / _usable_std(np.asarray(profile.std, dtype=np.float64))
        self._digest = RowDigest(self._n)
        self._log_p = -math.log(self.config.ood_p_value)
        self._far_low, self._far_high = _prada_band(profile)
        # Compared with squared distances, so the per-query test needs no square root.
        self._dup_sq = (self.config.dup_radius**2) * self._n
        self._keys: OrderedDict[str, _KeyState] = OrderedDict()

    def observe(
        self,
        key_id: str,
        features: npt.ArrayLike,
        *,
        fresh: npt.ArrayLike | None = None,
        atypical: npt.ArrayLike | None = None,
    ) -> list[Alarm]:
        """Account for a batch of one key's queries.

        Args:
            key_id: the API key's id.
            features: the queries, shape (batch, n_features).
            fresh: which queries are not repeats, when the caller already knows (a
                `RepeatFilter` shared with the stream tests); by default the monitor's own
                memory of the key's queries decides.
            atypical: (batch,) the row judge's verdicts, when the caller judged the rows already
                (the gateway's before-answer checks, with the same profile); by default the
                monitor's own judge decides. Read for the fresh rows only.

        Returns:
            The alarms this batch raised: each kind at most once per key, ever.

        Raises:
            ArtifactError: `features` is not of shape (batch, n_features), or `fresh` or
                `atypical` not (batch,).
        """
        return self.observe_many([(key_id, features, fresh, atypical)])[0]

    def observe_many(self, batches: Sequence[Observation]) -> list[list[Alarm]]:
        """`observe` for several requests in order (keys may repeat): the alarms of each.

        What depends on the rows alone (their distance from the mean, the judge's verdicts when
        not given) is computed for all of them at once: the observer process receives the
        requests of a few milliseconds together, and each numpy call's fixed cost dwarfs its
        cost per row. Each key's state is then updated row by row, in order, as `observe` does.

        Raises:
            ArtifactError: as `observe`, for the first malformed request (nothing is counted then).
        """
        checked = [self._checked(*batch) for batch in batches]
        if not checked:
            return []
        rows = checked[0].x if len(checked) == 1 else np.concatenate([c.x for c in checked])
        stats = self._row_stats(rows, checked)
        alarms: list[list[Alarm]] = []
        offset = 0
        for request in checked:
            count = request.x.shape[0]
            alarms.append(self._account(request, stats, offset, count))
            offset += count
        return alarms

    def _checked(
        self, key_id: str, features: npt.ArrayLike, fresh: npt.ArrayLike | None, atypical: npt.ArrayLike | None
    ) -> _Request:
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self._n:
            raise ArtifactError(
                f"key {key_id}: queries of shape {x.shape}, expected (batch, {self._n})",
                hint="Validate request bodies against the model's input schema before monitoring them.",
            )
        given = None if atypical is None else np.asarray(atypical, dtype=np.bool_)
        if given is not None and given.shape != (x.shape[0],):
            raise ArtifactError(f"key {key_id}: atypical of shape {given.shape}, expected ({x.shape[0]},)")
        new = None if fresh is None else np.asarray(fresh, dtype=np.bool_)
        if new is not None and new.shape != (x.shape[0],):
            raise ArtifactError(f"key {key_id}: fresh of shape {new.shape}, expected ({x.shape[0]},)")
        return _Request(key_id, x, new, given)

    def _row_stats(self, x: npt.NDArray[np.float64], requests: list[_Request]) -> _RowStats:
        """Per row: atypical, finite enough for the distance step, unusual for PRADA, and z in FP32."""
        given = [r.given for r in requests]
        if len(given) == 1 and given[0] is not None:
            flags = given[0]
        elif all(g is not None for g in given):
            flags = np.concatenate([g for g in given if g is not None])
        else:  # judged here where the caller did not: a pure function of each row
            flags = self.judge.judge(x)
            offset = 0
            for request in requests:
                count = request.x.shape[0]
                if request.given is not None:
                    flags[offset : offset + count] = request.given
                offset += count
        z = (x - self._mean) * self._inv_std
        with np.errstate(invalid="ignore", over="ignore"):
            score = np.einsum("ij,ij->i", z, z) / self._n
        # A query finite in FP32 but 1e19 from the mean has a squared distance past FP32's range:
        # the distance step (in FP32) would overflow, so such a row is treated as non-finite.
        finite = np.isfinite(score) & (score * self._n < _FP32_SAFE_SQUARE)
        # PRADA also leaves out rows far from (or right at) the mean in its own distance space:
        # typical of a cluster for the joint test, they still give one huge nearest distance.
        # Left in, that pulled a benign key's W to 0.84 (seed 3; 0.95 without).
        unusual = flags | (score < self._far_low) | (score > self._far_high)
        return _RowStats(flags.tolist(), finite.tolist(), unusual.tolist(), z.astype(np.float32))

    def _account(self, request: _Request, stats: _RowStats, offset: int, count: int) -> list[Alarm]:
        """Count one request's fresh rows for its key, in order; the alarms raised."""
        state = self._state_for(request.key_id)
        new = state.seen.add(self._digest.of(request.x)) if request.fresh is None else request.fresh
        fresh_rows = np.flatnonzero(new).tolist()
        state.repeats += count - len(fresh_rows)
        sent_before = state.sent
        state.sent += count
        alarms: list[Alarm] = []
        for row in fresh_rows:
            # Where the row was among all the key sent, repeats included: an alarm names it.
            state.fresh += 1
            state.at = sent_before + row + 1
            at = offset + row
            self._count_atypical(state, stats.atypical[at])
            is_duplicate = stats.finite[at] and self._add_distance(state, stats.z32[at], stats.unusual[at])
            self._count_duplicate(state, is_duplicate)
            self._check(request.key_id, state, alarms)
        return alarms

    def alarmed(self, key_id: str) -> set[str]:
        """The alarm kinds raised for `key_id` (empty for a key never seen or forgotten)."""
        state = self._keys.get(key_id)
        return set(state.alarmed) if state is not None else set()

    def forget(self, key_id: str) -> None:
        """Drop a key's state and alarms (a revoked or reset key); unknown keys are ignored."""
        self._keys.pop(key_id, None)

    def snapshot(self, key_id: str) -> KeyStatistics | None:
        """The current value of each detector's statistic for `key_id` (None if not tracked)."""
        state = self._keys.get(key_id)
        if state is None:
            return None
        cfg = self.config
        seen = max(state.fresh, 1)
        return KeyStatistics(
            queries=state.sent,
            prada_w=state.last_w,
            atypical_share=state.ood_count / min(seen, cfg.ood_window),
            duplicate_share=state.dup_count / min(seen, cfg.dup_window),
            alarmed=frozenset(state.alarmed),
            repeats=state.repeats,
            atypical_total=state.ood_total,
        )

    def state_bytes(self, key_id: str) -> int:
        """Memory held for `key_id`, in bytes; at most `config.state_bytes_bound(n_features)`."""
        state = self._keys.get(key_id)
        return state.size_bytes() if state is not None else 0

    def __len__(self) -> int:
        return len(self._keys)

    def _state_for(self, key_id: str) -> _KeyState:
        state = self._keys.get(key_id)
        if state is not None:
            self._keys.move_to_end(key_id)
            return state
        state = _KeyState(self.config, self._n)
        self._keys[key_id] = state
        if len(self._keys) > self.config.max_keys:
            evicted, _ = self._keys.popitem(last=False)
            logger.debug("query monitor: forgot idle key %s (max_keys=%d)", evicted, self.config.max_keys)
        return state

    def _count_atypical(self, state: _KeyState, flag: bool) -> None:
        slot = (state.fresh - 1) % self.config.ood_window
        state.ood_count += int(flag) - int(state.ood_flags[slot])
        state.ood_flags[slot] = flag
        state.ood_total += flag

    def _count_duplicate(self, state: _KeyState, flag: bool) -> None:
        slot = (state.fresh - 1) % self.config.dup_window
        state.dup_count += int(flag) - int(state.dup_flags[slot])
        state.dup_flags[slot] = flag

    def _add_distance(self, state: _KeyState, z: npt.NDArray[np.float32], atypical: bool) -> bool:
        """PRADA's step: record the minimum distance, grow the set; True for a near duplicate."""
        sq = float(z @ z)
        n = state.kept_size
        if n == 0:
            self._keep(state, z, sq)
            return False
        d2 = state.kept_sq[:n] - 2.0 * (state.kept[:n] @ z)
        nearest_sq = max(float(d2.min()) + sq, 0.0)
        nearest = math.sqrt(nearest_sq)
        # An atypical query is the out-of-distribution test's to count. Left in, one far-out
        # benign record gives one huge distance, and at 40 samples that alone pulled W to 0.84.
        if not atypical and state.fresh > 1 + self.config.prada_warmup:
            window = self.config.prada_window
            state.dist[state.dist_seen % window] = nearest
            state.dist_seen += 1
            if state.dist_seen % self.config.prada_every == 0 or state.dist_seen < self.config.prada_min_queries:
                recent = state.dist[: min(state.dist_seen, window)]
                state.prada_threshold = float(recent.mean() - recent.std())
        if nearest > state.prada_threshold:
            self._keep(state, z, sq)
        return nearest_sq <= self._dup_sq

    def _keep(self, state: _KeyState, z: npt.NDArray[np.float32], sq: float) -> None:
        slot = state.kept_next
        state.kept[slot] = z
        state.kept_sq[slot] = sq
        state.kept_next = (slot + 1) % self.config.prada_keep
        state.kept_size = min(state.kept_size + 1, self.config.prada_keep)

    def _check(self, key_id: str, state: _KeyState, alarms: list[Alarm]) -> None:
        cfg = self.config
        if AlarmKind.OUT_OF_DISTRIBUTION not in state.alarmed:
            self._check_out_of_distribution(key_id, state, alarms)
        if AlarmKind.NEAR_DUPLICATE not in state.alarmed and state.fresh >= cfg.dup_min_queries:
            share = state.dup_count / min(state.fresh, cfg.dup_window)
            if share >= cfg.dup_share:
                self._raise(
                    alarms,
                    state,
                    key_id,
                    AlarmKind.NEAR_DUPLICATE,
                    share,
                    cfg.dup_share,
                    f"{share:.0%} of its recent queries are near duplicates of earlier ones, as membership-"
                    "inference probes around a record and small-step extraction augmentation are",
                )
        if (
            AlarmKind.PRADA not in state.alarmed
            and state.dist_seen >= cfg.prada_min_queries
            and state.dist_seen % cfg.prada_every == 0
        ):
            w = shapiro_w(state.dist[: min(state.dist_seen, cfg.prada_window)])
            state.last_w = w
            if w < cfg.prada_delta:
                self._raise(
                    alarms,
                    state,
                    key_id,
                    AlarmKind.PRADA,
                    w,
                    cfg.prada_delta,
                    f"the distances between its queries are far from normal (Shapiro-Wilk W={w:.3f}), as "
                    "synthetic queries built by perturbing earlier ones for model extraction are",
                )

    def _check_out_of_distribution(self, key_id: str, state: _KeyState, alarms: list[Alarm]) -> None:
        cfg = self.config
        if state.fresh >= cfg.ood_min_queries:
            share = state.ood_count / min(state.fresh, cfg.ood_window)
            if share >= cfg.ood_share:
                self._raise(
                    alarms,
                    state,
                    key_id,
                    AlarmKind.OUT_OF_DISTRIBUTION,
                    share,
                    cfg.ood_share,
                    f"{share:.0%} of its recent queries lie outside the training data's range or joint "
                    "distribution, as uniform or box probing for model extraction does",
                )
                return
        if state.ood_total >= cfg.ood_min_atypical and state.ood_total > cfg.ood_tolerated_rate * state.fresh:
            bound = binomial_tail_bound(state.ood_total, state.fresh, cfg.ood_tolerated_rate)
            if bound >= self._log_p:
                self._raise(
                    alarms,
                    state,
                    key_id,
                    AlarmKind.OUT_OF_DISTRIBUTION,
                    bound / math.log(10),
                    self._log_p / math.log(10),
                    f"{state.ood_total} of its {state.fresh} distinct queries ({state.ood_total / state.fresh:.1%}) lie outside the "
                    f"training data's range or joint distribution, against {cfg.ood_tolerated_rate:.1%} "
                    "tolerated, as synthetic queries mixed with ordinary ones for model extraction do",
                )

    def _raise(
        self,
        alarms: list[Alarm],
        state: _KeyState,
        key_id: str,
        kind: AlarmKind,
        score: float,
        threshold: float,
        why: str,
    ) -> None:
        state.alarmed.add(kind.value)
        message = f"key {key_id} after {state.at} queries: {why}"
        alarms.append(Alarm(kind.value, key_id, state.at, score, threshold, message))
        logger.info("query monitor: %s", message)


def _prada_band(profile: TrainingProfile) -> tuple[float, float]:
    """The central 99 % of the training rows' mean squared z-score: PRADA's distances use only
    rows inside it. A profile of schema /1 stores exactly that band; /2 stores a wider one
    (at rate / 10), brought back to 99 % by the chi-square quantile ratio."""
    (low, high), (p_low, p_high) = profile.typical_score, profile.typical_score_levels
    (q_low, q_high), d = TYPICAL_SCORE_LEVELS, profile.n_features
    if (p_low, p_high) == (q_low, q_high):
        return low, high
    # Few features: the approximation's far lower tail is clamped at 0; keep the stored low end.
    below = chi_square_quantile(p_low, d)
    low_ratio = chi_square_quantile(q_low, d) / below if below > 0.0 else 1.0
    return low * low_ratio, high * chi_square_quantile(q_high, d) / chi_square_quantile(p_high, d)
