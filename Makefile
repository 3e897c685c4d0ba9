# Developer shortcuts; the README's commands need nothing but Python.
PY ?= .venv/bin/python

.PHONY: setup run test check lint docs bench mutation

setup:            ## venv with the tested, pinned set
	python3 -m venv .venv && .venv/bin/pip install -c constraints.txt -e ".[test]"

run:              ## the default experiment (penguins, magnitude pruning to 30%)
	$(PY) -m prune_lab

lint:
	$(PY) -m ruff check .

test: lint        ## the fast default suite (< 10 min)
	$(PY) -m pytest

check: lint docs  ## everything CI runs (.ci/run): slow tests and the real SLURM cluster included
	$(PY) -m pytest -m "slow or not slow"

docs:             ## the docs site (mkdocs.yml, docs/), built strict into site/; live preview: .venv/bin/mkdocs serve
	$(PY) -m mkdocs build --strict

bench:            ## speed and memory ratios, written to benchmarks/results/
	$(PY) -m benchmarks

# Mutation testing of the modules that carry the guarantees ([tool.mutmut] in pyproject.toml lists them and
# the fast tests it runs). Not part of CI: about 40 minutes on 2 shared cores (docs/contributing.md). mutmut comes
# with the test extra; on an older venv: .venv/bin/pip install -c constraints.txt mutmut
MUTMUT ?= $(dir $(PY))mutmut
mutation:         ## mutation score per module (docs/contributing.md, "Mutation testing"); fails under 90%
	rm -rf mutants
	OMP_NUM_THREADS=1 nice -n 19 $(MUTMUT) run --max-children 2
	$(MUTMUT) results --all true | $(PY) tests/mutation_score.py --min 90
