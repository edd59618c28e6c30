"""SERVE: a Gaussian mixture of the training data, the joint part of its profile.

Training data is rarely one Gaussian: classes and their sub-populations form clusters
(scikit-learn's `make_classification` draws each class from clusters at the corners of a
hypercube). Fitted with one Gaussian, such data leaves room between and around its clusters
where rows built feature by feature land without standing out. On a 20-feature, 2-class
`make_classification` (10 informative features, 10,000 rows), at a 0.5 % false-alarm rate on
held-out rows, the share of rows sampled independently from the per-feature marginals that the
distance flags: without redundant features, one Gaussian 1.5 %, the four-component mixture BIC
chooses 27 %; with two redundant ones, 43 % and 73 %.

Each component's covariance is regularised by adding `ridge` (in training standard deviations,
squared) to every feature's variance. That is the covariance a population shifted by a random
0.3 sd per feature adds (0.3² = 0.09): a benign client whose data differ from the training data
by that much stays typical, and no linear dependence between features (make_classification's
redundant features are exact linear combinations) can be tighter than 0.3 sd, so float32
rounding or a small drift never reads as a broken dependence, while sampling features
independently, which breaks it by about one sd, still does. Measured: rows shifted by +0.3 sd
in every feature are 2-2.5 % atypical with the ridge; with a ridge of 0.001 all of them were,
and with 0.01 up to 43 %.

The fit is plain EM from a k-means++ start with a seeded generator: the same data give the same
profile. The number of components is chosen by BIC.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

# (0.3 sd)²: see the module docstring.
RIDGE = 0.09
COMPONENT_CHOICES: tuple[int, ...] = (1, 2, 4, 6, 8)
# Rows per component and per parameter-ish dimension below which more components are not tried.
MIN_ROWS_PER_COMPONENT_FEATURE = 10
EM_ITERATIONS = 40
EM_TOLERANCE = 1e-3  # change in mean log-likelihood per row that counts as converged
SELECTION_ROWS = 3000
_LLOYD_ITERATIONS = 10


@dataclass(frozen=True, slots=True)
class Mixture:
    """A Gaussian mixture in standardised units (training mean 0, standard deviation 1).

    Attributes:
        weights: (components,) mixing weights.
        means: (components, d).
        covariances: (components, d, d), ridge included.
        log_likelihood: total log-likelihood of the data it was fitted on.
    """

    weights: FloatArray
    means: FloatArray
    covariances: FloatArray
    log_likelihood: float

    @property
    def components(self) -> int:
        return int(self.means.shape[0])

    def whitening(self) -> FloatArray:
        """(components, d, d): `z = (u - means[k]) @ W[k]` has identity covariance under component k."""
        chol = np.linalg.cholesky(self.covariances)
        inverse: FloatArray = np.linalg.inv(chol)
        return np.ascontiguousarray(np.swapaxes(inverse, 1, 2))

    def bic(self, n: int) -> float:
        k, d = self.means.shape
        parameters = k * d + k * d * (d + 1) / 2 + k - 1
        return float(-2.0 * self.log_likelihood + parameters * math.log(n))


def fit_mixture(
    u: FloatArray,
    components: int,
    *,
    seed: int,
    ridge: float = RIDGE,
    start: Mixture | None = None,
    iterations: int = EM_ITERATIONS,
) -> Mixture:
    """Fit a Gaussian mixture by EM.

    Args:
        u: standardised rows, shape (n, d).
        components: how many (fewer come back if some lose all their rows).
        seed: for the k-means++ start.
        ridge: added to every covariance's diagonal.
        start: a mixture to start EM from instead of k-means++ (`components` is then ignored).
        iterations: at most this many EM steps.

    Returns:
        The fitted mixture; its `log_likelihood` is on `u`.
    """
    n = u.shape[0]
    if start is not None:
        responsibilities, mean_ll = _responsibilities(u, start)
    else:
        labels = _kmeans(u, components, np.random.default_rng(seed))
        responsibilities = np.zeros((n, components))
        responsibilities[np.arange(n), labels] = 1.0
        mean_ll = -math.inf
    mixture = _maximise(u, responsibilities, ridge)
    for _ in range(iterations):
        responsibilities, new_ll = _responsibilities(u, mixture)
        mixture = _maximise(u, responsibilities, ridge)
        converged = new_ll - mean_ll < EM_TOLERANCE
        mean_ll = new_ll
        if converged:
            break
    _, mean_ll = _responsibilities(u, mixture)
    return Mixture(mixture.weights, mixture.means, mixture.covariances, mean_ll * n)


def select_mixture(u: FloatArray, *, seed: int, ridge: float = RIDGE) -> Mixture:
    """The mixture with the lowest BIC among `COMPONENT_CHOICES` the data can support.

    Chosen on at most `SELECTION_ROWS` rows (a seeded sample): enough to tell 4 clusters from 8 in
    20 features, and it keeps `TrainingProfile.from_data` within a second or two.
    """
    n, d = u.shape
    if n > SELECTION_ROWS:
        u = u[np.random.default_rng(seed).choice(n, SELECTION_ROWS, replace=False)]
        n = SELECTION_ROWS
    best: Mixture | None = None
    for components in COMPONENT_CHOICES:
        if components > 1 and n < components * MIN_ROWS_PER_COMPONENT_FEATURE * (d + 1):
            break
        mixture = fit_mixture(u, components, seed=seed, ridge=ridge)
        if best is None or mixture.bic(n) < best.bic(n):
            best = mixture
    if best is None:  # components=1 is always tried, so this is a bug, not bad input
        raise RuntimeError("no mixture was fitted")
    return best


def _maximise(u: FloatArray, responsibilities: FloatArray, ridge: float) -> Mixture:
    n, d = u.shape
    totals = responsibilities.sum(axis=0)
    # A component left with (almost) no rows has no covariance to estimate: drop it.
    alive = totals >= max(2.0, 1e-6 * n)
    responsibilities, totals = responsibilities[:, alive], totals[alive]
    means = (responsibilities.T @ u) / totals[:, None]
    covariances = np.empty((means.shape[0], d, d))
    for k in range(means.shape[0]):
        # Standardised data: the one-pass form loses nothing worth the ridge.
        covariances[k] = (u.T * responsibilities[:, k]) @ u / totals[k] - np.outer(means[k], means[k])
        covariances[k] += ridge * np.eye(d)
    return Mixture(totals / totals.sum(), means, covariances, math.nan)


def _responsibilities(u: FloatArray, mixture: Mixture) -> tuple[FloatArray, float]:
    n, d = u.shape
    k = mixture.components
    whitening = mixture.whitening()
    log_det = -2.0 * np.log(np.abs(np.diagonal(whitening, axis1=1, axis2=2))).sum(axis=1)
    # All components in one product: (n, d) @ (d, k*d).
    stacked = np.concatenate(list(whitening), axis=1)
    offsets = np.einsum("kd,kde->ke", mixture.means, whitening).reshape(-1)
    z = u @ stacked - offsets
    squared = np.einsum("nkd,nkd->nk", z.reshape(n, k, d), z.reshape(n, k, d))
    log_p = np.log(mixture.weights) - 0.5 * (squared + log_det + d * math.log(2 * math.pi))
    top = log_p.max(axis=1, keepdims=True)
    total = top[:, 0] + np.log(np.exp(log_p - top).sum(axis=1))
    return np.exp(log_p - total[:, None]), float(total.mean())


def _kmeans(u: FloatArray, components: int, rng: np.random.Generator) -> npt.NDArray[np.intp]:
    """k-means++ seeding then a few Lloyd steps: the labels EM starts from."""
    n = u.shape[0]
    centres = [u[rng.integers(n)]]
    nearest = ((u - centres[0]) ** 2).sum(axis=1)
    for _ in range(1, components):
        total = float(nearest.sum())
        pick = int(rng.choice(n, p=nearest / total)) if total > 0 else int(rng.integers(n))
        centres.append(u[pick])
        nearest = np.minimum(nearest, ((u - u[pick]) ** 2).sum(axis=1))
    c = np.array(centres)
    labels = np.zeros(n, dtype=np.intp)
    for _ in range(_LLOYD_ITERATIONS):
        distances = (u * u).sum(axis=1)[:, None] - 2.0 * u @ c.T + (c * c).sum(axis=1)[None, :]
        labels = distances.argmin(axis=1)
        for k in range(components):
            members = u[labels == k]
            if members.shape[0]:
                c[k] = members.mean(axis=0)
    return labels
