"""SERVE: what the training data looks like, shipped with the model for the detectors.

A `TrainingProfile` travels in the model's `serving.yaml` and holds two parts:

- per feature (schema /1 and /2): mean, standard deviation, range, quantiles, and the typical
  band of a row's mean squared z-score;
- joint (schema /2): a Gaussian mixture of the training data (see `mixture`), as the means and
  whitening matrices of its components, with distance thresholds calibrated to a stated per-row
  false-alarm rate on rows the mixture was not fitted on. Sampling features independently from
  their ranges or marginals, which every per-feature test lets through, breaks how features go
  together, and the joint test sees that.

Profiles of schema /1 are still read; the joint test is then off.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from bastion.errors import ArtifactError, ConfigError
from bastion.serve.detect.distances import Geometry
from bastion.serve.detect.mixture import Mixture, fit_mixture, select_mixture
from bastion.serve.detect.statistics import chi_square_quantile

logger = logging.getLogger(__name__)

PROFILE_SCHEMA = "bastion.training-profile/2"
PROFILE_SCHEMA_V1 = "bastion.training-profile/1"
QUANTILE_LEVELS: tuple[float, ...] = (0.001, 0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 0.999)
# Schema /1: a query is atypical when its mean squared z-score is outside the central 99 % of
# the training records' own scores: too far (box probing) or too near the mean (a tight box).
# Schema /2 takes the band at (rate / 10, 1 - rate / 10) so that, with the joint test, the
# whole judgement keeps to the stated false-alarm rate.
TYPICAL_SCORE_LEVELS = (0.005, 0.995)
DEFAULT_FALSE_ALARM_RATE = 0.005
# Schema /2 widens the training range by this share of it on each side: a fresh benign row
# falls outside the bare range of n training rows with probability about 2 d / n per row (0.4 %
# for 20 features and 10,000 rows), which alone would use up a 0.5 % false-alarm budget.
RANGE_MARGIN = 0.1
# The joint part costs d x d numbers per component in serving.yaml and d^3 work per distinct
# set of carried features; beyond this many features the profile has no joint part.
MAX_JOINT_FEATURES = 64
MAX_COMPONENTS = 16
# Calibration needs this many expected false alarms among its rows (1,000 rows at 0.5 %).
CALIBRATION_EXCEEDANCES = 5
# Calibration rows, at most, given a random carried count and set to calibrate the carried scale.
CARRIED_CALIBRATION_ROWS = 20_000

FloatArray = npt.NDArray[np.float64]
_HINT = "Rebuild the profile with TrainingProfile.from_data on the training data."


@dataclass(frozen=True, slots=True)
class TrainingProfile:
    """Summary of the training data, shipped with the model.

    Built once by `from_data`; `to_dict` / `from_dict` give a JSON-able form.

    Attributes:
        n_samples: training records summarised.
        mean, std, minimum, maximum: per feature.
        quantile_levels: the levels of `quantiles`.
        quantiles: one tuple per level, one value per feature.
        typical_score: the (low, high) quantiles, at `typical_score_levels`, of the training
            records' own mean squared z-score.
        typical_score_levels: (0.005, 0.995) in schema /1; (rate / 10, 1 - rate / 10) in /2.
        range_margin: the training range is widened by this share of it on each side (0 in /1).
        false_alarm_rate: the per-row false-alarm rate the thresholds were calibrated to
            (None: schema /1).
        joint_means: (components, n_features): the mixture's means (empty: no joint part).
        joint_whitening: (components, n_features, n_features): for component k,
            `z = (x - joint_means[k]) @ joint_whitening[k]` and the distance is `|z|^2`.
        joint_threshold: a full row is atypical when its distance to the nearest component
            exceeds this (None: no joint part).
        joint_carried_scale: a row that carries k < n_features of the features (the others
            mean-imputed) is atypical when its distance on those k exceeds this times the
            chi-square quantile at 1 - false_alarm_rate with k degrees of freedom.
    """

    n_samples: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    minimum: tuple[float, ...]
    maximum: tuple[float, ...]
    quantile_levels: tuple[float, ...]
    quantiles: tuple[tuple[float, ...], ...]
    typical_score: tuple[float, float]
    typical_score_levels: tuple[float, float] = TYPICAL_SCORE_LEVELS
    range_margin: float = 0.0
    false_alarm_rate: float | None = None
    joint_means: tuple[tuple[float, ...], ...] = ()
    joint_whitening: tuple[tuple[tuple[float, ...], ...], ...] = ()
    joint_threshold: float | None = None
    joint_carried_scale: float | None = None

    @property
    def n_features(self) -> int:
        """How many features a query must have."""
        return len(self.mean)

    @property
    def schema(self) -> str:
        """`PROFILE_SCHEMA` (/2), or `PROFILE_SCHEMA_V1` for a profile read from a /1 form."""
        return PROFILE_SCHEMA_V1 if self.false_alarm_rate is None else PROFILE_SCHEMA

    @property
    def has_joint(self) -> bool:
        """True when the profile can judge how features go together."""
        return bool(self.joint_means)

    @classmethod
    def from_data(
        cls,
        x: npt.ArrayLike,
        *,
        holdout: npt.ArrayLike | None = None,
        false_alarm_rate: float = DEFAULT_FALSE_ALARM_RATE,
        seed: int = 0,
    ) -> TrainingProfile:
        """Summarise training data, joint part included.

        The mixture is fitted on `x`; its thresholds are calibrated on `holdout`. Without a
        holdout, `x` is split in two halves, each half's mixture judges the other half, and
        the mixture is then fitted again on all of `x`, starting from the first half's. The
        joint part is left out (with a log line) when there are fewer than 2 or more than
        `MAX_JOINT_FEATURES` features, or too few rows to calibrate (`CALIBRATION_EXCEEDANCES /
        false_alarm_rate` calibration rows, and 20 rows per feature to fit).

        Args:
            x: training records, shape (n_samples, n_features), finite numbers.
            holdout: records of the same population the mixture is not fitted on.
            false_alarm_rate: the share of benign rows the judge may call atypical.
            seed: for the split, the mixture's start and the calibration's random subsets.

        Returns:
            The profile (schema /2).

        Raises:
            ArtifactError: `x` or `holdout` is not a 2-D array of at least two finite rows, or
                they differ in features.
            ConfigError: `false_alarm_rate` is not within (0, 0.1].

        Example:
            >>> profile = TrainingProfile.from_data(x_train, holdout=x_valid)  # doctest: +SKIP
            >>> profile.to_dict()["schema"]                                     # doctest: +SKIP
            'bastion.training-profile/2'
        """
        data = _training_matrix(x, "training data")
        if not 0.0 < false_alarm_rate <= 0.1:
            raise ConfigError(
                f"false_alarm_rate must be within (0, 0.1], got {false_alarm_rate}",
                hint="Use a small share such as 0.005 (one row in 200).",
            )
        held = None if holdout is None else _training_matrix(holdout, "holdout")
        if held is not None and held.shape[1] != data.shape[1]:
            raise ArtifactError(
                f"holdout has {held.shape[1]} features, the training data {data.shape[1]}",
                hint="Pass held-out rows of the same table.",
            )
        levels = (false_alarm_rate / 10, 1.0 - false_alarm_rate / 10)
        base = _Summary.of(data, levels)
        fields: dict[str, Any] = {
            **base.fields(),
            "typical_score_levels": levels,
            "range_margin": RANGE_MARGIN,
            "false_alarm_rate": false_alarm_rate,
        }
        why_not = _why_no_joint(data, held, false_alarm_rate)
        if why_not:
            logger.info("training profile: no joint part: %s", why_not)
            return cls(**fields)
        with _small_matrix_blas():
            fields |= _joint_fields(data, held, base, false_alarm_rate, seed)
        return cls(**fields)

    def geometry(self, spec_min: Sequence[float] | None = None, spec_max: Sequence[float] | None = None) -> Geometry:
        """The arrays rows are judged against (`bastion.serve.detect.distances`).

        Args:
            spec_min, spec_max: the declared serving range; rows outside it are atypical too.
        """
        d = self.n_features
        mean = np.asarray(self.mean, dtype=np.float64)
        std = _usable_std(np.asarray(self.std, dtype=np.float64))
        minimum = np.asarray(self.minimum, dtype=np.float64)
        maximum = np.asarray(self.maximum, dtype=np.float64)
        margin = self.range_margin * (maximum - minimum)
        low, high = minimum - margin, maximum + margin
        if spec_min is not None:
            low = np.maximum(low, np.asarray(spec_min, dtype=np.float64))
        if spec_max is not None:
            high = np.minimum(high, np.asarray(spec_max, dtype=np.float64))
        if self.has_joint:
            if self.joint_threshold is None or self.joint_carried_scale is None or self.false_alarm_rate is None:
                raise RuntimeError("a profile with a joint part lacks its threshold")  # from_dict checks this
            whitening_std = np.asarray(self.joint_whitening, dtype=np.float64) * std[None, :, None]
            precision = whitening_std @ np.swapaxes(whitening_std, 1, 2)
            covariances = np.linalg.inv(precision).astype(np.float64)
            means_std = (np.asarray(self.joint_means, dtype=np.float64) - mean) / std
            thresholds = np.array(
                [
                    *(
                        self.joint_carried_scale * chi_square_quantile(1.0 - self.false_alarm_rate, k)
                        for k in range(1, d)
                    ),
                    self.joint_threshold,
                ]
            )
        else:
            covariances = np.zeros((0, d, d))
            means_std = np.zeros((0, d))
            thresholds = np.full(d, np.inf)
        return Geometry(
            mean=mean,
            std=std,
            low=low,
            high=high,
            band=self.typical_score,
            band_levels=self.typical_score_levels,
            means_std=means_std,
            covariances_std=covariances,
            joint_thresholds=thresholds,
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able form; `TrainingProfile.from_dict(p.to_dict()) == p`."""
        data: dict[str, Any] = {
            "schema": self.schema,
            "n_samples": self.n_samples,
            "mean": list(self.mean),
            "std": list(self.std),
            "minimum": list(self.minimum),
            "maximum": list(self.maximum),
            "quantile_levels": list(self.quantile_levels),
            "quantiles": [list(row) for row in self.quantiles],
            "typical_score": list(self.typical_score),
        }
        if self.false_alarm_rate is None:
            return data
        return data | {
            "typical_score_levels": list(self.typical_score_levels),
            "range_margin": self.range_margin,
            "false_alarm_rate": self.false_alarm_rate,
            "joint_means": [list(row) for row in self.joint_means],
            "joint_whitening": [[list(row) for row in matrix] for matrix in self.joint_whitening],
            "joint_threshold": self.joint_threshold,
            "joint_carried_scale": self.joint_carried_scale,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainingProfile:
        """Read the form `to_dict` writes (schema /2, or /1 without the joint part).

        Every number must be a finite int or float (not a string or a bool), every per-feature
        list as long as `mean`, every whitening matrix square and invertible.

        Raises:
            ArtifactError: wrong schema, missing or extra fields, wrong types or shapes, values
                that are not finite or out of their range.
        """
        schema = data.get("schema")
        if schema not in (PROFILE_SCHEMA, PROFILE_SCHEMA_V1):
            raise ArtifactError(
                f"training profile: schema is {schema!r}, not {PROFILE_SCHEMA!r} or {PROFILE_SCHEMA_V1!r}", hint=_HINT
            )
        expected = set(_V1_FIELDS) if schema == PROFILE_SCHEMA_V1 else set(_V1_FIELDS) | set(_V2_FIELDS)
        if set(data) != expected:
            raise ArtifactError(
                f"training profile: fields differ from the schema: {sorted(set(data) ^ expected)}", hint=_HINT
            )
        reader = _Reader()
        n_samples = reader.integer(data["n_samples"], "n_samples")
        mean = reader.vector(data["mean"], "mean")
        d = len(mean)
        if n_samples < 1 or d < 1:
            raise ArtifactError("training profile: needs at least one sample and one feature", hint=_HINT)
        fields: dict[str, Any] = {
            "n_samples": n_samples,
            "mean": mean,
            "std": reader.vector(data["std"], "std", d),
            "minimum": reader.vector(data["minimum"], "minimum", d),
            "maximum": reader.vector(data["maximum"], "maximum", d),
            "quantile_levels": reader.vector(data["quantile_levels"], "quantile_levels"),
            "typical_score": reader.pair(data["typical_score"], "typical_score"),
        }
        fields["quantiles"] = reader.matrix(data["quantiles"], "quantiles", len(fields["quantile_levels"]), d)
        if schema == PROFILE_SCHEMA:
            fields |= _read_v2(data, reader, d)
        profile = cls(**fields)
        _check_ranges(profile)
        return profile


_V1_FIELDS = (
    "schema",
    "n_samples",
    "mean",
    "std",
    "minimum",
    "maximum",
    "quantile_levels",
    "quantiles",
    "typical_score",
)
_V2_FIELDS = (
    "typical_score_levels",
    "range_margin",
    "false_alarm_rate",
    "joint_means",
    "joint_whitening",
    "joint_threshold",
    "joint_carried_scale",
)


def _why_no_joint(data: FloatArray, held: FloatArray | None, rate: float) -> str:
    n, d = data.shape
    calibration_rows = n if held is None else held.shape[0]
    fit_rows = n // 2 if held is None else n
    if not 2 <= d <= MAX_JOINT_FEATURES:
        return f"{d} features (the joint part needs 2 to {MAX_JOINT_FEATURES})"
    if calibration_rows < CALIBRATION_EXCEEDANCES / rate:
        return f"{calibration_rows} calibration rows (needs {math.ceil(CALIBRATION_EXCEEDANCES / rate)})"
    if fit_rows < 20 * d:
        return f"{fit_rows} rows to fit on (needs {20 * d})"
    return ""


def _joint_fields(data: FloatArray, held: FloatArray | None, base: _Summary, rate: float, seed: int) -> dict[str, Any]:
    """The mixture fitted on `data` and its thresholds, calibrated on rows it was not fitted on."""
    rng = np.random.default_rng(seed)
    if held is not None:
        final = replace(base, mixture=select_mixture(_standardise(data, base), seed=seed))
        pairs = [(final, held)]
    else:
        n = data.shape[0]
        order = rng.permutation(n)
        first_rows, second_rows = data[order[: n // 2]], data[order[n // 2 :]]
        first = _Summary.of(first_rows, base.levels)
        first = replace(first, mixture=select_mixture(_standardise(first_rows, first), seed=seed))
        second = _Summary.of(second_rows, base.levels)
        second = replace(
            second, mixture=fit_mixture(_standardise(second_rows, second), 0, seed=seed, start=first.mixture)
        )
        pairs = [(first, second_rows), (second, first_rows)]
        final = replace(base, mixture=fit_mixture(_standardise(data, base), 0, seed=seed, start=first.mixture))
    threshold, scale = _calibrate(pairs, rate, rng)
    if final.mixture is None:
        raise RuntimeError("the refit produced no mixture")
    std = base.usable_std
    whitening = final.mixture.whitening() / std[None, :, None]
    means = base.mean + final.mixture.means * std
    return {
        "joint_means": tuple(_floats(row) for row in means),
        "joint_whitening": tuple(tuple(_floats(row) for row in matrix) for matrix in whitening),
        "joint_threshold": threshold,
        "joint_carried_scale": scale,
    }


class _Reader:
    """Strict readers of the numbers in a profile's dict form; each names the field it reads."""

    def number(self, value: Any, what: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ArtifactError(
                f"training profile: unreadable field {what}: {type(value).__name__}, not a number", hint=_HINT
            )
        result = float(value)
        if not math.isfinite(result):
            raise ArtifactError(f"training profile: {what} contains NaN or infinity", hint=_HINT)
        return result

    def integer(self, value: Any, what: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ArtifactError(
                f"training profile: unreadable field {what}: {type(value).__name__}, not an integer", hint=_HINT
            )
        return value

    def vector(self, value: Any, what: str, length: int | None = None) -> tuple[float, ...]:
        if not isinstance(value, list | tuple):
            raise ArtifactError(
                f"training profile: unreadable field {what}: {type(value).__name__}, not a list", hint=_HINT
            )
        if length is not None and len(value) != length:
            raise ArtifactError(
                f"training profile: per-feature fields differ in length: {what} has {len(value)}, not {length}",
                hint=_HINT,
            )
        return tuple(self.number(v, what) for v in value)

    def pair(self, value: Any, what: str) -> tuple[float, float]:
        low, high = self.vector(value, what, 2)
        return low, high

    def matrix(self, value: Any, what: str, rows: int | None, columns: int) -> tuple[tuple[float, ...], ...]:
        if not isinstance(value, list | tuple) or (rows is not None and len(value) != rows):
            raise ArtifactError(f"training profile: {what} must be a list of {rows} lists", hint=_HINT)
        return tuple(self.vector(row, what, columns) for row in value)


def _read_v2(data: Mapping[str, Any], reader: _Reader, d: int) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "typical_score_levels": reader.pair(data["typical_score_levels"], "typical_score_levels"),
        "range_margin": reader.number(data["range_margin"], "range_margin"),
        "false_alarm_rate": reader.number(data["false_alarm_rate"], "false_alarm_rate"),
    }
    means = reader.matrix(data["joint_means"], "joint_means", None, d)
    k = len(means)
    if k > MAX_COMPONENTS:
        raise ArtifactError(f"training profile: {k} mixture components, at most {MAX_COMPONENTS}", hint=_HINT)
    whitening_raw = data["joint_whitening"]
    if not isinstance(whitening_raw, list | tuple) or len(whitening_raw) != k:
        raise ArtifactError(f"training profile: joint_whitening must hold {k} matrices, one per component", hint=_HINT)
    whitening = tuple(reader.matrix(m, "joint_whitening", d, d) for m in whitening_raw)
    threshold: float | None = None
    scale: float | None = None
    if k == 0:
        if data["joint_threshold"] is not None or data["joint_carried_scale"] is not None:
            raise ArtifactError("training profile: joint thresholds without joint_means", hint=_HINT)
    else:
        threshold = reader.number(data["joint_threshold"], "joint_threshold")
        scale = reader.number(data["joint_carried_scale"], "joint_carried_scale")
        if threshold <= 0.0 or scale <= 0.0:
            raise ArtifactError("training profile: joint thresholds must be positive", hint=_HINT)
        _check_whitening(np.asarray(whitening, dtype=np.float64))
    return fields | {
        "joint_means": means,
        "joint_whitening": whitening,
        "joint_threshold": threshold,
        "joint_carried_scale": scale,
    }


def _check_whitening(whitening: FloatArray) -> None:
    """Each matrix must be invertible and well enough conditioned for its inverse to mean something."""
    for k, matrix in enumerate(whitening):
        singular = np.linalg.svd(matrix, compute_uv=False)
        if not singular[-1] > 0.0 or singular[0] / singular[-1] > 1e12:
            raise ArtifactError(
                f"training profile: joint_whitening[{k}] is singular or nearly so (condition > 1e12)", hint=_HINT
            )


def _check_ranges(profile: TrainingProfile) -> None:
    def refuse(why: str) -> None:
        raise ArtifactError(f"training profile: {why}", hint=_HINT)

    if any(s < 0.0 for s in profile.std):
        refuse("a standard deviation is negative")
    if any(lo > hi for lo, hi in zip(profile.minimum, profile.maximum, strict=True)):
        refuse("a feature's minimum is above its maximum")
    low, high = profile.typical_score
    if not 0.0 <= low <= high:
        refuse("typical_score must be 0 <= low <= high")
    p_low, p_high = profile.typical_score_levels
    if not 0.0 < p_low < p_high < 1.0:
        refuse("typical_score_levels must be 0 < low < high < 1")
    if not 0.0 <= profile.range_margin <= 10.0:
        refuse("range_margin must be within 0..10")
    rate = profile.false_alarm_rate
    if rate is not None and not 0.0 < rate <= 0.1:
        refuse("false_alarm_rate must be within (0, 0.1]")


@dataclass(frozen=True, slots=True)
class _Summary:
    """The per-feature part of a profile, and a mixture, for one set of rows."""

    n_samples: int
    mean: FloatArray
    std: FloatArray
    minimum: FloatArray
    maximum: FloatArray
    quantiles: FloatArray
    band: tuple[float, float]
    levels: tuple[float, float]
    mixture: Mixture | None = None

    @classmethod
    def of(cls, data: FloatArray, levels: tuple[float, float], mixture: Mixture | None = None) -> _Summary:
        mean = data.mean(axis=0)
        std = data.std(axis=0)
        scores = _mean_squared_z(data, mean, _usable_std(std))
        low, high = np.quantile(scores, levels)
        return cls(
            n_samples=int(data.shape[0]),
            mean=mean,
            std=std,
            minimum=data.min(axis=0),
            maximum=data.max(axis=0),
            quantiles=np.quantile(data, QUANTILE_LEVELS, axis=0),
            band=(float(low), float(high)),
            levels=levels,
            mixture=mixture,
        )

    @property
    def usable_std(self) -> FloatArray:
        return _usable_std(self.std)

    def fields(self) -> dict[str, Any]:
        return {
            "n_samples": self.n_samples,
            "mean": _floats(self.mean),
            "std": _floats(self.std),
            "minimum": _floats(self.minimum),
            "maximum": _floats(self.maximum),
            "quantile_levels": QUANTILE_LEVELS,
            "quantiles": tuple(_floats(row) for row in self.quantiles),
            "typical_score": self.band,
        }

    def geometry(self) -> Geometry:
        """The geometry a profile of these rows would have, before any threshold is known."""
        if self.mixture is None:
            raise RuntimeError("geometry() needs a fitted mixture")
        d = self.mean.shape[0]
        margin = RANGE_MARGIN * (self.maximum - self.minimum)
        return Geometry(
            mean=self.mean,
            std=self.usable_std,
            low=self.minimum - margin,
            high=self.maximum + margin,
            band=self.band,
            band_levels=self.levels,
            means_std=self.mixture.means,
            covariances_std=self.mixture.covariances,
            joint_thresholds=np.full(d, np.inf),
        )


def _calibrate(pairs: list[tuple[_Summary, FloatArray]], rate: float, rng: np.random.Generator) -> tuple[float, float]:
    """The joint threshold for full rows and the carried scale, from rows each summary was not fitted on.

    Each threshold is the one at which the share of calibration rows called atypical by any
    test (range, marginal band, joint) is `rate`: the joint test takes what the others leave
    of the budget. The carried scale is calibrated on the same rows with a random carried
    count k (1 .. d-1) and a random set of k features each, their distances divided by the
    chi-square quantile for k: on make_classification data, thresholds calibrated for each k
    separately (10,000 rows each) were within 5 % of the scale times that quantile, for every k.

    Returns:
        (joint_threshold, joint_carried_scale).
    """
    d = pairs[0][0].mean.shape[0]
    quantiles = np.array([chi_square_quantile(1.0 - rate, k) for k in range(1, d)])
    full_other, full_joint, carried_other, carried_joint = [], [], [], []
    total = sum(rows.shape[0] for _, rows in pairs)
    for summary, rows in pairs:
        geometry = summary.geometry()
        for start in range(0, rows.shape[0], 1024):
            chunk = rows[start : start + 1024]
            other, joint = geometry.scores(chunk, np.broadcast_to(np.arange(d), chunk.shape))
            full_other.append(other)
            full_joint.append(joint)
        share = min(rows.shape[0], max(1, round(CARRIED_CALIBRATION_ROWS * rows.shape[0] / total)))
        chosen = rows[rng.choice(rows.shape[0], share, replace=False)]
        counts = rng.integers(1, d, size=share)
        order = np.argsort(rng.random(chosen.shape), axis=1)
        for k in np.unique(counts).tolist():
            members = np.flatnonzero(counts == k)
            index = np.sort(order[members, :k], axis=1)
            other, joint = geometry.scores(chosen[members], index)
            carried_other.append(other)
            carried_joint.append(joint / quantiles[k - 1])
    threshold = _union_threshold(np.concatenate(full_other), np.concatenate(full_joint), rate, "all")
    scale = _union_threshold(np.concatenate(carried_other), np.concatenate(carried_joint), rate, "fewer")
    return threshold, scale


def _union_threshold(other: npt.NDArray[np.bool_], joint: FloatArray, rate: float, carried: str) -> float:
    budget = math.floor(rate * other.shape[0]) - int(other.sum())
    candidates = np.sort(joint[~other])[::-1]
    if candidates.shape[0] == 0:
        return 1.0
    if budget <= 0:
        logger.warning(
            "training profile: on rows carrying %s features, the range and marginal tests alone flag %.2f%% of "
            "calibration rows, above the %.2f%% budget; the joint test flags none of the rest",
            carried,
            100 * other.mean(),
            100 * rate,
        )
        return max(float(candidates[0]), 1e-9)
    return max(float(candidates[min(budget, candidates.shape[0] - 1)]), 1e-9)


@contextlib.contextmanager
def _small_matrix_blas() -> Iterator[None]:
    """One BLAS thread while fitting: the products are small (20 x 3000 x 20), and threads
    waiting for busy cores made the fit five times slower on a loaded 2-core machine."""
    try:
        threadpoolctl = importlib.import_module("threadpoolctl")
    except ImportError:
        yield
        return
    with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
        yield


def _training_matrix(x: npt.ArrayLike, what: str) -> FloatArray:
    data = np.asarray(x, dtype=np.float64)
    if data.ndim != 2 or data.shape[0] < 2 or data.shape[1] < 1:
        raise ArtifactError(
            f"{what}: expected shape (n_samples >= 2, n_features >= 1), got {data.shape}",
            hint="Pass the training matrix the model was fitted on.",
        )
    if not np.isfinite(data).all():
        raise ArtifactError(f"{what}: contains NaN or infinity", hint="Clean the training matrix first.")
    return data


def _standardise(data: FloatArray, summary: _Summary) -> FloatArray:
    result: FloatArray = (data - summary.mean) / summary.usable_std
    return result


def _usable_std(std: FloatArray) -> FloatArray:
    # A constant training feature has std 0; any other value there is caught by the range
    # test, so scaling by 1 only keeps the distances finite.
    return np.where(std > 0.0, std, 1.0)


def _mean_squared_z(x: FloatArray, mean: FloatArray, std: FloatArray) -> FloatArray:
    z = (x - mean) / std
    result: FloatArray = np.einsum("ij,ij->i", z, z) / x.shape[1]
    return result


def _floats(values: Any) -> tuple[float, ...]:
    return tuple(float(v) for v in values)
