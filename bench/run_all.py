"""`make bench`: every benchmark in one run, and bench/results/latest.json with the headline numbers.

Each benchmark prints its own ratio against a baseline it measured in the same run; this collects the
headline keys (train_vs_torch_loop, train_mfu_bf16, train_mfu_if_only_matmuls, sample_vs_generate_b64, greedy_outputs_identical,
rl_step_vs_trl_generate, scan_samples_per_s, demo_wall_s, demo_vs_stock_paths, eval_vs_stop_when_decided) plus
every benchmark's full output and the machine it ran on, and draws them to latest.png (plot_results.py).

Run as: .venv/bin/python bench/run_all.py [--skip-demo] [--smoke] [--out FILE]

`--smoke` runs every benchmark at toy sizes (the micro preset, a few steps, one repeat, no compilation): it checks
that the benchmarks run and fill every headline key (tests/e2e/test_bench.py), in a minute or two; its numbers
mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_demo  # noqa: E402
import bench_eval  # noqa: E402
import bench_rl  # noqa: E402
import bench_scan  # noqa: E402
import bench_sample  # noqa: E402
import bench_train  # noqa: E402
import plot_results  # noqa: E402
import profile_train  # noqa: E402


def machine() -> dict:
    import torch

    cpu = ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))  # fmt: skip
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu or platform.processor(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(),
            "load_avg_at_start": os.getloadavg()}  # fmt: skip


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-demo", action="store_true",
                    help="leave out the end-to-end runs: the demo (7-21 minutes measured, by host) and the quarter "
                         "demo ours vs the stock paths (~11 minutes on the AVX2 host)")  # fmt: skip
    ap.add_argument("--smoke", action="store_true",
                    help="every benchmark at toy sizes, to check they run (numbers meaningless; use with --out)")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "latest.json")
    args = ap.parse_args(argv)
    # What each benchmark is given: its defaults, or toy sizes for --smoke.
    headline_preset = "micro" if args.smoke else "small"
    train_args = ["--presets", "micro", "--steps", "3", "--warmup", "1", "--repeats", "1", "--batch", "8",
                  "--no-compile"] if args.smoke else ["--presets", "tiny,small"]
    toy_model = ["--preset", "micro", "--train-steps", "20", "--max-new-tokens", "8"]
    sample_args = [*toy_model, "--prompts", "6", "--also-prompts", "0", "--batches", "1,64", "--repeats", "1",
                   "--no-compile"] if args.smoke else []  # fmt: skip
    rl_args = [*toy_model, "--steps", "2", "--repeats", "1"] if args.smoke else []
    scan_sizes = (10, 2) if args.smoke else (400, 40)
    demo_args = bench_demo.SMOKE_DEMO if args.smoke else []
    out = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine(), "details": {}}
    t0 = time.perf_counter()

    print("== training throughput", flush=True)
    train = bench_train.main(train_args)
    out["details"]["train"] = train
    small = train["presets"][headline_preset]
    out["train_vs_torch_loop"] = small["fp32"]["ratio"]  # the default training path (fp32, packed), 5M params
    # Without native bf16 the bf16 configurations are skipped (see bench_train): no bf16 MFU to report.
    out["train_mfu_bf16"] = max((small[k]["mfu"] for k in ("bf16", "bf16_compile") if k in small), default=None)
    out["train_mfu_fp32"] = max(small[k]["mfu"] for k in ("fp32", "fp32_compile") if k in small)  # the better of eager/compiled
    out["train_mfu_fp32_default"] = small["fp32"]["mfu"]  # the default path (fp32, packed, eager)
    # The MFU the step's matmuls alone reach at the 5M preset's shapes: no training path can exceed it.
    for precision, flops in small["gemm_ceiling_flops"].items():
        out[f"train_mfu_ceiling_{precision}"] = flops / train["peak_flops"][precision]

    print("== where a training step's time goes", flush=True)
    # The headline bf16 configuration (compiled) where the CPU has native bf16, else the default path.
    profile_args = ["--preset", "micro", "--precision", "fp32", "--warmup", "1", "--steps", "2", "--batch", "8"]
    if not args.smoke:
        profile_args = ["--preset", "small", *(["--precision", "bf16", "--compile"] if train["bf16_native"]
                                               else ["--precision", "fp32"])]  # fmt: skip
    profile = profile_train.main(profile_args)
    out["details"]["train_profile"] = profile
    # The MFU the profiled step would reach if everything but its weight matmuls took no time.
    out["train_mfu_if_only_matmuls"] = profile["mfu_if_only_weight_matmuls"]

    print("== sampling throughput", flush=True)
    samp = bench_sample.main(sample_args)
    out["details"]["sample"] = samp
    out["sample_vs_generate_b64"] = samp["sample_vs_generate_b64"]  # compiled decode step, warm; median of repeats
    out["sample_vs_generate_b64_eager"] = samp["sample_vs_generate_b64_eager"]
    out["sample_vs_generate_b64_forward"] = samp["sample_vs_generate_b64_forward"]  # eager without the lean step
    out["greedy_outputs_identical"] = samp["greedy_outputs_identical"]

    print("== RL step: our sampler's rollouts vs TRL's generate", flush=True)
    rl = bench_rl.main(rl_args)
    out["details"]["rl"] = rl
    out["rl_step_vs_trl_generate"] = rl["rl_step_vs_trl_generate"]  # GRPO step time ratio, 48 new tokens

    print("== scanner throughput", flush=True)
    scan = bench_scan.run(*scan_sizes)
    out["details"]["scan"] = scan
    out["scan_samples_per_s"] = scan["scan_samples_per_s"]
    print(f"scanner: {scan['scan_samples_per_s']:.0f} samples/s in-process vs {scan['bandit_cli_samples_per_s']:.1f}/s "
          f"with the bandit CLI per sample ({scan['ratio']:.0f}x)", flush=True)  # fmt: skip

    if not args.skip_demo:
        print("== demo end to end", flush=True)
        demo = bench_demo.main(demo_args)
        out["details"]["demo"] = demo
        out["demo_wall_s"] = demo["demo_wall_s"]
        out["demo_peak_rss_mb"] = demo["demo_peak_rss_mb"]
        print("== demo at a quarter of its training steps: ours vs the stock paths", flush=True)
        versus = bench_demo.main(["--against-stock", *(demo_args or bench_demo.QUARTER_DEMO)])
        out["details"]["demo_vs_stock"] = versus
        out["demo_vs_stock_paths"] = versus["demo_vs_stock_paths"]  # stock run's wall time over ours
        print("== eval stage as configured vs eval.stop_when_decided (a quarter demo's models)", flush=True)
        decided = bench_eval.main(["--smoke"] if args.smoke else [])
        out["details"]["eval_stop_when_decided"] = decided
        out["eval_vs_stop_when_decided"] = decided["eval_vs_stop_when_decided"]
    else:
        out["demo_wall_s"] = out["demo_vs_stock_paths"] = out["eval_vs_stop_when_decided"] = None
    out["bench_wall_s"] = round(time.perf_counter() - t0, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(out, indent=2, default=str))
    tmp.replace(args.out)
    plot_results.plot(out, args.out.with_suffix(".png"))
    print(json.dumps({k: v for k, v in out.items() if k not in ("details",)}, indent=2, default=str))
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
