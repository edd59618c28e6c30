"""SERVE: what the training data looks like, shipped with the model for the detectors."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from bastion.errors import ArtifactError

PROFILE_SCHEMA = "bastion.training-profile/1"
QUANTILE_LEVELS: tuple[float, ...] = (0.001, 0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 0.999)
# A query is atypical when its mean squared z-score is outside the central 99 % of the
# training records' own scores: too far (box probing) or too near the mean (a tight box).
TYPICAL_SCORE_LEVELS = (0.005, 0.995)

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class TrainingProfile:
    """Per-feature summary of the training data, shipped with the model.

    Built once by `from_data`; `to_dict` / `from_dict` give a JSON-able form.

    Attributes:
        n_samples: training records summarised.
        mean, std, minimum, maximum: per feature.
        quantile_levels: the levels of `quantiles`.
        quantiles: one tuple per level, one value per feature.
        typical_score: the (low, high) quantiles, at `TYPICAL_SCORE_LEVELS`, of the training
            records' own mean squared z-score.
    """

    n_samples: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    minimum: tuple[float, ...]
    maximum: tuple[float, ...]
    quantile_levels: tuple[float, ...]
    quantiles: tuple[tuple[float, ...], ...]
    typical_score: tuple[float, float]

    @property
    def n_features(self) -> int:
        """How many features a query must have."""
        return len(self.mean)

    @classmethod
    def from_data(cls, x: npt.ArrayLike) -> TrainingProfile:
        """Summarise training data.

        Args:
            x: training records, shape (n_samples, n_features), finite numbers.

        Returns:
            The profile.

        Raises:
            ArtifactError: `x` is not a 2-D array of at least two finite rows.
        """
        data = np.asarray(x, dtype=np.float64)
        if data.ndim != 2 or data.shape[0] < 2 or data.shape[1] < 1:
            raise ArtifactError(
                f"training data: expected shape (n_samples >= 2, n_features >= 1), got {data.shape}",
                hint="Pass the training matrix the model was fitted on.",
            )
        if not np.isfinite(data).all():
            raise ArtifactError("training data: contains NaN or infinity", hint="Clean the training matrix first.")
        mean = data.mean(axis=0)
        std = data.std(axis=0)
        scores = _mean_squared_z(data, mean, _usable_std(std))
        quantiles = np.quantile(data, QUANTILE_LEVELS, axis=0)
        low, high = np.quantile(scores, TYPICAL_SCORE_LEVELS)
        return cls(
            n_samples=int(data.shape[0]),
            mean=_floats(mean),
            std=_floats(std),
            minimum=_floats(data.min(axis=0)),
            maximum=_floats(data.max(axis=0)),
            quantile_levels=QUANTILE_LEVELS,
            quantiles=tuple(_floats(row) for row in quantiles),
            typical_score=(float(low), float(high)),
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able form; `TrainingProfile.from_dict(p.to_dict()) == p`."""
        return {
            "schema": PROFILE_SCHEMA,
            "n_samples": self.n_samples,
            "mean": list(self.mean),
            "std": list(self.std),
            "minimum": list(self.minimum),
            "maximum": list(self.maximum),
            "quantile_levels": list(self.quantile_levels),
            "quantiles": [list(row) for row in self.quantiles],
            "typical_score": list(self.typical_score),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainingProfile:
        """Read the form `to_dict` writes.

        Raises:
            ArtifactError: wrong schema, missing or extra fields, or inconsistent lengths.
        """
        hint = "Rebuild the profile with TrainingProfile.from_data on the training data."
        if data.get("schema") != PROFILE_SCHEMA:
            raise ArtifactError(
                f"training profile: schema is {data.get('schema')!r}, not {PROFILE_SCHEMA!r}", hint=hint
            )
        expected = {
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
        if set(data) != expected:
            raise ArtifactError(
                f"training profile: fields differ from the schema: {sorted(set(data) ^ expected)}", hint=hint
            )
        try:
            profile = cls(
                n_samples=int(data["n_samples"]),
                mean=_floats(data["mean"]),
                std=_floats(data["std"]),
                minimum=_floats(data["minimum"]),
                maximum=_floats(data["maximum"]),
                quantile_levels=_floats(data["quantile_levels"]),
                quantiles=tuple(_floats(row) for row in data["quantiles"]),
                typical_score=(float(data["typical_score"][0]), float(data["typical_score"][1])),
            )
        except (TypeError, ValueError, IndexError) as err:
            raise ArtifactError(f"training profile: unreadable field ({err})", hint=hint) from err
        n = profile.n_features
        lengths = [len(profile.std), len(profile.minimum), len(profile.maximum), *map(len, profile.quantiles)]
        if n < 1 or any(length != n for length in lengths) or len(profile.quantiles) != len(profile.quantile_levels):
            raise ArtifactError("training profile: per-feature fields differ in length", hint=hint)
        values = np.array([profile.mean, profile.std, profile.minimum, profile.maximum])
        if not np.isfinite(values).all() or not np.isfinite(profile.typical_score).all():
            raise ArtifactError("training profile: contains NaN or infinity", hint=hint)
        return profile


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
