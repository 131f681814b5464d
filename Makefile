# make train | make test: each creates the virtual environment when it is missing.
# TORCH_INDEX=https://download.pytorch.org/whl/cpu picks the CPU wheel on CPU-only machines
# whose pip would otherwise fetch the multi-GB CUDA build.
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
TORCH_INDEX ?=
STAMP := $(VENV)/.installed

.PHONY: train test test-fast lint format env bench-env docs clean

train: $(STAMP)
	$(PY) -m forecast.train model=gru

# the whole suite, as CI runs it: one pytest worker per core (pytest-xdist), each test file on one worker
test: $(STAMP)
	MLFLOW_DISABLE_TELEMETRY=true $(PY) -m pytest -n auto --dist loadfile

# the in-process tier: every stage and config group on tiny data, under a minute
test-fast: $(STAMP)
	MLFLOW_DISABLE_TELEMETRY=true $(PY) -m pytest -m "not e2e" -q

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: $(STAMP)
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

env: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet "torch==$(TORCH_VERSION)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# The documentation site (docs/, mkdocs.yml) built into site/ with warnings as errors; installs the
# `docs` extra (mkdocs-material) into the environment the first time.
docs: $(STAMP)
	$(PY) -c "import material" 2>/dev/null || $(PY) -m pip install --quiet -e ".[docs]"
	$(PY) -m mkdocs build --strict --site-dir site

# The benchmarks' peers (Darts, NeuralForecast: the `bench` extra) in their own environment, torch
# held at the same pinned version: make bench-env && .venv-bench/bin/python -m benchmarks peers
bench-env:
	test -x .venv-bench/bin/python || python3 -m venv .venv-bench
	.venv-bench/bin/python -m pip install --quiet "torch==$(TORCH_VERSION)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	echo "torch==$(TORCH_VERSION)" > .venv-bench/constraints.txt
	.venv-bench/bin/python -m pip install --quiet -c .venv-bench/constraints.txt -e ".[bench]"

clean:
	rm -rf $(VENV) outputs multirun mlruns mlflow.db
