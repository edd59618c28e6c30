"""SERVE: the test statistics the detectors share.

Shapiro-Wilk W (PRADA's normality test), chi-square quantiles (how a distance threshold scales
with the number of features a row carries), and the binomial tail bound of the cumulative test
(how unlikely a stream's count of atypical rows is under a tolerated rate).
"""

from __future__ import annotations

import math
import statistics
from functools import lru_cache

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


def shapiro_w(values: FloatArray) -> float:
    """The Shapiro-Wilk W statistic of `values` (3 to 5000 of them).

    `shapiro_w_royston`: the statistic scipy.stats.shapiro computes (to 1e-6, checked against
    scipy in the tests), in a sort and a dot product with coefficients cached per sample size.
    scipy's call costs more than ten times as much (its argument-policy wrapper inspects the
    function's signature on every call), and the observer runs it every few queries of every
    key. Values that are all equal (a point mass, the most non-normal sample there is, and what
    scipy refuses) give 0.0.
    """
    return shapiro_w_royston(values)


def shapiro_w_royston(values: FloatArray) -> float:
    """Shapiro-Wilk W with Royston's (1992, 1995: AS R94) approximate coefficients, numpy only.

    The statistic scipy.stats.shapiro computes (to ~1e-7); 0.0 for values that are all equal.
    """
    x = np.sort(np.asarray(values, dtype=np.float64))
    if x.size < 3:
        raise ValueError(f"Shapiro-Wilk needs at least 3 values, got {x.size}")
    if _is_point_mass(x):
        return 0.0
    a = _royston_coefficients(x.size)
    centred = x - x.mean()
    return min(float(a @ x) ** 2 / float(centred @ centred), 1.0)


def _is_point_mass(values: FloatArray) -> bool:
    return float(np.ptp(values)) <= 1e-12 * max(1.0, float(np.abs(values).max()))


@lru_cache(maxsize=128)
def _royston_coefficients(n: int) -> FloatArray:
    if n == 3:
        a = np.array([-math.sqrt(0.5), 0.0, math.sqrt(0.5)])
        a.flags.writeable = False
        return a
    normal = statistics.NormalDist()
    m = np.array([normal.inv_cdf((i - 0.375) / (n + 0.25)) for i in range(1, n + 1)])
    mm = float(m @ m)
    u = 1.0 / math.sqrt(n)
    c = m / math.sqrt(mm)
    a_n = c[-1] + 0.221157 * u - 0.147981 * u**2 - 2.071190 * u**3 + 4.434685 * u**4 - 2.706056 * u**5
    a = m.copy()
    if n > 5:
        a_n1 = c[-2] + 0.042981 * u - 0.293762 * u**2 - 1.752461 * u**3 + 5.682633 * u**4 - 3.582633 * u**5
        phi = (mm - 2 * m[-1] ** 2 - 2 * m[-2] ** 2) / (1 - 2 * a_n**2 - 2 * a_n1**2)
        a = m / math.sqrt(phi)
        a[-1], a[-2], a[0], a[1] = a_n, a_n1, -a_n, -a_n1
    else:
        phi = (mm - 2 * m[-1] ** 2) / (1 - 2 * a_n**2)
        a = m / math.sqrt(phi)
        a[-1], a[0] = a_n, -a_n
    a.flags.writeable = False
    return a


def chi_square_quantile(p: float, k: int) -> float:
    """The chi-square quantile at level `p` with `k` degrees of freedom (Wilson-Hilferty).

    Within 1 % of the exact value for p <= 0.995 in the upper tail and 4 % at p = 0.9995; in the
    far lower tail with few degrees of freedom (k <= 5, p <= 0.005, where the exact value is
    below 0.5) it is clamped at 0. The detectors use ratios of these, with the same formula
    everywhere (no scipy), so a profile judges rows the same on every installation.
    """
    if k < 1 or not 0.0 < p < 1.0:
        raise ValueError(f"chi-square quantile needs k >= 1 and 0 < p < 1, got k={k}, p={p}")
    z = statistics.NormalDist().inv_cdf(p)
    c = 2.0 / (9.0 * k)
    base = 1.0 - c + z * math.sqrt(c)
    return k * max(base, 0.0) ** 3


def binomial_tail_bound(count: int, n: int, rate: float) -> float:
    """An upper bound on -ln P(X >= count) for X ~ Binomial(n, rate): n * KL(count/n || rate).

    Chernoff's bound, so `exp(-result)` is at least the true tail probability: a test that alarms
    when the bound's probability is below p alarms less often than the exact test would, never
    more. 0.0 when count/n <= rate (no evidence of a rate above `rate`).
    """
    if n <= 0 or count <= n * rate:
        return 0.0
    share = count / n
    if share >= 1.0:
        return n * -math.log(rate)
    return n * (share * math.log(share / rate) + (1.0 - share) * math.log((1.0 - share) / (1.0 - rate)))
