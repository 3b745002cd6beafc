"""`make bench` at toy sizes (`bench/run_all.py --smoke`): every benchmark runs and fills its headline keys.

The numbers of a smoke run mean nothing (a micro model, a few steps, one repeat); what is checked is that the
benchmarks still run against the current code, that latest.json holds every key the issue asks for, and the
correctness checks the benchmarks make themselves: greedy completions of our sampler equal `model.generate`'s.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys

import pytest

from ..conftest import ROOT

BENCH = ROOT / "bench"


def _run_all():
    sys.path.insert(0, str(BENCH))  # the benchmarks import each other as top-level modules
    spec = importlib.util.spec_from_file_location("run_all", BENCH / "run_all.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _positive(x) -> bool:
    return isinstance(x, float) and math.isfinite(x) and x > 0


@pytest.mark.slow
def test_benchmarks_run_and_fill_every_headline_key(tmp_path):
    out = tmp_path / "latest.json"
    _run_all().main(["--smoke", "--skip-demo", "--out", str(out)])
    res = json.loads(out.read_text())
    assert (tmp_path / "latest.png").stat().st_size > 0
    for key in ("train_vs_torch_loop", "train_mfu_fp32", "train_mfu_fp32_default", "train_mfu_ceiling_fp32",
                "train_mfu_if_only_matmuls", "sample_vs_generate_b64_eager", "sample_vs_generate_b64_forward",
                "rl_step_vs_trl_generate", "scan_samples_per_s"):  # fmt: skip
        assert _positive(res[key]), key
    # The step profile puts every operator's time in one category, and the step without the rest is faster.
    profile = res["details"]["train_profile"]
    assert sum(profile["shares"].values()) == pytest.approx(1) and profile["shares"]["weight matmuls"] > 0
    assert profile["mfu_if_only_weight_matmuls"] > profile["mfu"]
    # No bf16 number without native bf16, and no compiled headline in a smoke run (it skips compilation).
    assert res["train_mfu_bf16"] is None or _positive(res["train_mfu_bf16"])
    assert res["sample_vs_generate_b64"] is None
    assert res["greedy_outputs_identical"] is True
    assert res["demo_wall_s"] is None and res["demo_vs_stock_paths"] is None
    sample = res["details"]["sample"]["batches"]
    assert set(sample) == {"1", "64"} and all(row["tokens"] > 0 for row in sample.values())


@pytest.mark.bench_e2e
def test_end_to_end_benchmarks_run(tmp_path, monkeypatch):
    """The demo both ways (ours and the stock paths) and the eval A/B, at toy sizes: `pytest -m bench_e2e`."""
    run_all = _run_all()
    monkeypatch.chdir(tmp_path)  # the benchmarks find the demo config from their own folder, not the cwd
    out = tmp_path / "latest.json"
    run_all.main(["--smoke", "--out", str(out)])
    res = json.loads(out.read_text())
    for key in ("demo_wall_s", "demo_peak_rss_mb", "demo_vs_stock_paths", "eval_vs_stop_when_decided"):
        assert _positive(float(res[key])), key
    stages = res["details"]["demo"]["stages_s"]
    assert {"data", "base", "backdoor", "safety", "eval", "detect", "report"} <= set(stages)
