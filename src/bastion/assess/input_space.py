"""What an outside attacker knows about a model's inputs, and the rows it can make from it.

A served model publishes its `serving.yaml`: each feature's allowed range, its element type,
the allowed values of categorical features and, when the owner ships one, the training
profile's per-feature quantiles (the detectors compare queries with it). An attacker with no
data of its own samples rows from exactly that: uniformly over the ranges, or feature by
feature from the marginals (inverse CDF through the published quantiles). Every row is then
made acceptable to the gateway: clipped to the ranges, rounded for integer and boolean
inputs, snapped to a categorical feature's nearest allowed value.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bastion.errors import ArtifactError, ConfigError
from bastion.serve.spec import ServingSpec

FloatArray = NDArray[np.float64]

_INTEGER_TYPES = frozenset({"INT32", "INT64", "BOOL"})


@dataclass(frozen=True)
class InputSpace:
    """The published input space of one model.

    Attributes:
        low, high: each feature's range: the spec's min/max, else the profile's minimum/maximum.
        levels: the profile's quantile levels with 0 and 1 added (None: no profile).
        quantiles: one row per level (the profile's minimum and maximum at 0 and 1).
        integer: per feature, whether values are whole numbers (INT32, INT64, BOOL inputs).
        categories: feature index -> its sorted allowed values.
        ranges_from: "serving.yaml" or "profile": where `low`/`high` came from.
    """

    low: FloatArray
    high: FloatArray
    levels: FloatArray | None
    quantiles: FloatArray | None
    integer: bool
    categories: dict[int, FloatArray]
    ranges_from: str

    @property
    def features(self) -> int:
        return int(self.low.shape[0])

    @property
    def has_marginals(self) -> bool:
        return self.levels is not None

    @classmethod
    def from_spec(cls, spec: ServingSpec) -> InputSpace:
        """The space `spec` publishes.

        Raises:
            ConfigError: the spec gives neither ranges nor a training profile, or its profile
                does not describe the input's features.
        """
        features = spec.input.features
        levels = quantiles = None
        profile_low = profile_high = None
        if spec.profile is not None:
            levels, quantiles, profile_low, profile_high = _marginals(spec.profile, features)
        if spec.input.minimum is not None and spec.input.maximum is not None:
            low = np.asarray(spec.input.minimum, dtype=np.float64)
            high = np.asarray(spec.input.maximum, dtype=np.float64)
            ranges_from = "serving.yaml"
            if quantiles is not None:
                quantiles = np.clip(quantiles, low, high)
        elif profile_low is not None and profile_high is not None:
            low = profile_low if spec.input.minimum is None else np.asarray(spec.input.minimum, dtype=np.float64)
            high = profile_high if spec.input.maximum is None else np.asarray(spec.input.maximum, dtype=np.float64)
            low, high = np.minimum(low, high), np.maximum(low, high)
            ranges_from = "profile"
        else:
            raise ConfigError(
                "serving.yaml gives neither min/max for every feature nor a training profile: "
                "there is no published input space to attack from",
                hint="Declare inputs' min and max, or ship the profile (TrainingProfile.from_data(x_train).to_dict()).",
            )
        categories = {
            index: np.asarray(sorted(values), dtype=np.float64) for index, values in spec.input.categories.items() if values
        }
        return cls(low, high, levels, quantiles, spec.input.datatype in _INTEGER_TYPES, categories, ranges_from)

    def uniform(self, rng: np.random.Generator, rows: int) -> FloatArray:
        """Rows drawn uniformly from the ranges, each feature on its own."""
        return self.conform(rng.uniform(self.low, self.high, size=(rows, self.features)))

    def marginals(self, rng: np.random.Generator, rows: int) -> FloatArray:
        """Rows whose features are drawn independently from the profile's marginals.

        Each feature's inverse CDF is the piecewise-linear curve through its published quantiles
        (the profile's minimum and maximum at levels 0 and 1). Without a profile: `uniform`.
        """
        if self.levels is None or self.quantiles is None:
            return self.uniform(rng, rows)
        u = rng.uniform(0.0, 1.0, size=(rows, self.features))
        # Where u falls between the levels, per feature: the same knots for every feature.
        upper = np.clip(np.searchsorted(self.levels, u, side="right"), 1, len(self.levels) - 1)
        lower = upper - 1
        span = self.levels[upper] - self.levels[lower]
        weight = np.where(span > 0, (u - self.levels[lower]) / np.where(span > 0, span, 1.0), 0.0)
        columns = np.arange(self.features)
        below = self.quantiles[lower, columns]
        above = self.quantiles[upper, columns]
        return self.conform(below + weight * (above - below))

    def conform(self, rows: FloatArray) -> FloatArray:
        """`rows` as the gateway would accept them: within the ranges, whole where the input is
        an integer type, categorical features on their nearest allowed value."""
        out = np.clip(np.asarray(rows, dtype=np.float64), self.low, self.high)
        if self.integer:
            out = np.clip(np.rint(out), np.ceil(self.low), np.floor(self.high))
        for index, allowed in self.categories.items():
            column = out[:, index]
            position = np.clip(np.searchsorted(allowed, column), 1, max(1, len(allowed) - 1))
            left = allowed[position - 1]
            right = allowed[np.minimum(position, len(allowed) - 1)]
            out[:, index] = np.where(np.abs(column - left) <= np.abs(right - column), left, right)
        return out


def _marginals(raw: Mapping[str, Any], features: int) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """Levels and quantiles (with 0 and 1 added), and the minimum and maximum, of the profile."""
    from bastion.serve.detect import TrainingProfile  # noqa: PLC0415  # the one reader of the profile

    try:
        profile = TrainingProfile.from_dict(raw)
    except ArtifactError as err:
        raise ConfigError(f"serving.yaml: profile: {err.message}", hint=err.hint) from err
    if profile.n_features != features:
        raise ConfigError(
            f"serving.yaml: the profile describes {profile.n_features} features, the input has {features}",
            hint="Rebuild the profile from the training data the model takes.",
        )
    minimum = np.asarray(profile.minimum, dtype=np.float64)
    maximum = np.asarray(profile.maximum, dtype=np.float64)
    inner = np.asarray(profile.quantile_levels, dtype=np.float64)
    keep = (inner > 0.0) & (inner < 1.0)
    levels = np.concatenate(([0.0], inner[keep], [1.0]))
    table = np.asarray(profile.quantiles, dtype=np.float64)[keep]
    quantiles = np.vstack([minimum, table, maximum])
    order = np.argsort(levels, kind="stable")
    # A quantile table is non-decreasing down each column; sorting repairs one written by hand.
    return levels[order], np.sort(quantiles[order], axis=0), minimum, maximum
