r"""Means with 95% confidence intervals, and paired comparisons over the same test seeds.

For :math:`n` runs with mean :math:`\bar x` and sample standard deviation :math:`s`, the
interval is :math:`\bar x \pm t_{0.975,\,n-1}\, s / \sqrt{n}` (Student's t).
"""

from __future__ import annotations

import math
from typing import Sequence

__all__ = ["mean_ci", "paired_difference", "verdict", "t_critical"]

# two-sided 95% critical values of Student's t, degrees of freedom 1..30
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
         2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
         2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t_critical(dof: int) -> float:
    """Two-sided 95% critical value of Student's t with ``dof`` degrees of freedom."""
    if dof < 1:
        return math.inf
    return _T975[dof - 1] if dof <= len(_T975) else 1.960


def mean_ci(values: Sequence[float]) -> tuple[float, float]:
    """``(mean, half-width of the 95% CI)``; ``(inf, nan)`` if any run diverged."""
    values = list(values)
    if not values or not all(math.isfinite(v) for v in values):
        return math.inf, math.nan
    n = len(values)
    mean = sum(values) / n
    if n == 1:
        return mean, math.nan
    variance = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, t_critical(n - 1) * math.sqrt(variance / n)


def paired_difference(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Mean and 95% CI of ``a[i] - b[i]`` (the same seed i, i.e. the same task, for both).

    A diverged run is worse than any finite one: the difference is ``+inf`` if only ``a``
    diverged somewhere, ``-inf`` if only ``b`` did, ``nan`` if both did.
    """
    a_ok, b_ok = all(map(math.isfinite, a)), all(map(math.isfinite, b))
    if not a_ok or not b_ok:
        return (math.nan if not (a_ok or b_ok) else (math.inf if not a_ok else -math.inf),
                math.nan)
    return mean_ci([x - y for x, y in zip(a, b)])


def verdict(difference: tuple[float, float]) -> str:
    """``"wins"`` when the whole CI of (learned - baseline) is below 0, ``"loses"`` when it is
    above, else ``"tie"``; ``"both diverge"`` when neither is finite."""
    mean, half = difference
    if math.isnan(mean):
        return "both diverge"
    if math.isinf(mean):
        return "wins" if mean < 0 else "loses"
    if math.isnan(half):
        return "wins" if mean < 0 else "loses" if mean > 0 else "tie"
    if mean + half < 0:
        return "wins"
    if mean - half > 0:
        return "loses"
    return "tie"
