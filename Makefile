# Developer shortcuts; the README's commands need nothing but Python.
PY ?= .venv/bin/python

.PHONY: setup run test check lint bench

setup:            ## venv with the tested, pinned set
	python3 -m venv .venv && .venv/bin/pip install -c constraints.txt -e ".[test]"

run:              ## the default experiment (penguins, magnitude pruning to 30%)
	$(PY) -m prune_lab

lint:
	$(PY) -m ruff check .

test: lint        ## the fast default suite (< 10 min)
	$(PY) -m pytest

check: lint       ## everything CI runs (.ci/run): slow tests and the real SLURM cluster included
	$(PY) -m pytest -m "slow or not slow"

bench:            ## speed and memory ratios, written to benchmarks/results/
	$(PY) -m benchmarks
