"""SERVE: is this row like the training data? Judged on the request itself, before answering.

`RowJudge.judge` calls a row atypical when it leaves the training range (or the declared
serving range), when its mean squared z-score leaves the typical band, or when its distance to
the nearest component of the training data's mixture exceeds the profile's calibrated
threshold (see `profile` and `distances`). On held-out rows of the training population, a
share `profile.false_alarm_rate` are atypical; rows sampled feature by feature from the
published ranges or marginals mostly are.

Mean-imputed rows. A feature whose value is exactly the profile's mean, compared in float32
(what the model receives), is taken as missing: the row is judged on the features it carries,
on their marginal distribution (the sub-covariance of the carried set, thresholds calibrated
for that many carried features). A client that fills 12 of 20 fields with the mean is judged on
its 8 real values, not called atypical for sitting at the centre on the other 12.

What this gives an attacker, and what it does not:

- Only an exact float32 match counts: a value near the mean is a value. Nothing is gained by
  rounding towards it.
- Leaving a feature out removes only the dependences that feature takes part in: the carried
  features keep all of theirs. Rows sampled feature by feature are 72 % atypical; with one
  random feature set to the mean, 62 %; with four, 41 % (`benchmarks/attack_sim_offline.py`,
  seed 7), against 0.4 % of benign rows with the same imputation: the stream tests see them.
- A row must carry at least `min_carried` features (default a third of them); fewer, and it
  is atypical: there is too little left to judge, and no client fills most of a record with
  the mean.
- What is left: an attacker who fills 12 of 20 features with the mean and samples the other 8
  independently is judged on 8 features with few dependences among them: 6 % of its rows are
  atypical. The cumulative stream test (tolerating 3 %) catches that after about 1,500 rows,
  long after its copy of a linear model agrees at 95 % (90 queries), since each feature still
  varies in 40 % of its rows. Against that attacker the defence is the row budget set from the
  model's extraction cost, not this judge.

Cost. Rows without imputed features are judged together in one matrix product (~10 numpy
calls whatever the batch size). A set of carried features is compiled once (a Cholesky factor
per component) and kept in a bounded LRU of `mask_cache` entries.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from bastion.errors import ArtifactError, ConfigError
from bastion.serve.detect.distances import CarriedView
from bastion.serve.detect.profile import TrainingProfile

BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class RowFlags:
    """What the before-answer checks found for each row of one request, for the detectors after it.

    Attributes:
        fresh: (rows,) True for a row the key had not sent before.
        atypical: (rows,) True for a fresh row the judge calls atypical (False for repeats).
    """

    fresh: BoolArray
    atypical: BoolArray
# Rows judged per step: bounds the temporary arrays whatever the caller passes.
MAX_ROWS_PER_STEP = 4096
DEFAULT_MASK_CACHE = 256


class RowJudge:
    """Judges rows against a training profile; vectorised, and stateless but for a cache.

    Thread-safe: the cache of compiled carried sets is behind a lock.

    Args:
        profile: the served model's training profile (schema /1: range and marginal tests
            only; /2: the joint test too).
        spec_min, spec_max: the declared serving range per feature (serving.yaml); a row
            outside it is atypical as well.
        min_carried: rows carrying fewer features are atypical (default: a third of them,
            rounded up).
        mask_cache: distinct sets of carried features kept compiled.

    Raises:
        ConfigError: `min_carried` or `mask_cache` out of range, or spec bounds of the wrong length.

    Example:
        >>> judge = RowJudge(TrainingProfile.from_dict(spec.profile))   # doctest: +SKIP
        >>> judge.judge(np.asarray(rows, dtype=np.float32))              # doctest: +SKIP
        array([False,  True])
    """

    def __init__(
        self,
        profile: TrainingProfile,
        spec_min: Sequence[float] | None = None,
        spec_max: Sequence[float] | None = None,
        *,
        min_carried: int | None = None,
        mask_cache: int = DEFAULT_MASK_CACHE,
    ) -> None:
        d = profile.n_features
        for name, bound in (("spec_min", spec_min), ("spec_max", spec_max)):
            if bound is not None and len(bound) != d:
                raise ConfigError(f"row judge: {name} has {len(bound)} values for {d} features")
        self.min_carried = math.ceil(d / 3) if min_carried is None else min_carried
        if not 1 <= self.min_carried <= d:
            raise ConfigError(f"row judge: min_carried must be within 1..{d}, got {self.min_carried}")
        if mask_cache < 1:
            raise ConfigError(f"row judge: mask_cache must be at least 1, got {mask_cache}")
        self.profile = profile
        self.n_features = d
        self._geometry = profile.geometry(spec_min, spec_max)
        self._full = self._geometry.view(None)
        # What a missing feature is sent as: the mean, in float32. A constant training feature
        # always sits at its mean, a value, never a missing one: NaN equals nothing.
        self._missing = np.where(
            np.asarray(profile.std) > 0.0, np.asarray(profile.mean, dtype=np.float32), np.float32(np.nan)
        )
        self._cache: OrderedDict[bytes, CarriedView | None] = OrderedDict()
        self._cache_size = mask_cache
        self._lock = threading.Lock()

    def judge(self, rows: npt.ArrayLike) -> BoolArray:
        """Which rows are atypical.

        Args:
            rows: shape (n, n_features); float32 is what the model sees and what is compared
                with the mean, other dtypes are converted to it first.

        Returns:
            (n,) booleans, True for an atypical row (non-finite rows included).

        Raises:
            ArtifactError: `rows` is not of shape (n, n_features).
        """
        x = np.asarray(rows)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ArtifactError(
                f"row judge: rows of shape {x.shape}, expected (n, {self.n_features})",
                hint="Validate request bodies against the model's input schema before judging them.",
            )
        if x.shape[0] > MAX_ROWS_PER_STEP:
            return np.concatenate(
                [self.judge(x[start : start + MAX_ROWS_PER_STEP]) for start in range(0, x.shape[0], MAX_ROWS_PER_STEP)]
            )
        if x.dtype != np.float32:
            x = x.astype(np.float32)
        imputed = x == self._missing
        if not np.count_nonzero(imputed):
            if x.shape[0] == 1:
                return np.array([not self._full.is_typical_row(x[0])])
            if np.isfinite(x).all():
                typical = self._full.typical(x)
                return ~typical
        elif x.shape[0] == 1:
            view = self._view_for(imputed[0].tobytes(), imputed[0])
            # is_typical_row refuses non-finite values itself; a thinly carried row has no view.
            return np.array([view is None or view.index is None or not view.is_typical_row(x[0, view.index])])
        return self._judge_mixed(x, imputed)

    def _judge_mixed(self, x: npt.NDArray[np.float32], imputed: BoolArray) -> BoolArray:
        atypical = np.ones(x.shape[0], dtype=np.bool_)  # non-finite and thinly carried rows stay atypical
        finite = np.isfinite(x).all(axis=1)
        partial = imputed.any(axis=1)
        plain = finite & ~partial
        if plain.any():
            atypical[plain] = ~self._full.typical(x[plain])
        groups: dict[bytes, list[int]] = {}
        for row in np.flatnonzero(finite & partial).tolist():
            groups.setdefault(imputed[row].tobytes(), []).append(row)
        for key, members in groups.items():
            view = self._view_for(key, imputed[members[0]])
            if view is not None and view.index is not None:
                atypical[members] = ~view.typical(x[np.ix_(np.asarray(members), view.index)])
        return atypical

    def _view_for(self, key: bytes, imputed: BoolArray) -> CarriedView | None:
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        carried = np.flatnonzero(~imputed)
        view = self._geometry.view(carried) if carried.shape[0] >= self.min_carried else None
        with self._lock:
            self._cache[key] = view
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return view

    def cached_views(self) -> int:
        """How many sets of carried features are compiled (at most `mask_cache`)."""
        return len(self._cache)
