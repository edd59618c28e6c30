"""SERVE: how far a row lies from the training data, on the features it carries.

A training profile compiles to a `Geometry`; for one set of carried features (all of them, or
those a mean-imputed row carries) the geometry compiles to a `CarriedView`, whose `typical`
judges rows with three tests:

- range: every carried feature within the training range widened by the profile's margin
  (and within the declared serving range, when one is given);
- marginal: the mean squared z-score over the carried features within the profile's typical
  band, scaled from all features to the carried count by chi-square quantile ratios;
- joint: the squared Mahalanobis distance to the nearest mixture component, on the
  sub-covariance of the carried features, at most the profile's threshold for that count.

The distance on a subset is the marginal distribution's: what the row says about the features
it carries, nothing assumed about the others. Every view's tests are one matrix product: the
components' whitening matrices and the marginal scaling side by side, so judging a batch costs
a handful of numpy calls whatever its size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from bastion.serve.detect.statistics import chi_square_quantile

FloatArray = npt.NDArray[np.float64]
IndexArray = npt.NDArray[np.intp]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class CarriedView:
    """The compiled tests for rows that carry the features `index` (all when None).

    One product `(x - mean) @ stacked - offsets` gives, side by side, each component's whitened
    row, the row in standard deviations over sqrt(k) (the marginal score's terms) and the row's
    position within the range (-1..1 inside). Squared, `blocks` sums the first two kinds per
    block, and the range part's largest square must stay within 1. In float64: a float32 row,
    however large, cannot overflow it.
    """

    index: IndexArray | None
    mean: FloatArray  # (k,)
    stacked: FloatArray  # (k, (components + 2) * k)
    offsets: FloatArray  # ((components + 2) * k,)
    blocks: FloatArray  # ((components + 1) * k, components + 1): sums each block's squares
    components: int
    joint_threshold: float
    marginal_low: float
    marginal_high: float

    @property
    def carried(self) -> int:
        return int(self.mean.shape[0])

    def typical(self, x: npt.NDArray[np.floating]) -> BoolArray:
        """True for each row of `x` (n, k) that passes every test; rows must be finite."""
        split = self.blocks.shape[0]
        z = np.dot(x - self.mean, self.stacked)
        z -= self.offsets
        z *= z
        scores = np.dot(z[:, :split], self.blocks)
        ok: BoolArray = np.maximum.reduce(z[:, split:], axis=1) <= 1.0
        marginal = scores[:, self.components]
        ok &= marginal >= self.marginal_low
        ok &= marginal <= self.marginal_high
        if self.components:
            ok &= np.minimum.reduce(scores[:, : self.components], axis=1) <= self.joint_threshold
        return ok

    def is_typical_row(self, row: npt.NDArray[np.floating]) -> bool:
        """`typical` for one row (k,), finite or not, in as few numpy calls as it takes."""
        # np.dot, not @: the same BLAS call with less overhead around it.
        c = row - self.mean
        # Non-finite values would make the product warn; they are atypical anyway.
        if not math.isfinite(np.add.reduce(c)):
            return False
        split = self.blocks.shape[0]
        z = np.dot(c, self.stacked)
        z -= self.offsets
        z *= z
        if np.maximum.reduce(z[split:]) > 1.0:
            return False
        scores: list[float] = np.dot(z[:split], self.blocks).tolist()
        if not self.marginal_low <= scores[self.components] <= self.marginal_high:
            return False
        return not self.components or min(scores[: self.components]) <= self.joint_threshold

    def scores(self, x: npt.NDArray[np.floating]) -> tuple[BoolArray, FloatArray]:
        """(other, joint) as `Geometry.scores` gives them, from this view (rows must be finite)."""
        split = self.blocks.shape[0]
        z = (x - self.mean) @ self.stacked - self.offsets
        z *= z
        scores = z[:, :split] @ self.blocks
        marginal = scores[:, self.components]
        other = (z[:, split:].max(axis=1) > 1.0) | (marginal < self.marginal_low) | (marginal > self.marginal_high)
        joint = scores[:, : self.components].min(axis=1) if self.components else np.zeros(x.shape[0])
        return other, joint


class Geometry:
    """A profile's arrays, in the form rows are judged against.

    Args:
        mean, std: per feature (std > 0: constant features get 1).
        low, high: per feature, the range a typical row stays within.
        band: the (low, high) typical mean squared z-score over all features.
        band_levels: the quantile levels `band` was taken at.
        means_std: (components, d) mixture means in standard deviations from `mean`.
        covariances_std: (components, d, d) mixture covariances in standard deviations.
        joint_thresholds: index k-1: the joint threshold for a row carrying k features.
    """

    def __init__(
        self,
        *,
        mean: FloatArray,
        std: FloatArray,
        low: FloatArray,
        high: FloatArray,
        band: tuple[float, float],
        band_levels: tuple[float, float],
        means_std: FloatArray,
        covariances_std: FloatArray,
        joint_thresholds: FloatArray,
    ) -> None:
        self.mean = mean
        self.std = std
        self.low = low
        self.high = high
        self.band = band
        self.band_levels = band_levels
        self.means_std = means_std
        self.covariances_std = covariances_std
        self.joint_thresholds = joint_thresholds
        self.n_features = int(mean.shape[0])
        self.components = int(means_std.shape[0])

    def marginal_band(self, k: int) -> tuple[float, float]:
        """The typical band of the mean squared z-score over k carried features.

        Scaled from all d features by the chi-square quantile ratio at each band level: were
        the features independent standard normals, k times the score would be chi-square
        with k degrees of freedom, and the band would be exactly these quantiles.
        """
        d = self.n_features
        if k == d:
            return self.band
        (low, high), (p_low, p_high) = self.band, self.band_levels
        scale_low = _scaled_quantile(p_low, k, d)
        scale_high = _scaled_quantile(p_high, k, d)
        return low * scale_low, high * scale_high

    def view(self, index: IndexArray | None) -> CarriedView:
        """Compile the tests for rows carrying the features `index` (sorted; None: all)."""
        d = self.n_features
        idx = np.arange(d) if index is None else index
        k = int(idx.shape[0])
        inv_std = 1.0 / self.std[idx]
        blocks = []
        offsets = []
        if self.components:
            sub = self.covariances_std[:, idx[:, None], idx[None, :]]
            whitening_std = np.swapaxes(np.linalg.inv(np.linalg.cholesky(sub)), 1, 2)
            for j in range(self.components):
                blocks.append(inv_std[:, None] * whitening_std[j])
                offsets.append(self.means_std[j, idx] @ whitening_std[j])
        blocks.append(np.diag(inv_std / np.sqrt(k)))
        offsets.append(np.zeros(k))
        # Range, as the position within it: (c - mid) / half, inside when within -1..1. A
        # constant feature's range has no width: a floor keeps the scale finite, and any value
        # but the constant is still far outside.
        mid = (self.low[idx] + self.high[idx]) / 2 - self.mean[idx]
        half = np.maximum((self.high[idx] - self.low[idx]) / 2, np.maximum(1e-6 * self.std[idx], 1e-30))
        blocks.append(np.diag(1.0 / half))
        offsets.append(mid / half)
        marginal_low, marginal_high = self.marginal_band(k)
        return CarriedView(
            index=index,
            mean=self.mean[idx].copy(),
            stacked=np.ascontiguousarray(np.concatenate(blocks, axis=1)),
            offsets=np.concatenate(offsets),
            blocks=np.kron(np.eye(self.components + 1), np.ones((k, 1))).astype(np.float64),
            components=self.components,
            joint_threshold=float(self.joint_thresholds[k - 1]),
            marginal_low=marginal_low,
            marginal_high=marginal_high,
        )

    def scores(self, x: FloatArray, index: IndexArray) -> tuple[BoolArray, FloatArray]:
        """Each row's verdict from the range and marginal tests, and its joint distance.

        For calibration: `x` (n, d) finite, `index` (n, k) the features each row carries (k the
        same for all). The same tests as `view(...).typical`, computed row by row with batched
        solves instead of one compiled view per set of features.

        Returns:
            (other, joint): `other` True where the range or the marginal test fails; `joint`
            the distance the joint test compares with its threshold (0 without components).
        """
        n, k = index.shape
        rows = np.arange(n)[:, None]
        c = x[rows, index] - self.mean[index]
        inside = ((c >= self.low[index] - self.mean[index]) & (c <= self.high[index] - self.mean[index])).all(axis=1)
        u = c / self.std[index]
        marginal = np.einsum("ij,ij->i", u, u) / k
        band_low, band_high = self.marginal_band(k)
        other = ~inside | (marginal < band_low) | (marginal > band_high)
        joint = np.full(n, np.inf) if self.components else np.zeros(n)
        for j in range(self.components):
            sub = self.covariances_std[j][index[:, :, None], index[:, None, :]]
            r = u - self.means_std[j][index]
            solved = np.linalg.solve(sub, r[:, :, None])[:, :, 0]
            joint = np.minimum(joint, np.einsum("ij,ij->i", r, solved))
        return other, joint


def _scaled_quantile(p: float, k: int, d: int) -> float:
    full = chi_square_quantile(p, d) / d
    return chi_square_quantile(p, k) / k / full if full > 0 else 0.0
